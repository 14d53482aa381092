//! Trust-anchor boot: nothing runs unless it is exactly what a trusted key
//! signed.
//!
//! (Being built; see issue 3.) The hand-off type to the runtime is
//! [`VerifiedComponent`].

mod verified;

pub use verified::{Digest, Provenance, VerifiedComponent};

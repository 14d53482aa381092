//! What the ForgeOne fuzz targets share: fixed test keys and a fixed trust
//! anchor (so that seeds signed once stay valid in every run), a fixed
//! clock, the audit-log builder that lets inputs carry valid hash chains,
//! the wrapper that turns a `wasm-smith` core module into a command
//! component, and the seed writer.
//!
//! Every target drives the public API of `forgeone` exactly as the host
//! does on untrusted input; a panic anywhere is a bug.

pub mod audit;
pub mod fixtures;
pub mod seeds;
pub mod wasm;

/// With `FORGEONE_FUZZ_DEBUG` set, prints what a target made of an input
/// (run a target binary on seed files to see which paths they reach).
pub fn debug(what: impl FnOnce() -> String) {
    static ON: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var_os("FORGEONE_FUZZ_DEBUG").is_some());
    if *ON {
        eprintln!("forgeone-fuzz: {}", what());
    }
}

//! Observers: code that sees every record as the writer puts it on the
//! chain, in sequence order, for projections of the log such as metrics
//! (`crate::telemetry`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::event::{Actor, Subjects};

/// Sees every record the writer puts on the chain, events and checkpoints
/// alike, in sequence order, once each. Register one with
/// [`AuditConfig::observer`](super::AuditConfig::observer).
///
/// It is called on the log's writer thread, between serialising a record
/// and writing its batch, so it must be quick and must not append to the
/// same log (that would wait for the writer it runs on). A record seen here
/// is on the chain: it is written, or the log fails closed and retries it.
pub trait AuditObserver: Send + Sync + 'static {
    /// Called once per record.
    fn observe(&self, record: &Observed<'_>);
}

/// One record, as an [`AuditObserver`] sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Observed<'a> {
    /// Its sequence number.
    pub seq: u64,
    /// When it was appended.
    pub ts: chrono::DateTime<chrono::Utc>,
    /// Its kind (`container.started`, `audit.checkpoint`, ...).
    pub kind: &'a str,
    /// Who acted, when known.
    pub actor: Option<&'a Actor>,
    /// What it is about.
    pub subjects: &'a Subjects,
    /// Its details, as the exact JSON object written to the log.
    pub details: &'a str,
    /// The length of its line in the log, newline included.
    pub line_bytes: u64,
    /// How long it waited between `append` and the writer serialising it.
    pub queued_for: Duration,
}

/// The observers of one log, shared by its configuration and its writer.
#[derive(Clone, Default)]
pub(crate) struct Observers(pub(crate) Vec<Arc<dyn AuditObserver>>);

impl fmt::Debug for Observers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Observers({})", self.0.len())
    }
}

impl Observers {
    /// True when nobody observes the log (the writer then skips the work of
    /// building an [`Observed`]).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Shows `record` to every observer.
    pub(crate) fn observe(&self, record: &Observed<'_>) {
        for observer in &self.0 {
            observer.observe(record);
        }
    }
}

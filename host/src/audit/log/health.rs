//! The log's health, as the kernel watches it.

/// Whether the log can be written, as published by
/// [`AuditLog::health`](super::AuditLog::health).
///
/// The writer thread sets it: [`AuditHealth::Failing`] as soon as a write,
/// an fsync or the head file fails (from then on appends are refused with
/// [`AuditError::Unavailable`](crate::audit::AuditError::Unavailable)),
/// [`AuditHealth::Writable`] again once a retry succeeds (the outage is
/// then on the record as `audit.resumed`), and [`AuditHealth::Closed`]
/// after a clean close. A log that fails while closing stays `Failing`.
///
/// The kernel watches it to stop (or pause) running containers while the
/// log cannot be written, with [`FailMode::Closed`](super::FailMode::Closed);
/// with [`FailMode::Open`](super::FailMode::Open) it only reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditHealth {
    /// Records are being written (the state of a newly opened log).
    Writable,
    /// The log cannot be written; appends are refused until it recovers.
    Failing {
        /// The write, fsync or head-file error, as
        /// [`AuditError::Unavailable`](crate::audit::AuditError::Unavailable)
        /// states it.
        cause: String,
    },
    /// The log was closed cleanly; nothing more is written.
    Closed,
}

impl AuditHealth {
    /// True for [`AuditHealth::Failing`].
    pub fn is_failing(&self) -> bool {
        matches!(self, AuditHealth::Failing { .. })
    }
}

impl std::fmt::Display for AuditHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditHealth::Writable => f.write_str("writable"),
            AuditHealth::Failing { cause } => write!(f, "failing: {cause}"),
            AuditHealth::Closed => f.write_str("closed"),
        }
    }
}

//! Stand-in for the audit log's async API until it lands on main
//! (`AuditLog::append_async`, `flush_async`, `health`, `fail_mode`,
//! `AuditHealth`); removed by the merge.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::{AuditError, AuditLog, Entry, FailMode};

/// Whether the log can be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuditHealth {
    Writable,
    Failing { cause: String },
    Closed,
}

impl AuditHealth {
    pub(crate) fn is_failing(&self) -> bool {
        matches!(self, AuditHealth::Failing { .. })
    }
}

pub(crate) trait AppendAsync {
    fn append_async(
        &self,
        entry: Entry,
    ) -> impl std::future::Future<Output = Result<u64, AuditError>> + Send;
    fn flush_async(&self) -> impl std::future::Future<Output = Result<(), AuditError>> + Send;
    fn health(&self) -> watch::Receiver<AuditHealth>;
    fn fail_mode(&self) -> FailMode;
}

static WATCHED: LazyLock<Mutex<HashMap<PathBuf, watch::Sender<AuditHealth>>>> =
    LazyLock::new(Mutex::default);

fn current(log: &AuditLog) -> AuditHealth {
    match log.ensure_writable() {
        Ok(()) => AuditHealth::Writable,
        Err(AuditError::Closed) => AuditHealth::Closed,
        Err(e) => AuditHealth::Failing {
            cause: e.to_string(),
        },
    }
}

impl AppendAsync for AuditLog {
    async fn append_async(&self, entry: Entry) -> Result<u64, AuditError> {
        self.append(entry)
    }

    async fn flush_async(&self) -> Result<(), AuditError> {
        self.flush()
    }

    fn health(&self) -> watch::Receiver<AuditHealth> {
        let mut watched = WATCHED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = watched.get(self.path()) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(current(self));
        watched.insert(self.path().to_owned(), tx.clone());
        let log = self.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(2));
                {
                    let mut watched = WATCHED.lock().unwrap_or_else(|p| p.into_inner());
                    if tx.receiver_count() == 0 {
                        watched.remove(log.path());
                        return;
                    }
                }
                let now = current(&log);
                let closed = now == AuditHealth::Closed;
                tx.send_if_modified(|h| {
                    let changed = *h != now;
                    *h = now;
                    changed
                });
                if closed {
                    WATCHED
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(log.path());
                    return;
                }
            }
        });
        rx
    }

    fn fail_mode(&self) -> FailMode {
        FailMode::Closed
    }
}

//! Stand-in for the audit log's async API until it lands on main
//! (`AuditLog::append_async`, `flush_async`); removed by the merge.

use crate::audit::{AuditError, AuditLog, Entry};

pub(crate) trait AppendAsync {
    fn append_async(
        &self,
        entry: Entry,
    ) -> impl std::future::Future<Output = Result<u64, AuditError>> + Send;
    fn flush_async(&self) -> impl std::future::Future<Output = Result<(), AuditError>> + Send;
}

impl AppendAsync for AuditLog {
    async fn append_async(&self, entry: Entry) -> Result<u64, AuditError> {
        self.append(entry)
    }
    async fn flush_async(&self) -> Result<(), AuditError> {
        self.flush()
    }
}

//! The storage seam: where the writer thread puts its bytes.

use std::fs::File;
use std::io::{Seek as _, SeekFrom};

/// Where the flusher writes. The file is the normal storage; embedders and
/// tests may wrap it (for example to simulate a full disk).
pub trait AuditStorage: Send + 'static {
    /// Appends `bytes` at the end.
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> std::io::Result<()>;
    /// Cuts the storage back to `len` bytes (after a failed write).
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl AuditStorage for File {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(self, bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len)).map(|_| ())
    }
}

//! Resource limits: what a container run (or plugin call) may use
//! ([`Limits`]), and the per-container [`ResourceLimiter`] that enforces the
//! memory, table and instance limits, tracks peak memory, and records every
//! refusal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use wasmtime::ResourceLimiter;

use super::control::Control;

/// Resource limits of one container run (or one plugin call).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Limits {
    /// Fuel budget (about one unit per wasm instruction); `None` for no
    /// budget. Default: 10,000,000,000.
    pub fuel: Option<u64>,
    /// Linear memory, all memories together, in bytes. Default: 64 MiB.
    pub max_memory: u64,
    /// Elements per table. Default: 100,000.
    pub max_table_elements: u64,
    /// Core and component instances per store. Default: 100.
    pub max_instances: usize,
    /// Wall-clock deadline (time paused does not count); `None` for none.
    /// Default: 60 s.
    #[serde(with = "opt_duration_ms")]
    pub timeout: Option<Duration>,
    /// Output kept per run (stdout and stderr together), in bytes; past it
    /// output is dropped and a marker line is emitted. Default: 1 MiB.
    pub max_output: u64,
    /// Longest output line; longer lines are split. Default: 4096 bytes.
    pub max_line: usize,
    /// Structured log lines per run; past it lines are dropped (audited
    /// once). Default: 10,000.
    pub max_log_lines: u32,
    /// Audit bytes per run for guest-supplied text: output chunks and log
    /// lines, each charged its escaped text and 512 bytes. Past it, output
    /// and log lines are counted, not written, and one
    /// `container.output_dropped` record at the end of the run says how
    /// much. Output still reaches the caller. Default: 1 MiB.
    pub max_audit_bytes: u64,
    /// Host handles the guest may hold open at once: files and
    /// directories, streams, directory listings, pollables, sockets. A
    /// filesystem call that would open one more returns
    /// `error-code::quota` to the guest (a run that then fails is reported
    /// as [`Failure::OpenFilesLimit`](super::Failure::OpenFilesLimit)).
    /// Default: 1,024.
    pub max_open_files: usize,
}

/// One setter per limit, each `&mut self -> &mut Self` like every ForgeOne
/// config, so they chain on a temporary:
/// `Limits::new().fuel(Some(100_000_000)).max_memory(32 << 20)`, which
/// any method taking `impl Into<Limits>` accepts as it is.
impl Limits {
    /// The defaults (see each field).
    pub fn new() -> Limits {
        Limits::default()
    }

    /// Sets [`Limits::fuel`].
    pub fn fuel(&mut self, fuel: Option<u64>) -> &mut Self {
        self.fuel = fuel;
        self
    }

    /// Sets [`Limits::max_memory`].
    pub fn max_memory(&mut self, bytes: u64) -> &mut Self {
        self.max_memory = bytes;
        self
    }

    /// Sets [`Limits::max_table_elements`].
    pub fn max_table_elements(&mut self, elements: u64) -> &mut Self {
        self.max_table_elements = elements;
        self
    }

    /// Sets [`Limits::max_instances`].
    pub fn max_instances(&mut self, instances: usize) -> &mut Self {
        self.max_instances = instances;
        self
    }

    /// Sets [`Limits::timeout`].
    pub fn timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`Limits::max_output`].
    pub fn max_output(&mut self, bytes: u64) -> &mut Self {
        self.max_output = bytes;
        self
    }

    /// Sets [`Limits::max_line`].
    pub fn max_line(&mut self, bytes: usize) -> &mut Self {
        self.max_line = bytes;
        self
    }

    /// Sets [`Limits::max_log_lines`].
    pub fn max_log_lines(&mut self, lines: u32) -> &mut Self {
        self.max_log_lines = lines;
        self
    }

    /// Sets [`Limits::max_audit_bytes`].
    pub fn max_audit_bytes(&mut self, bytes: u64) -> &mut Self {
        self.max_audit_bytes = bytes;
        self
    }

    /// Sets [`Limits::max_open_files`].
    pub fn max_open_files(&mut self, handles: usize) -> &mut Self {
        self.max_open_files = handles;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: Some(10_000_000_000),
            max_memory: 64 * 1024 * 1024,
            max_table_elements: 100_000,
            max_instances: 100,
            timeout: Some(Duration::from_secs(60)),
            max_output: 1024 * 1024,
            max_line: 4096,
            max_log_lines: 10_000,
            max_audit_bytes: 1024 * 1024,
            max_open_files: 1024,
        }
    }
}

mod opt_duration_ms {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
}

/// Limits enforced while a container grows its memories and tables.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub(crate) memory_limit: u64,
    pub(crate) table_elements: u64,
    pub(crate) instances: usize,
    pub(crate) tables: usize,
    pub(crate) memories: usize,
    /// Linear memory currently held, all memories together.
    pub(crate) memory_total: u64,
    pub(crate) memory_peak: u64,
    /// The last refused memory growth: total bytes it asked for.
    pub(crate) memory_refused: Option<u64>,
    pub(crate) memory_refusals: u32,
    /// The last refused table growth: elements it asked for.
    pub(crate) table_refused: Option<u64>,
    pub(crate) table_refusals: u32,
    /// Calls refused because the resource table was full (see
    /// `fs_guard`).
    pub(crate) handle_refusals: u32,
    pub(crate) control: Option<Arc<Control>>,
}

impl Limiter {
    pub(crate) fn new(
        memory_limit: u64,
        table_elements: u64,
        instances: usize,
        control: Option<Arc<Control>>,
    ) -> Limiter {
        Limiter {
            memory_limit,
            table_elements,
            instances,
            tables: instances.saturating_mul(2).max(4),
            memories: instances.max(2),
            memory_total: 0,
            memory_peak: 0,
            memory_refused: None,
            memory_refusals: 0,
            table_refused: None,
            table_refusals: 0,
            handle_refusals: 0,
            control,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = (desired as u64).saturating_sub(current as u64);
        let total = self.memory_total.saturating_add(grow);
        if total > self.memory_limit {
            // Refused: `memory.grow` returns -1 inside the guest.
            self.memory_refused = Some(total);
            self.memory_refusals += 1;
            return Ok(false);
        }
        self.memory_total = total;
        if total > self.memory_peak {
            self.memory_peak = total;
            if let Some(control) = &self.control {
                control.peak_memory.store(total, Ordering::Relaxed);
            }
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Allowed by us but refused by the memory's own maximum: the guest
        // sees -1, as with our refusal; nothing was allocated.
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.table_elements {
            self.table_refused = Some(desired as u64);
            self.table_refusals += 1;
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

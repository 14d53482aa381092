//! [`ContainerConfig`]: everything needed to run a container, built with
//! `&mut self` setters that each state their default.

use std::path::PathBuf;
use std::time::Duration;

use crate::boot::VerifiedComponent;

use super::file_io::FileIo;
use super::grants::{DirGrant, Grants, StdinGrant};
use super::limits::Limits;
use super::output::{ByteSink, OutputSink};
use super::supervisor::RestartPolicy;

/// Everything needed to run a container.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ContainerConfig {
    pub(crate) component: VerifiedComponent,
    pub(crate) name: String,
    pub(crate) workload: Option<String>,
    pub(crate) limits: Limits,
    pub(crate) grants: Grants,
    pub(crate) restart: RestartPolicy,
    pub(crate) stop_grace: Duration,
    pub(crate) output: Option<OutputSink>,
    pub(crate) stdout: Option<ByteSink>,
    pub(crate) stderr: Option<ByteSink>,
    pub(crate) keep_last_lines: usize,
    pub(crate) file_io: FileIo,
}

impl ContainerConfig {
    /// A container of `component` with the default [`Limits`], no grants,
    /// restart policy `never`, a 5 s stop grace period, an empty stdin,
    /// and output kept only (the audit log and the evidence).
    pub fn new(component: VerifiedComponent) -> ContainerConfig {
        ContainerConfig {
            name: component.name().to_string(),
            component,
            workload: None,
            limits: Limits::default(),
            grants: Grants::default(),
            restart: RestartPolicy::Never,
            stop_grace: Duration::from_secs(5),
            output: None,
            stdout: None,
            stderr: None,
            keep_last_lines: 20,
            file_io: FileIo::OnThread,
        }
    }

    /// The container's display name. By default, the component's name.
    pub fn name(&mut self, name: impl Into<String>) -> &mut Self {
        self.name = name.into();
        self
    }

    /// The deployment workload this container runs for. By default, none.
    pub fn workload(&mut self, workload: impl Into<String>) -> &mut Self {
        self.workload = Some(workload.into());
        self
    }

    /// Replaces all limits. By default, [`Limits::default`].
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.limits = limits;
        self
    }

    /// The fuel budget per run; `None` for no cap (fuel is still counted
    /// and reported in [`RunStats`](super::RunStats)). By default,
    /// 10,000,000,000.
    pub fn fuel(&mut self, fuel: Option<u64>) -> &mut Self {
        self.limits.fuel = fuel;
        self
    }

    /// Linear memory limit in bytes. By default, 64 MiB.
    pub fn max_memory(&mut self, bytes: u64) -> &mut Self {
        self.limits.max_memory = bytes;
        self
    }

    /// Wall-clock deadline per run; `None` for none. By default, 60 s.
    pub fn timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.limits.timeout = timeout;
        self
    }

    /// Output kept per run (stdout and stderr together), in bytes: the line
    /// view ([`ContainerConfig::output`]), the evidence and the audit log's
    /// copy. The byte sinks ([`ContainerConfig::stdout`]) get everything.
    /// By default, 1 MiB.
    pub fn max_output(&mut self, bytes: u64) -> &mut Self {
        self.limits.max_output = bytes;
        self
    }

    /// Audit bytes per run for the guest's output and log lines (see
    /// [`Limits::max_audit_bytes`]). By default, 1 MiB.
    pub fn max_audit_bytes(&mut self, bytes: u64) -> &mut Self {
        self.limits.max_audit_bytes = bytes;
        self
    }

    /// Host handles (open files and directories, streams, pollables,
    /// sockets) the guest may hold at once; past it a filesystem call
    /// returns `error-code::quota` to the guest. By default, 1,024.
    pub fn max_open_files(&mut self, handles: usize) -> &mut Self {
        self.limits.max_open_files = handles;
        self
    }

    /// Grants a host directory at `guest`, read-only or read-write. By
    /// default, no directory is granted.
    pub fn dir(
        &mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<String>,
        read_only: bool,
    ) -> &mut Self {
        self.grant_dir(DirGrant::new(host, guest, read_only))
    }

    /// Grants a host directory, for instance one parsed from
    /// `HOST::GUEST[:ro|:rw]` by [`DirGrant::parse`]. By default, no
    /// directory is granted.
    pub fn grant_dir(&mut self, grant: DirGrant) -> &mut Self {
        self.grants.dirs.push(grant);
        self
    }

    /// Grants an environment variable. By default, the environment is empty.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.grants.env.push((key.into(), value.into()));
        self
    }

    /// Appends an argument (after the program name, which is the container
    /// name). By default, there are none.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.grants.args.push(arg.into());
        self
    }

    /// What the guest reads as its standard input. By default,
    /// [`StdinGrant::None`]: reads end at once.
    pub fn stdin(&mut self, stdin: StdinGrant) -> &mut Self {
        self.grants.stdin = stdin;
        self
    }

    /// Grants network access (needs the runtime policy to allow it). By
    /// default, no network.
    pub fn network(&mut self, allow: bool) -> &mut Self {
        self.grants.network = allow;
        self
    }

    /// What to do when a run ends. By default, [`RestartPolicy::Never`].
    pub fn restart(&mut self, policy: RestartPolicy) -> &mut Self {
        self.restart = policy;
        self
    }

    /// How long `stop` waits for the guest to finish before dropping it at
    /// its next yield point. By default, 5 s.
    pub fn stop_grace(&mut self, grace: Duration) -> &mut Self {
        self.stop_grace = grace;
        self
    }

    /// Where the guest's filesystem calls run: on the thread that runs the
    /// guest (a call costs its syscalls, as under `wasmtime run`; FIFOs,
    /// devices and sockets still go to the blocking pool), or every call
    /// on tokio's blocking pool (a thread hand-off per call, several times
    /// slower for a file-heavy guest, for grants on filesystems that can
    /// stall). Fuel and the deadline bound the guest either way; the mode
    /// is in the container's `container.created` record (`"file_io"`). By
    /// default, [`FileIo::OnThread`].
    pub fn file_io(&mut self, mode: FileIo) -> &mut Self {
        self.file_io = mode;
        self
    }

    /// Streams every kept output line (stdout and stderr up to
    /// [`ContainerConfig::max_output`], and the guest's structured log
    /// lines) to `sink`. By default, lines go nowhere but the audit log.
    pub fn output(&mut self, sink: OutputSink) -> &mut Self {
        self.output = Some(sink);
        self
    }

    /// Writes every byte of the guest's stdout, exactly as written and
    /// without limit, to `sink`, with back-pressure: a sink that is behind
    /// makes the guest's writes wait (see [`ByteSink`]). The kept copy
    /// ([`ContainerConfig::max_output`]) and the audit log are unchanged.
    /// By default, none.
    pub fn stdout(&mut self, sink: ByteSink) -> &mut Self {
        self.stdout = Some(sink);
        self
    }

    /// As [`ContainerConfig::stdout`], for stderr. By default, none.
    pub fn stderr(&mut self, sink: ByteSink) -> &mut Self {
        self.stderr = Some(sink);
        self
    }

    /// The component.
    pub fn component(&self) -> &VerifiedComponent {
        &self.component
    }

    /// The limits.
    pub fn current_limits(&self) -> &Limits {
        &self.limits
    }

    /// The grants.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// Where the guest's filesystem calls run (see [`ContainerConfig::file_io`]).
    pub fn current_file_io(&self) -> FileIo {
        self.file_io
    }
}

//! Where a container's filesystem calls run ([`FileIo`]), and the check
//! that keeps a call that could block for good off the thread that runs
//! the guest.
//!
//! wasmtime-wasi runs each `wasi:filesystem` call (open, stat, read
//! directory, read, write, sync, ...) and each blocking read or write of a
//! file's stream either on the thread that polls the guest or, when its
//! context does not allow blocking that thread, on tokio's blocking pool,
//! which costs a hand-off to a pool thread and a wake-up of the guest's
//! task per call. Guests run async here, so until now every file call paid
//! that hand-off: a ripgrep over 27,400 files took 5× the wall time and
//! 10× the system time of `wasmtime run`, which blocks its one thread.
//!
//! **On the thread, by default** ([`FileIo::OnThread`], wasmtime-wasi's
//! `allow_blocking_current_thread`). A file call then costs its syscalls
//! and holds the worker that polls the guest for as long: microseconds for
//! cached data, and one call reads or writes at most 64 KiB. The guest is
//! not polled any less fairly for it: a call returns at once instead of
//! parking the task, so the guest runs on to its next fuel yield (every
//! [`EngineConfig::fuel_yield_interval`]), where pause, stop and the
//! executor's priority lanes take effect as before; fuel still counts its
//! instructions and the epoch deadline still ends it inside wasm between
//! two calls. What changes is the time between yields of a guest that does
//! little but file calls: the syscalls of a fuel interval are added to it.
//!
//! The numbers (`cargo bench -p forgeone-benches --bench fileio`: a search
//! of 5,000 files, 73 MiB, warm cache, 2-core VM): `wasmtime run` 104 ms;
//! ForgeOne 132 ms (1.28×) on the thread, 675 ms (6.5×) with every call on
//! the pool. Of the remaining 28 ms, fuel and epoch metering is 15 (bare
//! wasmtime with the same metering: 118 ms), the `fstatat` before each
//! open about 6, and rescheduling the task on tokio's multi-threaded
//! runtime at each of its ~700 fuel yields (each wakes the idle worker)
//! most of the rest.
//!
//! **Never on the thread: what can block for good.** Opening a FIFO blocks
//! until its other end is opened, and reading one (or a terminal, or some
//! devices) until data comes. On the thread such a call would hold a
//! worker for as long, past the container's deadline, which ends a guest
//! only when it is polled. So `open-at` first classifies its path with one
//! `fstatat` relative to the directory it opens from (unless it opens a
//! directory, which fails at once on anything else): a FIFO, a device, a
//! socket, a path that climbs with `..` (not classified, so that nothing
//! is looked up outside the preopen) or one that cannot be classified is
//! opened on the blocking pool, and the file it returns uses the pool for
//! every call after that. Regular files, directories, symbolic links and
//! paths that do not exist yet stay on the thread. The check and the open
//! are two steps, but the guest cannot race them (the open is one host
//! call, and a container runs one thread); another process renaming a FIFO
//! into the directory in between could.
//!
//! **On the blocking pool** ([`FileIo::BlockingPool`]): every call, as
//! before, for a directory on a filesystem whose regular files can stall
//! (a network mount, FUSE): then only a pool thread waits, and the
//! deadline ends the container on time.
//!
//! Streams read with the non-blocking `input-stream.read` (after polling
//! its pollable) always use the pool: wasmtime-wasi starts such reads in
//! the background. Rust's `std::fs` and wasi-libc read with the blocking
//! calls.
//!
//! [`EngineConfig::fuel_yield_interval`]: super::EngineConfig::fuel_yield_interval

use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::{Descriptor, Dir, File, WasiFilesystemView};
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, HostDescriptor, OpenFlags, PathFlags,
};

/// Where a container's filesystem calls run (see the module docs of
/// `forgeone::runtime` and [`ContainerConfig::file_io`]).
///
/// [`ContainerConfig::file_io`]: super::ContainerConfig::file_io
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FileIo {
    /// On the thread that runs the guest, as `wasmtime run` does: a call
    /// costs its syscalls. FIFOs, devices and sockets are still opened,
    /// read and written on tokio's blocking pool, so that a call that
    /// waits for good cannot hold the thread past the deadline.
    #[default]
    OnThread,
    /// Every call on tokio's blocking pool: a thread hand-off per call (a
    /// file-heavy guest runs several times slower), but a call that stalls
    /// holds only a pool thread and the deadline ends the container on
    /// time. For grants on filesystems whose regular files can stall
    /// (network mounts, FUSE).
    BlockingPool,
}

impl FileIo {
    /// `on-thread` or `pool`: the name `forgeone run --file-io` and a
    /// workload's `file_io` key take, and the `file_io` of
    /// `container.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileIo::OnThread => "on-thread",
            FileIo::BlockingPool => "pool",
        }
    }
}

impl std::fmt::Display for FileIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FileIo {
    type Err = FileIoError;

    /// `on-thread` or `pool` (exactly; as [`Display`](std::fmt::Display)
    /// writes them).
    fn from_str(text: &str) -> Result<Self, FileIoError> {
        match text {
            "on-thread" => Ok(FileIo::OnThread),
            "pool" => Ok(FileIo::BlockingPool),
            other => Err(FileIoError {
                text: other.to_string(),
            }),
        }
    }
}

impl serde::Serialize for FileIo {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A file I/O mode that is not `on-thread` or `pool`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown file I/O mode `{text}`: expected on-thread | pool")]
pub struct FileIoError {
    text: String,
}

impl FileIoError {
    /// The refused text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The arguments of `open-at` after the descriptor.
pub(crate) struct OpenArgs {
    pub(crate) path_flags: PathFlags,
    pub(crate) path: String,
    pub(crate) oflags: OpenFlags,
    pub(crate) flags: DescriptorFlags,
}

/// True when opening `path` from the directory `fd` could block for good
/// (see the module docs), so it must not run on the guest's thread.
pub(crate) fn open_may_block<T: WasiFilesystemView>(
    host: &mut T,
    fd: &Resource<Descriptor>,
    args: &OpenArgs,
) -> bool {
    if args.oflags.contains(OpenFlags::DIRECTORY) {
        // Refused before anything is opened when not a directory.
        return false;
    }
    let fs = host.filesystem();
    match fs.table.get(fd) {
        Ok(Descriptor::Dir(dir)) => {
            let follow = args.path_flags.contains(PathFlags::SYMLINK_FOLLOW);
            path_may_block(&dir.dir, &args.path, follow)
        }
        // Not a directory: wasmtime-wasi refuses the open at once.
        _ => false,
    }
}

#[cfg(unix)]
fn path_may_block(dir: &std::fs::File, path: &str, follow: bool) -> bool {
    use rustix::fs::{AtFlags, FileType};
    use rustix::io::Errno;
    if path.starts_with('/') {
        // Refused by wasmtime-wasi before it touches the filesystem.
        return false;
    }
    if path.split('/').any(|part| part == "..") {
        return true;
    }
    let flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    match rustix::fs::statat(dir, path, flags) {
        Ok(stat) => !matches!(
            FileType::from_raw_mode(stat.st_mode),
            FileType::RegularFile | FileType::Directory | FileType::Symlink
        ),
        // Created as a regular file, or refused at once.
        Err(Errno::NOENT) => false,
        Err(_) => true,
    }
}

#[cfg(not(unix))]
fn path_may_block(_dir: &std::fs::File, _path: &str, _follow: bool) -> bool {
    false
}

/// wasmtime-wasi's `open-at` with the directory `fd` made to use the
/// blocking pool for the call; a file it opens keeps using the pool.
pub(crate) async fn open_on_pool<T: WasiFilesystemView>(
    host: &mut T,
    fd: Resource<Descriptor>,
    args: OpenArgs,
) -> FsResult<Resource<Descriptor>> {
    let dir = Resource::<Descriptor>::new_borrow(fd.rep());
    let pooled = {
        let fs = host.filesystem();
        match fs.table.get(&dir)? {
            Descriptor::Dir(d) => Dir::new(d.dir.try_clone()?, d.perms, d.open_mode, false),
            // wasmtime-wasi refuses it.
            Descriptor::File(_) => return open(host, fd, args).await,
        }
    };
    let original = std::mem::replace(
        host.filesystem().table.get_mut(&dir)?,
        Descriptor::Dir(pooled),
    );
    let opened = open(host, fd, args).await;
    *host.filesystem().table.get_mut(&dir)? = original;
    let opened = opened?;
    let fs = host.filesystem();
    let entry = fs.table.get_mut(&opened)?;
    let Descriptor::File(f) = entry else {
        return Ok(opened);
    };
    match f.file.try_clone() {
        Ok(file) => {
            *entry = Descriptor::File(File::new(file, f.perms, f.open_mode, false));
            Ok(opened)
        }
        Err(e) => {
            // The guest never saw this descriptor: it must not stay open.
            fs.table.delete(opened)?;
            Err(e.into())
        }
    }
}

/// wasmtime-wasi's own `open-at`.
pub(crate) async fn open<T: WasiFilesystemView>(
    host: &mut T,
    fd: Resource<Descriptor>,
    args: OpenArgs,
) -> FsResult<Resource<Descriptor>> {
    let mut fs = host.filesystem();
    HostDescriptor::open_at(
        &mut fs,
        fd,
        args.path_flags,
        args.path,
        args.oflags,
        args.flags,
    )
    .await
}

#[cfg(test)]
mod names {
    use super::*;

    #[test]
    fn modes_parse_from_their_names_and_nothing_else() {
        assert_eq!(FileIo::default(), FileIo::OnThread);
        for (mode, text) in [
            (FileIo::OnThread, "on-thread"),
            (FileIo::BlockingPool, "pool"),
        ] {
            assert_eq!(text.parse::<FileIo>(), Ok(mode));
            assert_eq!(mode.to_string(), text);
            assert_eq!(mode.as_str(), text);
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{text}\""));
        }
        for bad in [
            "",
            "On-Thread",
            "on_thread",
            "onthread",
            "thread",
            "blocking-pool",
            "BlockingPool",
            "Pool",
            " pool",
            "pool ",
            "on-thread,pool",
        ] {
            let error = bad.parse::<FileIo>().unwrap_err();
            assert_eq!(error.text(), bad);
            assert_eq!(
                error.to_string(),
                format!("unknown file I/O mode `{bad}`: expected on-thread | pool")
            );
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::future::Future;
    use std::path::Path;
    use std::task::{Context, Poll, Waker};

    use wasmtime::component::ResourceTable;
    use wasmtime_wasi::p2::bindings::filesystem::preopens;
    use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

    use super::*;

    fn fifo(path: &Path) {
        let mode = rustix::fs::Mode::from_raw_mode(0o600);
        rustix::fs::mkfifoat(rustix::fs::CWD, path, mode).unwrap();
    }

    #[test]
    fn what_could_block_is_told_apart_by_its_type() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), "x").unwrap();
        fifo(&root.join("fifo"));
        std::os::unix::fs::symlink("fifo", root.join("to-fifo")).unwrap();
        let handle = std::fs::File::open(root).unwrap();
        let blocks = |path: &str, follow: bool| path_may_block(&handle, path, follow);
        for path in [
            "sub",
            "sub/file",
            "./sub/file",
            "missing",
            "sub/missing",
            "",
        ] {
            assert!(!blocks(path, true), "{path}");
        }
        assert!(blocks("fifo", true));
        assert!(blocks("fifo", false));
        // A link is what it points to when followed; opening the link
        // itself fails at once.
        assert!(blocks("to-fifo", true));
        assert!(!blocks("to-fifo", false));
        // `..` is not looked up; absolute paths are refused by wasmtime-wasi.
        assert!(blocks("../x", true));
        assert!(blocks("sub/../fifo", true));
        assert!(!blocks("/dev/zero", true));
        // A device.
        let slash = std::fs::File::open("/").unwrap();
        assert!(path_may_block(&slash, "dev/zero", true));
    }

    struct State {
        wasi: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }

    fn read_args(path: &str) -> OpenArgs {
        OpenArgs {
            path_flags: PathFlags::SYMLINK_FOLLOW,
            path: path.into(),
            oflags: OpenFlags::empty(),
            flags: DescriptorFlags::READ,
        }
    }

    #[test]
    fn opening_a_fifo_as_a_directory_is_not_sent_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        fifo(&dir.path().join("fifo"));
        let mut wasi = WasiCtx::builder();
        wasi.preopened_dir(dir.path(), "/tmp", FsPerms::ReadOnly)
            .unwrap();
        let mut state = State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
        };
        let (tmp, _) = preopens::Host::get_directories(&mut state.filesystem())
            .unwrap()
            .remove(0);
        let mut args = read_args("fifo");
        assert!(open_may_block(&mut state, &tmp, &args));
        // `O_DIRECTORY` fails on a FIFO before it would wait.
        args.oflags = OpenFlags::DIRECTORY;
        assert!(!open_may_block(&mut state, &tmp, &args));
    }

    /// Polls `future` once: ready without waiting for another thread?
    fn ready_at_once<F: Future>(future: F) -> bool {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(future.as_mut().poll(&mut cx), Poll::Ready(_))
    }

    #[test]
    fn a_device_opened_on_the_pool_is_read_on_the_pool_and_a_regular_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "regular").unwrap();
        let mut wasi = WasiCtx::builder();
        wasi.allow_blocking_current_thread(true)
            .preopened_dir("/dev", "/dev", FsPerms::ReadOnly)
            .unwrap()
            .preopened_dir(dir.path(), "/tmp", FsPerms::ReadOnly)
            .unwrap();
        let mut state = State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
        };
        let mut preopens = preopens::Host::get_directories(&mut state.filesystem()).unwrap();
        let (tmp, _) = preopens.pop().unwrap();
        let (dev, _) = preopens.pop().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let _context = rt.enter();
        let zero = rt
            .block_on(open_on_pool(&mut state, dev, read_args("zero")))
            .unwrap();
        let file = rt
            .block_on(open(&mut state, tmp, read_args("file")))
            .unwrap();

        // The pool's one thread is taken: what needs it waits.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel();
        rt.spawn_blocking(move || {
            started.send(()).unwrap();
            let _ = held.recv();
        });
        running.recv().unwrap();
        let mut read = |fd: &Resource<Descriptor>| {
            let fd = Resource::new_borrow(fd.rep());
            let mut fs = state.filesystem();
            ready_at_once(HostDescriptor::read(&mut fs, fd, 16, 0))
        };
        assert!(read(&file), "a regular file is read on the thread");
        assert!(!read(&zero), "a device is read on the pool");
        drop(release);
    }
}

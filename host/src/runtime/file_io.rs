//! Where a container's filesystem calls run ([`FileIo`]), and the open
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
//! wasmtime with the same metering: 118 ms), an `fstatat` before each
//! open (since replaced by the non-blocking open below, which looks the
//! path up once instead of twice) about 6, and rescheduling the task on
//! tokio's multi-threaded runtime at each of its ~700 fuel yields (each
//! wakes the idle worker) most of the rest.
//!
//! **Never waiting on the thread: what can block for good.** Opening a
//! FIFO blocks until its other end is opened, and reading one (or a
//! terminal, or some devices) until data comes. On the thread such a call
//! would hold a worker for as long, past the container's deadline, which
//! ends a guest only when it is polled. So `open-at` opens as wasmtime-wasi
//! does (the same options and refusals, the same sandboxed `openat2`, via
//! cap-primitives) but with `O_NONBLOCK`, so the open itself never waits,
//! and classifies what it opened by the `fstat` of the new descriptor
//! (which wasmtime-wasi makes too); then it clears `O_NONBLOCK`, so reads
//! and writes block as before, wherever they run:
//!
//! - a regular file or a directory stays on the thread: one `openat2`,
//!   one `fstat` and one `fcntl`;
//! - the read end of a FIFO waits on the blocking pool until a writer has
//!   written or come and gone (a blocking open returns when the writer
//!   opens; the guest, whose next call reads, cannot tell the two apart);
//! - a FIFO's write end with no reader (`ENXIO`) and a file whose lease
//!   must first be broken (`EAGAIN`) are opened again on the blocking pool,
//!   blocking, as wasmtime-wasi opens them there;
//! - anything else opened (a device, a FIFO's write end with its reader, a
//!   FIFO opened for reading and writing) uses the pool for every call
//!   after the open.
//!
//! The type comes from the descriptor itself, so nothing can swap the path
//! between a check and the open. A device is opened on the guest's thread,
//! non-blocking (a serial line does not wait for its carrier); its reads
//! and writes run on the pool.
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

/// `open-at` for [`FileIo::OnThread`]: on the guest's thread, where it
/// cannot wait (see the module docs). A regular file or a directory is
/// then read and written on the thread; anything else on the blocking
/// pool.
pub(crate) async fn open_on_thread<T: WasiFilesystemView>(
    host: &mut T,
    fd: Resource<Descriptor>,
    args: OpenArgs,
) -> FsResult<Resource<Descriptor>> {
    #[cfg(unix)]
    {
        let dir = match host.filesystem().table.get(&fd)? {
            Descriptor::Dir(dir) => dir.clone(),
            // wasmtime-wasi refuses it.
            Descriptor::File(_) => return open(host, fd, args).await,
        };
        let opened = match nonblocking::open(&dir, &args) {
            nonblocking::Opened::Now(opened) => opened?,
            nonblocking::Opened::ReaderOfAFifo(fifo) => {
                nonblocking::wait_for_a_writer(&fifo).await?;
                fifo
            }
            nonblocking::Opened::WouldWait => return open_on_pool(host, fd, args).await,
        };
        Ok(host.filesystem().table.push(opened)?)
    }
    #[cfg(not(unix))]
    open(host, fd, args).await
}

#[cfg(unix)]
mod nonblocking;

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
    use std::os::fd::{AsFd, BorrowedFd};
    use std::path::Path;
    use std::sync::mpsc;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use wasmtime::component::ResourceTable;
    use wasmtime_wasi::p2::bindings::filesystem::preopens;
    use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
    use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

    use super::*;

    fn fifo(path: &Path) {
        let mode = rustix::fs::Mode::from_raw_mode(0o600);
        rustix::fs::mkfifoat(rustix::fs::CWD, path, mode).unwrap();
    }

    /// Opens an end of `fifo` without blocking (`None` when that fails:
    /// a write end with no reader), which releases an open of the other
    /// end that waits for it.
    fn open_end(fifo: &Path, write: bool) -> Option<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(fifo)
            .ok()
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

    /// A context that may block its thread (as `FileIo::OnThread` sets it
    /// up) with `host` preopened read-write at `/dir`, and the preopen.
    fn state(host: &Path) -> (State, Resource<Descriptor>) {
        let mut wasi = WasiCtx::builder();
        wasi.allow_blocking_current_thread(true)
            .preopened_dir(host, "/dir", FsPerms::ReadWrite)
            .unwrap();
        let mut state = State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
        };
        let (dir, _) = preopens::Host::get_directories(&mut state.filesystem())
            .unwrap()
            .remove(0);
        (state, dir)
    }

    fn args(path: &str, oflags: OpenFlags, flags: DescriptorFlags) -> OpenArgs {
        OpenArgs {
            path_flags: PathFlags::SYMLINK_FOLLOW,
            path: path.into(),
            oflags,
            flags,
        }
    }

    fn read_args(path: &str) -> OpenArgs {
        args(path, OpenFlags::empty(), DescriptorFlags::READ)
    }

    fn write_args(path: &str) -> OpenArgs {
        args(path, OpenFlags::empty(), DescriptorFlags::WRITE)
    }

    fn borrow(fd: &Resource<Descriptor>) -> Resource<Descriptor> {
        Resource::new_borrow(fd.rep())
    }

    /// Polls `future` once: its output if it is ready without waiting for
    /// another thread.
    fn ready_at_once<F: Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    /// A current-thread runtime whose blocking pool has one thread, taken
    /// until the returned sender is dropped: whatever needs the pool waits.
    fn runtime_with_the_pool_held() -> (tokio::runtime::Runtime, mpsc::Sender<()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let (release, held) = mpsc::channel::<()>();
        let (started, running) = mpsc::channel();
        rt.spawn_blocking(move || {
            started.send(()).unwrap();
            let _ = held.recv();
        });
        running.recv().unwrap();
        (rt, release)
    }

    /// The error code of a refused open, or `None` if it opened.
    fn code(result: FsResult<Resource<Descriptor>>) -> Option<ErrorCode> {
        result.err().map(|e| e.downcast().unwrap())
    }

    fn os_fd<'a>(state: &'a mut State, fd: &Resource<Descriptor>) -> BorrowedFd<'a> {
        match state.table.get(fd).unwrap() {
            Descriptor::File(f) => f.file.as_fd(),
            Descriptor::Dir(d) => d.dir.as_fd(),
        }
    }

    fn read_at_once(state: &mut State, fd: &Resource<Descriptor>) -> Option<Vec<u8>> {
        let mut fs = state.filesystem();
        ready_at_once(HostDescriptor::read(&mut fs, borrow(fd), 64, 0)).map(|read| read.unwrap().0)
    }

    #[test]
    fn files_and_directories_open_on_the_thread_as_wasmtime_wasi_opens_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), "regular").unwrap();
        std::os::unix::fs::symlink("sub/file", root.join("link")).unwrap();
        std::os::unix::fs::symlink("../..", root.join("sub/up")).unwrap();
        let (rt, release) = runtime_with_the_pool_held();
        let _context = rt.enter();
        let (mut state, tmp) = state(root);
        let no_follow = |mut args: OpenArgs| {
            args.path_flags = PathFlags::empty();
            args
        };
        // Each the same as wasmtime-wasi's own open (on the thread too,
        // as the context allows): opened, or refused with the same code.
        let cases = [
            read_args("sub/file"),
            read_args("sub"),
            read_args("./sub/../link"),
            args("sub", OpenFlags::DIRECTORY, DescriptorFlags::READ),
            args("sub", OpenFlags::DIRECTORY, DescriptorFlags::WRITE),
            write_args("sub"),
            args("sub/file", OpenFlags::TRUNCATE, DescriptorFlags::READ),
            read_args("missing"),
            read_args("../outside"),
            read_args("sub/up/etc"),
            read_args("/etc/passwd"),
            args("sub/file", OpenFlags::DIRECTORY, DescriptorFlags::READ),
            args(
                "sub",
                OpenFlags::DIRECTORY | OpenFlags::CREATE,
                DescriptorFlags::READ,
            ),
            args(
                "sub/file",
                OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                DescriptorFlags::WRITE,
            ),
            args(
                "sub/file",
                OpenFlags::empty(),
                DescriptorFlags::READ | DescriptorFlags::DATA_INTEGRITY_SYNC,
            ),
            no_follow(read_args("link")),
            no_follow(read_args("sub")),
        ];
        for case in cases {
            let what = format!("{} {:?} {:?}", case.path, case.oflags, case.flags);
            let again = OpenArgs {
                path: case.path.clone(),
                ..case
            };
            let theirs = ready_at_once(open(&mut state, borrow(&tmp), again))
                .expect("wasmtime-wasi opened on the thread");
            let ours = ready_at_once(open_on_thread(&mut state, borrow(&tmp), case))
                .expect("opened without the pool");
            assert_eq!(code(ours), code(theirs), "{what}");
        }
        std::fs::write(root.join("sub/file"), "regular").unwrap();
        // Created where wasmtime-wasi creates.
        let create = || args("sub/new", OpenFlags::CREATE, DescriptorFlags::WRITE);
        ready_at_once(open_on_thread(&mut state, borrow(&tmp), create()))
            .unwrap()
            .unwrap();
        assert!(root.join("sub/new").is_file());
        // Read-only permissions are kept: a write open is refused.
        let mut wasi = WasiCtx::builder();
        wasi.preopened_dir(root, "/ro", FsPerms::ReadOnly).unwrap();
        let mut ro = State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
        };
        let (ro_dir, _) = preopens::Host::get_directories(&mut ro.filesystem())
            .unwrap()
            .remove(0);
        let refused = ready_at_once(open_on_thread(&mut ro, ro_dir, create())).unwrap();
        assert_eq!(code(refused), Some(ErrorCode::NotPermitted));

        // A file and a directory it opened: read on the thread, and in
        // blocking mode again.
        let file = ready_at_once(open_on_thread(
            &mut state,
            borrow(&tmp),
            read_args("sub/file"),
        ))
        .unwrap()
        .unwrap();
        let sub = ready_at_once(open_on_thread(&mut state, borrow(&tmp), read_args("sub")))
            .unwrap()
            .unwrap();
        assert_eq!(read_at_once(&mut state, &file).unwrap(), b"regular");
        for fd in [&file, &sub] {
            let flags = rustix::fs::fcntl_getfl(os_fd(&mut state, fd)).unwrap();
            assert!(!flags.contains(rustix::fs::OFlags::NONBLOCK), "{flags:?}");
        }
        drop(release);
    }

    #[test]
    fn a_fifo_opened_as_a_directory_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        fifo(&path);
        let root = dir.path().to_path_buf();
        let (tx, rx) = mpsc::channel();
        // On a thread of its own: an open that waits for a writer holds it.
        let opener = std::thread::spawn(move || {
            let (mut state, tmp) = state(&root);
            let as_dir = args("fifo", OpenFlags::DIRECTORY, DescriptorFlags::READ);
            let opened = ready_at_once(open_on_thread(&mut state, tmp, as_dir)).map(code);
            tx.send(opened).unwrap();
        });
        let opened = rx.recv_timeout(Duration::from_secs(30));
        // Releases an open that waits, so that the thread ends.
        drop(open_end(&path, true));
        opener.join().unwrap();
        let opened = opened.expect("the open waited for a writer on the guest's thread");
        assert_eq!(opened, Some(Some(ErrorCode::NotDirectory)));
    }

    #[test]
    fn a_fifos_write_end_waits_on_the_pool_for_a_reader_and_writes_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        fifo(&path);
        let (rt, release) = runtime_with_the_pool_held();
        let _context = rt.enter();
        let (mut state, tmp) = state(dir.path());
        // No reader: the open waits, on the pool (held), not the thread
        // (nor does it fail with `ENXIO`, as a non-blocking open does).
        let open = open_on_thread(&mut state, borrow(&tmp), write_args("fifo"));
        assert!(ready_at_once(open).is_none(), "opened without a reader");
        // With a reader it opens at once, and writes on the pool.
        let reader = open_end(&path, false).unwrap();
        let fd = ready_at_once(open_on_thread(&mut state, borrow(&tmp), write_args("fifo")))
            .expect("opened at once")
            .unwrap();
        let flags = rustix::fs::fcntl_getfl(os_fd(&mut state, &fd)).unwrap();
        assert!(!flags.contains(rustix::fs::OFlags::NONBLOCK), "{flags:?}");
        let mut fs = state.filesystem();
        let write = HostDescriptor::write(&mut fs, borrow(&fd), b"x".to_vec(), 0);
        assert!(ready_at_once(write).is_none(), "written on the thread");
        drop((release, reader));
    }

    #[test]
    fn a_fifos_read_end_waits_on_the_pool_for_a_writer_and_reads_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        fifo(&path);
        {
            let (rt, release) = runtime_with_the_pool_held();
            let _context = rt.enter();
            let (mut state, tmp) = state(dir.path());
            let open = open_on_thread(&mut state, borrow(&tmp), read_args("fifo"));
            assert!(ready_at_once(open).is_none(), "opened without a writer");
            drop(release);
        }
        // A writer that comes after the open, and one already waiting for
        // a reader (it writes and is gone before the open returns): either
        // way the reader gets its bytes, not an early end of file.
        for writer_first in [false, true] {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (mut state, tmp) = state(dir.path());
            let writer_path = path.clone();
            let writer = std::thread::spawn(move || {
                if !writer_first {
                    std::thread::sleep(Duration::from_millis(200));
                }
                // Blocks until there is a reader.
                std::fs::write(writer_path, "from the writer").unwrap();
            });
            if writer_first {
                std::thread::sleep(Duration::from_millis(200));
            }
            let fd = rt
                .block_on(open_on_thread(&mut state, borrow(&tmp), read_args("fifo")))
                .unwrap();
            // What the guest's stream reads would read.
            let Ok(Descriptor::File(file)) = state.table.get(&fd) else {
                panic!("not a file");
            };
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut &*file.file, &mut bytes).unwrap();
            assert_eq!(bytes, b"from the writer", "writer first: {writer_first}");
            writer.join().unwrap();
        }
    }

    #[test]
    fn a_device_opens_at_once_and_is_read_on_the_pool() {
        let (rt, release) = runtime_with_the_pool_held();
        let _context = rt.enter();
        let (mut state, dev) = state(Path::new("/dev"));
        let zero = ready_at_once(open_on_thread(&mut state, dev, read_args("zero")))
            .expect("opened at once")
            .unwrap();
        assert!(
            read_at_once(&mut state, &zero).is_none(),
            "read on the thread"
        );
        drop(release);
    }
}

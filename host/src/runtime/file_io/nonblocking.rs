//! wasmtime-wasi's `open-at` (`Dir::open_at`), with `O_NONBLOCK`: the
//! open itself never waits, and what it opened is classified by the `fstat`
//! on its descriptor that wasmtime-wasi makes anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cap_primitives::fs::{FollowSymlinks, OpenOptions};
use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;
use wasmtime_wasi::filesystem::{Descriptor, Dir, File};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, OpenFlags, PathFlags,
};
use wasmtime_wasi::{FsPerms, OpenMode};

use super::OpenArgs;

/// What a non-blocking open gave.
pub(super) enum Opened {
    /// The descriptor (on the thread for a regular file or a
    /// directory, on the pool for anything else), or the error.
    Now(Result<Descriptor, ErrorCode>),
    /// The read end of a FIFO (on the pool): as a blocking open would,
    /// it waits for a writer before it is the guest's.
    ReaderOfAFifo(Descriptor),
    /// The open would have waited (`ENXIO`: a FIFO's write end with
    /// no reader; `EAGAIN`: a lease to break): done again on the pool,
    /// blocking, as before.
    WouldWait,
}

pub(super) fn open(dir: &Dir, args: &OpenArgs) -> Opened {
    let (opts, open_mode) = match options(dir.perms, args) {
        Ok(options) => options,
        Err(code) => return Opened::Now(Err(code)),
    };
    let file = match cap_primitives::fs::open(&dir.dir, args.path.as_ref(), &opts) {
        Ok(file) => file,
        Err(e) => {
            return match Errno::from_io_error(&e) {
                Some(Errno::NXIO | Errno::AGAIN) => Opened::WouldWait,
                _ => Opened::Now(Err(e.into())),
            };
        }
    };
    let kind = match rustix::fs::fstat(&file) {
        Ok(stat) => FileType::from_raw_mode(stat.st_mode),
        Err(e) => return Opened::Now(Err(std::io::Error::from(e).into())),
    };
    if kind != FileType::Directory && args.oflags.contains(OpenFlags::DIRECTORY) {
        return Opened::Now(Err(ErrorCode::NotDirectory));
    }
    // Reads and writes block again, wherever they run (the settable
    // status flags were all clear but `O_NONBLOCK`).
    if let Err(e) = rustix::fs::fcntl_setfl(&file, OFlags::empty()) {
        return Opened::Now(Err(std::io::Error::from(e).into()));
    }
    match kind {
        FileType::Directory => Opened::Now(Ok(Descriptor::Dir(Dir::new(
            file, dir.perms, open_mode, true,
        )))),
        FileType::RegularFile => Opened::Now(Ok(Descriptor::File(File::new(
            file, dir.perms, open_mode, true,
        )))),
        FileType::Fifo if !open_mode.contains(OpenMode::WRITE) => Opened::ReaderOfAFifo(
            Descriptor::File(File::new(file, dir.perms, open_mode, false)),
        ),
        // A device, a FIFO's write end (its reader is there), or a
        // FIFO opened for reading and writing (never waits).
        _ => Opened::Now(Ok(Descriptor::File(File::new(
            file, dir.perms, open_mode, false,
        )))),
    }
}

/// wasmtime-wasi's open options for `args` (its `Dir::open_at`, with the
/// same refusals), plus `O_NONBLOCK`, and the descriptor's open mode.
fn options(perms: FsPerms, args: &OpenArgs) -> Result<(OpenOptions, OpenMode), ErrorCode> {
    let (oflags, flags) = (args.oflags, args.flags);
    let mut create = false;
    let mut open_mode = OpenMode::empty();
    let mut opts = OpenOptions::new();
    if oflags.contains(OpenFlags::CREATE) {
        if oflags.contains(OpenFlags::EXCLUSIVE) {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        create = true;
        opts.write(true);
        open_mode |= OpenMode::WRITE;
    }
    if oflags.contains(OpenFlags::TRUNCATE) {
        opts.truncate(true).write(true);
        open_mode |= OpenMode::WRITE;
    }
    if flags.contains(DescriptorFlags::READ) {
        opts.read(true);
        open_mode |= OpenMode::READ;
    }
    if flags.contains(DescriptorFlags::WRITE) {
        opts.write(true);
        open_mode |= OpenMode::WRITE;
    } else {
        // As wasmtime-wasi: opened for reading; the permissions refuse
        // what the flags do not allow.
        opts.read(true);
        open_mode |= OpenMode::READ;
    }
    opts._cap_fs_ext_follow(if args.path_flags.contains(PathFlags::SYMLINK_FOLLOW) {
        FollowSymlinks::Yes
    } else {
        FollowSymlinks::No
    });
    if flags.intersects(
        DescriptorFlags::FILE_INTEGRITY_SYNC
            | DescriptorFlags::DATA_INTEGRITY_SYNC
            | DescriptorFlags::REQUESTED_WRITE_SYNC,
    ) {
        return Err(ErrorCode::Unsupported);
    }
    if oflags.contains(OpenFlags::DIRECTORY)
        && oflags.intersects(OpenFlags::CREATE | OpenFlags::EXCLUSIVE | OpenFlags::TRUNCATE)
    {
        return Err(ErrorCode::Invalid);
    }
    if perms.write_not_permitted() && (create || open_mode.contains(OpenMode::WRITE)) {
        return Err(ErrorCode::NotPermitted);
    }
    opts._cap_fs_ext_nonblock(true);
    Ok((opts, open_mode))
}

/// How often the wait for a writer checks that its open is still
/// awaited.
const RECHECK: Duration = Duration::from_millis(100);

/// On the blocking pool, until the FIFO whose read end `fifo` is has
/// had a writer: until there is data to read, or a writer came and
/// went (end of file). A blocking open returns when the writer opens;
/// this returns at its first write or its close, which the guest, whose
/// next call reads, cannot tell apart. If the open is dropped (the
/// container ended), the pool thread lets go within [`RECHECK`].
pub(super) async fn wait_for_a_writer(fifo: &Descriptor) -> Result<(), ErrorCode> {
    let Descriptor::File(file) = fifo else {
        return Ok(());
    };
    let file = Arc::clone(&file.file);
    let awaited = Arc::new(AtomicBool::new(true));
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Relaxed);
        }
    }
    let _dropped = Dropped(Arc::clone(&awaited));
    let waited = tokio::task::spawn_blocking(move || {
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: RECHECK.as_nanos() as _,
        };
        while awaited.load(Ordering::Relaxed) {
            let mut fds = [rustix::event::PollFd::new(
                &*file,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(Errno::INTR) => {}
                Ok(_) => return Ok(()),
                Err(e) => return Err(std::io::Error::from(e)),
            }
        }
        Ok(())
    })
    .await;
    match waited {
        Ok(result) => result.map_err(ErrorCode::from),
        // The pool is shutting down.
        Err(_) => Err(ErrorCode::Interrupted),
    }
}

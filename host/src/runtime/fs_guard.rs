//! The `wasi:filesystem` imports as ForgeOne narrows them, on top of
//! wasmtime-wasi's (which confines every path to its preopen, via cap-std):
//!
//! - **Handles are bounded per container.** Every host resource a guest
//!   holds (a file or directory descriptor, a stream, a directory listing,
//!   a pollable, a socket) is an entry of its store's `ResourceTable`, whose
//!   capacity is [`Limits::max_open_files`] (default 1,024). So one guest can
//!   no longer take the host's descriptors from the others (19,986 open
//!   files did). A filesystem call that would open one more handle returns
//!   `error-code::quota` (EDQUOT, "quota exceeded": `wasi:filesystem` has no
//!   too-many-open-files code) instead of trapping, and the refusal is
//!   counted; a run that then fails is reported as
//!   [`Failure::OpenFilesLimit`], naming the limit, and so is a trap on a
//!   full table anywhere else (a pollable, a stream).
//! - **Symbolic links stay inside.** A guest cannot follow a link out of
//!   its preopen, but it must not plant one on the host either (a host
//!   process might follow it). `symlink-at` refuses an absolute target and
//!   a target whose `..` components climb above the link's own directory,
//!   with `error-code::not-permitted`. The second rule is stricter than
//!   "stays inside the preopen" on purpose: a link that climbs even one
//!   level escapes once the guest renames it (or a directory above it)
//!   closer to the preopen's root, so only links that point at or below
//!   their own directory stay inside whatever is renamed later.
//!
//! - **What could block for good never waits on the guest's thread.** With
//!   [`FileIo::OnThread`] (the default) file calls run on the thread that
//!   polls the guest; `open-at` opens without waiting (`O_NONBLOCK`), and
//!   what is not a regular file or a directory (a FIFO, a device) is read
//!   and written on the blocking pool (see `file_io`).
//!
//! All are shadowing definitions of functions wasmtime-wasi registered:
//! each checks, then calls wasmtime-wasi's own implementation.
//!
//! [`Limits::max_open_files`]: super::Limits::max_open_files
//! [`Failure::OpenFilesLimit`]: super::Failure::OpenFilesLimit

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable, ResourceTableError};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::filesystem::WasiFilesystemView as _;
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, DirectoryEntryStream, ErrorCode, HostDescriptor, OpenFlags,
    PathFlags,
};
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::file_io::{self, FileIo, OpenArgs};
use super::limits::Limits;

/// The interface whose functions are shadowed: the version wasmtime-wasi
/// registers (guests importing any 0.2.x are linked to it).
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// A container's resource table: at most [`Limits::max_open_files`]
/// entries at once (at least 1).
pub(crate) fn table(limits: &Limits) -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.max_open_files.max(1));
    table
}

/// What the guards need of the host state beyond WASI.
pub(crate) trait GuardView: WasiView {
    /// A call was refused because the resource table is full.
    fn handle_refused(&mut self);
    /// A symbolic link was refused (`target` as the guest gave it).
    fn symlink_refused(&mut self, target: &str, why: &'static str);
    /// Where the container's filesystem calls run.
    fn file_io(&self) -> FileIo;
}

/// True when `error` is a full resource table.
pub(crate) fn is_table_full(error: &wasmtime::Error) -> bool {
    matches!(
        error.downcast_ref::<ResourceTableError>(),
        Some(ResourceTableError::Full)
    )
}

/// wasmtime-wasi's result as the guest sees it: its error code; a full
/// table as `quota` (counted) rather than a trap; any other trap as is.
fn guest_result<T: GuardView, R>(
    host: &mut T,
    result: FsResult<R>,
) -> wasmtime::Result<Result<R, ErrorCode>> {
    let error = match result {
        Ok(value) => return Ok(Ok(value)),
        Err(error) => error,
    };
    match error.downcast() {
        Ok(code) => Ok(Err(code)),
        Err(trap) if is_table_full(&trap) => {
            host.handle_refused();
            Ok(Err(ErrorCode::Quota))
        }
        Err(trap) => Err(trap),
    }
}

/// Why a symbolic link to `target` could leave the preopen, if it could.
pub(crate) fn symlink_target_escapes(target: &str) -> Option<&'static str> {
    if target.starts_with('/') {
        return Some("its target is absolute");
    }
    let mut depth = 0usize;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return Some("its target climbs above the link's directory"),
            },
            _ => depth += 1,
        }
    }
    None
}

/// Shadows the guarded `wasi:filesystem/types` functions in `linker`
/// (after wasmtime-wasi's own were added).
pub(crate) fn add_to_linker<T: GuardView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = shadow(linker);
    linker.allow_shadowing(false);
    result
}

type OpenAt = (
    Resource<Descriptor>,
    PathFlags,
    String,
    OpenFlags,
    DescriptorFlags,
);

fn shadow<T: GuardView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, T>, (fd, path_flags, path, oflags, flags): OpenAt| {
            Box::new(async move {
                let host = store.data_mut();
                let args = OpenArgs {
                    path_flags,
                    path,
                    oflags,
                    flags,
                };
                let result = match host.file_io() {
                    FileIo::OnThread => file_io::open_on_thread(host, fd, args).await,
                    FileIo::BlockingPool => file_io::open(host, fd, args).await,
                };
                Ok((guest_result(host, result)?,))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.read-directory",
        |mut store: StoreContextMut<'_, T>, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let host = store.data_mut();
                let result: FsResult<Resource<DirectoryEntryStream>> = {
                    let mut fs = host.filesystem();
                    HostDescriptor::read_directory(&mut fs, fd).await
                };
                Ok((guest_result(host, result)?,))
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.read-via-stream",
        |mut store: StoreContextMut<'_, T>, (fd, offset): (Resource<Descriptor>, u64)| {
            let host = store.data_mut();
            let result: FsResult<Resource<DynInputStream>> =
                HostDescriptor::read_via_stream(&mut host.filesystem(), fd, offset);
            Ok((guest_result(host, result)?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, T>, (fd, offset): (Resource<Descriptor>, u64)| {
            let host = store.data_mut();
            let result: FsResult<Resource<DynOutputStream>> =
                HostDescriptor::write_via_stream(&mut host.filesystem(), fd, offset);
            Ok((guest_result(host, result)?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, T>, (fd,): (Resource<Descriptor>,)| {
            let host = store.data_mut();
            let result: FsResult<Resource<DynOutputStream>> =
                HostDescriptor::append_via_stream(&mut host.filesystem(), fd);
            Ok((guest_result(host, result)?,))
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store: StoreContextMut<'_, T>,
         (fd, target, link): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let host = store.data_mut();
                if let Some(why) = symlink_target_escapes(&target) {
                    host.symlink_refused(&target, why);
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let result = {
                    let mut fs = host.filesystem();
                    HostDescriptor::symlink_at(&mut fs, fd, target, link).await
                };
                Ok((guest_result(host, result)?,))
            })
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_targets_at_or_below_the_link_stay_inside() {
        for inside in [
            "inside.txt",
            "sub/file",
            "./x",
            "sub/../x",
            "a/b/../../c",
            "a//b/",
        ] {
            assert_eq!(symlink_target_escapes(inside), None, "{inside}");
        }
        for (outside, why) in [
            ("/etc/passwd", "its target is absolute"),
            ("/", "its target is absolute"),
            ("..", "its target climbs above the link's directory"),
            ("../..", "its target climbs above the link's directory"),
            (
                "../outside.txt",
                "its target climbs above the link's directory",
            ),
            (
                "sub/../../x",
                "its target climbs above the link's directory",
            ),
            ("./../x", "its target climbs above the link's directory"),
        ] {
            assert_eq!(symlink_target_escapes(outside), Some(why), "{outside}");
        }
    }

    #[test]
    fn a_table_holds_at_most_the_limit() {
        let limits = Limits {
            max_open_files: 2,
            ..Limits::default()
        };
        let mut table = table(&limits);
        table.push(1u32).unwrap();
        let second = table.push(2u32).unwrap();
        let full = table.push(3u32).unwrap_err();
        assert!(is_table_full(&wasmtime::Error::new(full)));
        // A freed entry is reused.
        table.delete(second).unwrap();
        table.push(4u32).unwrap();
    }
}

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
//! These are shadowing definitions of functions wasmtime-wasi registered:
//! each calls wasmtime-wasi's own implementation and checks its result.
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
                let result = {
                    let mut fs = host.filesystem();
                    HostDescriptor::open_at(&mut fs, fd, path_flags, path, oflags, flags).await
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
    Ok(())
}

impl GuardView for super::host::Host {
    fn handle_refused(&mut self) {
        self.limiter.handle_refusals = self.limiter.handle_refusals.saturating_add(1);
        if self.limiter.handle_refusals == 1 {
            tracing::warn!(
                container = %self.kernel.identity.container,
                limit = self.table.max_capacity(),
                "guest refused a handle: its open-files limit is reached"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

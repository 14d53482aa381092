//! A cache of async fiber stacks for the on-demand instance allocator.
//!
//! Every container runs on its own fiber stack (wasmtime's async support).
//! wasmtime's on-demand allocator maps a fresh stack for every store and
//! unmaps it when the store drops. In a host with other threads (tokio
//! workers, the audit writer, the epoch ticker) every unmap is a TLB
//! shootdown across cores; mapping and unmapping the stack were a third of
//! a container start. [`StackCache`] keeps a bounded number of freed stacks
//! mapped and hands them out again, as the pooling allocator does for its
//! own stacks.
//!
//! Written by hand on [`wasmtime::StackCreator`], the one hook wasmtime
//! offers for this; no crate provides it. Each stack is an anonymous private
//! mapping with an inaccessible guard page below it, so an overflow faults
//! (wasmtime's own stack limit stops wasm recursion well before that).
//! Reused stacks are not zeroed, as with the pooling allocator's default:
//! a fiber stack holds host frames only and is never addressable from wasm.
//! When wasmtime asks for a zeroed stack, a fresh mapping (zero-filled by
//! the kernel) is returned instead.

use std::ops::Range;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use wasmtime::{StackCreator, StackMemory};

/// Hands out fiber stacks, keeping up to `keep` freed ones for reuse.
#[derive(Debug)]
pub(crate) struct StackCache {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    free: Mutex<Vec<Mapping>>,
    keep: usize,
}

impl Shared {
    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Mapping>> {
        // The list is consistent whenever the lock is released.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StackCache {
    /// A cache keeping at most `keep` idle stacks mapped.
    pub(crate) fn new(keep: usize) -> StackCache {
        StackCache {
            shared: Arc::new(Shared {
                free: Mutex::new(Vec::with_capacity(keep)),
                keep,
            }),
        }
    }
}

// SAFETY: every stack handed out is a page-aligned read-write mapping of at
// least the requested size, owned by the returned `StackMemory` alone until
// wasmtime drops it, with an inaccessible guard page directly below it.
unsafe impl StackCreator for StackCache {
    fn new_stack(&self, size: usize, zeroed: bool) -> wasmtime::Result<Box<dyn StackMemory>> {
        let reused = if zeroed {
            None
        } else {
            let mut free = self.shared.free();
            let at = free.iter().rposition(|m| m.usable() == round_up(size));
            at.map(|i| free.swap_remove(i))
        };
        let mapping = match reused {
            Some(mapping) => mapping,
            None => Mapping::new(size)?,
        };
        Ok(Box::new(CachedStack {
            mapping: Some(mapping),
            shared: self.shared.clone(),
        }))
    }
}

/// A stack lent to wasmtime; dropping it returns the mapping to the cache.
struct CachedStack {
    /// Always `Some` until dropped.
    mapping: Option<Mapping>,
    shared: Arc<Shared>,
}

impl CachedStack {
    fn mapping(&self) -> &Mapping {
        self.mapping
            .as_ref()
            .expect("a stack's mapping lives until drop")
    }
}

impl Drop for CachedStack {
    fn drop(&mut self) {
        if let Some(mapping) = self.mapping.take() {
            let mut free = self.shared.free();
            if free.len() < self.shared.keep {
                free.push(mapping);
            }
            // Otherwise the mapping drops here, unmapped.
        }
    }
}

// SAFETY: `top`, `range` and `guard_range` describe the mapping this value
// owns exclusively; it stays mapped until the value is dropped.
unsafe impl StackMemory for CachedStack {
    fn top(&self) -> *mut u8 {
        let m = self.mapping();
        m.base.as_ptr().wrapping_add(m.len)
    }

    fn range(&self) -> Range<usize> {
        let m = self.mapping();
        let start = m.base.as_ptr() as usize + m.guard;
        start..m.base.as_ptr() as usize + m.len
    }

    fn guard_range(&self) -> Range<*mut u8> {
        let m = self.mapping();
        m.base.as_ptr()..m.base.as_ptr().wrapping_add(m.guard)
    }
}

fn page_size() -> usize {
    rustix::param::page_size()
}

fn round_up(size: usize) -> usize {
    let page = page_size();
    size.div_ceil(page).max(1) * page
}

/// One anonymous mapping: a guard page, then the usable stack.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    /// Whole mapping, guard included.
    len: usize,
    guard: usize,
}

// SAFETY: a `Mapping` is plain memory owned by one value at a time; moving
// it between threads moves that ownership.
unsafe impl Send for Mapping {}
// SAFETY: `Mapping` has no interior mutability; shared references only read
// its address and sizes.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(size: usize) -> wasmtime::Result<Mapping> {
        let guard = page_size();
        let usable = round_up(size);
        let len = usable
            .checked_add(guard)
            .ok_or_else(|| wasmtime::format_err!("fiber stack size {size} overflows"))?;
        // SAFETY: a new private anonymous mapping at an address the kernel
        // chooses aliases nothing.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE,
            )
        }
        .map_err(|e| wasmtime::format_err!("cannot map a {len}-byte fiber stack: {e}"))?;
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| wasmtime::format_err!("mmap returned a null fiber stack"))?;
        let mapping = Mapping { base, len, guard };
        // SAFETY: the range lies inside the mapping just created, which
        // nothing else references yet.
        unsafe {
            rustix::mm::mprotect(
                base.as_ptr().add(guard).cast(),
                usable,
                MprotectFlags::READ | MprotectFlags::WRITE,
            )
        }
        .map_err(|e| wasmtime::format_err!("cannot make a fiber stack writable: {e}"))?;
        Ok(mapping)
    }

    fn usable(&self) -> usize {
        self.len - self.guard
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `Mapping::new`, is owned by
        // this value alone and is no longer in use as a stack.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_reused_up_to_the_limit() {
        let cache = StackCache::new(1);
        let a = cache.new_stack(64 * 1024, false).unwrap();
        let b = cache.new_stack(64 * 1024, false).unwrap();
        let (a_top, b_top) = (a.top(), b.top());
        assert_ne!(a_top, b_top);
        assert_eq!(a.range().len(), 64 * 1024);
        assert_eq!(a.guard_range().end as usize, a.range().start);
        drop(a);
        drop(b); // over the limit: unmapped
        assert_eq!(cache.shared.free().len(), 1);
        let c = cache.new_stack(64 * 1024, false).unwrap();
        assert_eq!(c.top(), a_top);
        // A zeroed request never gets a used stack.
        drop(c);
        let d = cache.new_stack(64 * 1024, true).unwrap();
        assert_ne!(d.top(), a_top);
        // The usable range is writable.
        let range = d.range();
        // SAFETY: the range is a read-write mapping owned by `d`.
        unsafe { std::ptr::write_bytes(range.start as *mut u8, 0xaa, range.len()) };
    }
}

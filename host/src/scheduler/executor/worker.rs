//! A worker thread's loop: pick, run one slice, repeat; spin briefly,
//! then park, when there is nothing to run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use super::queues::{LOCAL, Local, LocalQueues, Shared};

/// The loop of worker `index`: runs inside `handle`'s tokio context until
/// shutdown, then cancels what is left in its local deques.
pub(super) fn worker_main(
    shared: Arc<Shared>,
    index: usize,
    queues: LocalQueues,
    handle: tokio::runtime::Handle,
) {
    let _tokio = handle.enter();
    LOCAL.with(|l| {
        *l.borrow_mut() = Some(Local {
            shared: Arc::as_ptr(&shared),
            #[cfg(test)]
            index,
            queues,
        })
    });
    let mut idle_spins = 0u32;
    let mut tick = 0u64;
    while !shared.shutdown.load(Ordering::SeqCst) {
        tick = tick.wrapping_add(1);
        let task = LOCAL.with(|l| {
            let l = l.borrow();
            let local = l.as_ref().map(|l| &l.queues[..]).unwrap_or(&[]);
            shared.find_task(local, index, tick)
        });
        match task {
            Some(r) => {
                idle_spins = 0;
                shared.run(r);
            }
            None if idle_spins < 64 => {
                idle_spins += 1;
                if idle_spins > 16 {
                    thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            None => {
                shared.sleeping.fetch_add(1, Ordering::SeqCst);
                shared
                    .sleepers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(index);
                if !shared.has_work(index) && !shared.shutdown.load(Ordering::SeqCst) {
                    // A timeout as a safety net: a missed wake-up costs at
                    // most this much latency, never a hang.
                    thread::park_timeout(Duration::from_millis(20));
                }
                shared
                    .sleepers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|&w| w != index);
                shared.sleeping.fetch_sub(1, Ordering::SeqCst);
                idle_spins = 0;
            }
        }
    }
    // Cancel what is left in our local deques (nobody else pushes there).
    // Pop explicitly: the deques' buffers are shared with the stealers in
    // `Shared` and would otherwise keep the tasks alive.
    let local = LOCAL.with(|l| l.borrow_mut().take());
    if let Some(local) = local {
        for q in &local.queues {
            while let Some(r) = q.pop() {
                drop(r);
            }
        }
    }
}

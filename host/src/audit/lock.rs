//! Taking an advisory lock (flock) on a file another process may hold, the
//! one way the host does it: try, and while the other holds it, wait up to
//! a timeout, polling with a backoff from 5 to 100 ms, and say once that it
//! waits. The audit log and the boot state directory use it.

use std::fs::File;
use std::time::{Duration, Instant};

/// Locks `file` exclusively for this process; while another holds it,
/// waits up to `timeout` (zero: not at all), calling `on_wait` once as the
/// wait begins. Whether it was locked.
pub(crate) fn lock_waiting(
    file: &File,
    timeout: Duration,
    on_wait: impl FnOnce(),
) -> std::io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut on_wait = Some(on_wait);
    let mut backoff = Duration::from_millis(5);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        if let Some(tell) = on_wait.take() {
            tell();
        }
        std::thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
}

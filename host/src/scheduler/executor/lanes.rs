//! The vocabulary of lanes: a task's lane is its priority class and its
//! trust level, and each has a stride-scheduling weight.

use std::sync::atomic::AtomicU64;

use crate::identity::TrustLevel;

/// Priority classes, Critical first.
pub(super) const CLASSES: usize = 5;
/// Trust levels, System first.
pub(super) const LEVELS: usize = 5;
/// Lanes: one per (class, level).
pub(super) const LANES: usize = CLASSES * LEVELS;

/// Class weights indexed by lane class (Critical first).
pub(super) const CLASS_WEIGHT: [u64; CLASSES] = [16, 8, 4, 2, 1];
/// Trust weights indexed by level, most trusted first (System first).
pub(super) const TRUST_WEIGHT: [u64; LEVELS] = [8, 6, 4, 2, 1];

/// The index of `level` among the trust lanes (System first).
pub(super) fn trust_index(level: TrustLevel) -> usize {
    match level {
        TrustLevel::System => 0,
        TrustLevel::High => 1,
        TrustLevel::Medium => 2,
        TrustLevel::Low => 3,
        TrustLevel::Untrusted => 4,
    }
}

/// Per-task metadata carried in the task header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskMeta {
    /// Priority class, Critical first (`Priority::lane`).
    pub(super) class: usize,
    /// Trust level, System first.
    pub(super) level: usize,
    /// The worker it is pinned to, if any.
    pub(super) pin: Option<usize>,
}

impl TaskMeta {
    /// The lane: class-major.
    pub(super) fn lane(&self) -> usize {
        self.class * LEVELS + self.level
    }
}

/// Busy time per class, shared with the [`ResourceMonitor`](crate::scheduler::ResourceMonitor).
#[derive(Debug)]
pub(crate) struct CpuStats {
    pub(crate) busy_ns: [AtomicU64; CLASSES],
    pub(crate) workers: usize,
}

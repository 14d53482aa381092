//! [`AuditLog::prune`]: removing the oldest sealed segments, recorded in
//! the log before any file is touched (see [`crate::audit::PruneRule`]).

use std::path::{Path, PathBuf};

use super::AuditLog;
use super::events::LogEvent;
use crate::audit::event::{Actor, Entry};
use crate::audit::record;
use crate::audit::segments::{first_line, list_segments, segment_file_name, segments_dir_for};
use crate::audit::{AuditError, PruneRule, PruneSummary, PrunedSegment, Segment};

impl AuditLog {
    /// Removes the oldest sealed segments `rule` selects, or moves them
    /// into `move_to` (created if needed) when given.
    ///
    /// First an `audit.pruned` record states what goes (each segment's
    /// name and first and last sequence numbers, and the hash of the last
    /// removed record), a checkpoint seals it and both are made durable;
    /// only then are the files removed. A crash in between leaves the
    /// segments in place (a later prune removes them, with a record of its
    /// own). [`verify_file`](crate::audit::verify_file) then starts at the
    /// first remaining record and accepts the missing ones because this
    /// record accounts for them. Nothing matched: nothing is written.
    pub fn prune(
        &self,
        rule: &PruneRule,
        move_to: Option<&Path>,
    ) -> Result<PruneSummary, AuditError> {
        let _one_at_a_time = self
            .handle
            .pruning
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let path = self.path().to_owned();
        let active_first = self.handle.shared.lock().active_first_seq;
        let segments = list_segments(&path)?;
        let chosen = choose(&path, &segments, active_first, rule)?;
        let Some(last) = chosen.last() else {
            return Ok(PruneSummary {
                removed: Vec::new(),
                record_seq: 0,
                head: String::new(),
                moved_to: move_to.map(Path::to_owned),
            });
        };
        // The first record that stays names the last removed one's hash.
        let next = successor(&path, &segments, last.last_seq + 1)?;
        let head = first_record(&next)?;
        if head.0 != last.last_seq + 1 || head.1 != "audit.segment" {
            return Err(AuditError::Segment {
                path: next,
                reason: format!(
                    "does not begin with the `audit.segment` record at seq {} that pruning keeps as the first record",
                    last.last_seq + 1
                ),
            });
        }
        let event = LogEvent::Pruned {
            removed: chosen.clone(),
            first_seq: chosen[0].first_seq,
            last_seq: last.last_seq,
            head: head.2.clone(),
            moved_to: move_to.map(|p| p.display().to_string()),
        };
        let record_seq = self.append_internal(Entry::owned(event).actor(Actor::host()))?;
        self.checkpoint()?;
        self.flush()?;
        let dir = segments_dir_for(&path);
        for segment in &chosen {
            remove(&dir.join(&segment.segment), move_to)?;
        }
        sync_dir(&dir)?;
        Ok(PruneSummary {
            removed: chosen,
            record_seq,
            head: head.2,
            moved_to: move_to.map(Path::to_owned),
        })
    }
}

/// The sealed segments `rule` selects, oldest first, with their last
/// sequence numbers.
fn choose(
    path: &Path,
    segments: &[Segment],
    active_first: u64,
    rule: &PruneRule,
) -> Result<Vec<PrunedSegment>, AuditError> {
    let mut out = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let next_first = segments.get(i + 1).map_or(active_first, |s| s.first_seq);
        let last_seq = next_first.saturating_sub(1);
        let take = match rule {
            PruneRule::KeepSegments(keep) => i + keep < segments.len(),
            PruneRule::Before(seq) => last_seq < *seq,
            PruneRule::OlderThan(age) => {
                let next = successor(path, segments, next_first)?;
                let sealed = first_record_time(&next)?;
                let age = chrono::Duration::from_std(*age).unwrap_or(chrono::Duration::MAX);
                chrono::Utc::now().signed_duration_since(sealed) > age
            }
        };
        if !take {
            break;
        }
        out.push(PrunedSegment {
            segment: segment_file_name(segment.first_seq),
            first_seq: segment.first_seq,
            last_seq,
        });
    }
    Ok(out)
}

/// The file whose first record is `seq`: a sealed segment, or the active
/// file.
fn successor(path: &Path, segments: &[Segment], seq: u64) -> Result<PathBuf, AuditError> {
    Ok(segments
        .iter()
        .find(|s| s.first_seq == seq)
        .map_or_else(|| path.to_owned(), |s| s.path.clone()))
}

/// The first record of `file`: sequence number, kind and `prev`.
fn first_record(file: &Path) -> Result<(u64, String, String), AuditError> {
    let parsed = parse_first(file)?;
    Ok((parsed.record.seq, parsed.record.kind, parsed.record.prev))
}

fn first_record_time(file: &Path) -> Result<chrono::DateTime<chrono::Utc>, AuditError> {
    Ok(parse_first(file)?.record.ts)
}

fn parse_first(file: &Path) -> Result<record::ParsedLine, AuditError> {
    let line = first_line(file)
        .map_err(|source| AuditError::Io {
            path: file.to_owned(),
            source,
        })?
        .ok_or_else(|| AuditError::Segment {
            path: file.to_owned(),
            reason: "holds no complete record".into(),
        })?;
    record::parse_line(&line).map_err(|e| AuditError::Segment {
        path: file.to_owned(),
        reason: format!("its first record is damaged: {e}"),
    })
}

/// Deletes `file`, or moves it into `to` (copying when `to` is on another
/// file system).
fn remove(file: &Path, to: Option<&Path>) -> Result<(), AuditError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AuditError::Io { path, source }
    };
    let Some(to) = to else {
        return std::fs::remove_file(file).map_err(io(file));
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    let target = to.join(file.file_name().unwrap_or_default());
    if std::fs::rename(file, &target).is_err() {
        // Another file system: copy, make it durable, then remove.
        std::fs::copy(file, &target).map_err(io(&target))?;
        std::fs::File::open(&target)
            .and_then(|f| f.sync_all())
            .map_err(io(&target))?;
        std::fs::remove_file(file).map_err(io(file))?;
    }
    sync_dir(to)
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| AuditError::Io {
            path: dir.to_owned(),
            source,
        })
}

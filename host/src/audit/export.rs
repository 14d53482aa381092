//! Export for compliance review: JSON Lines (the records' exact bytes) or
//! CSV (one column per common field, details as JSON), filtered by time and
//! kind, read across every segment of the log, oldest first. The chain is
//! checked while exporting (across segments too); a broken chain stops the
//! export with the same error `verify` gives, so a reviewer is never handed
//! a silently damaged log. A log whose oldest segments were pruned is
//! exported from its first remaining record.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::AuditError;
use super::lines::{Line, LineReader};
use super::record::{self, GENESIS, LineError};
use super::segments::log_files;
use super::verify::{Damage, VerifyFailure};

/// Output format of [`export`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    /// JSON Lines: each selected record's original line, byte for byte.
    Jsonl,
    /// CSV with a header row: seq, ts, kind, actor_tenant, actor_principal,
    /// actor_trust, component, container, workload, node, details, prev, hash.
    Csv,
}

/// Which records to export. Every setter states its default.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    kind: Option<String>,
}

impl ExportFilter {
    /// Every record.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only records at or after `t`. Default: no lower bound.
    pub fn since(&mut self, t: DateTime<Utc>) -> &mut Self {
        self.since = Some(t);
        self
    }
    /// Only records before `t`. Default: no upper bound.
    pub fn until(&mut self, t: DateTime<Utc>) -> &mut Self {
        self.until = Some(t);
        self
    }
    /// Only kinds matching `pattern`, where `*` matches any run of
    /// characters (`container.*`, `*.failed`, `boot.component.verified`).
    /// Default: every kind.
    pub fn kind(&mut self, pattern: impl Into<String>) -> &mut Self {
        self.kind = Some(pattern.into());
        self
    }

    fn matches(&self, record: &record::Record) -> bool {
        self.since.is_none_or(|t| record.ts >= t)
            && self.until.is_none_or(|t| record.ts < t)
            && self
                .kind
                .as_deref()
                .is_none_or(|p| kind_matches(p, &record.kind))
    }
}

/// What [`export`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records read (and chain-checked).
    pub read: u64,
    /// Records written.
    pub exported: u64,
}

/// Exports the log at `path` (its sealed segments, then its active file)
/// to `out`.
pub fn export(
    path: impl AsRef<Path>,
    out: &mut dyn Write,
    format: ExportFormat,
    filter: &ExportFilter,
) -> Result<ExportSummary, AuditError> {
    let path = path.as_ref();
    let (mut raw, mut csv) = match format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "seq",
                "ts",
                "kind",
                "actor_tenant",
                "actor_principal",
                "actor_trust",
                "component",
                "container",
                "workload",
                "node",
                "details",
                "prev",
                "hash",
            ])
            .map_err(csv_output)?;
            (None, Some(w))
        }
        ExportFormat::Jsonl => (Some(out), None),
    };
    let mut summary = ExportSummary {
        read: 0,
        exported: 0,
    };
    let mut head = GENESIS;
    let mut next = 1;
    let files = log_files(path)?;
    let active = files.len() - 1;
    for (index, file_path) in files.iter().enumerate() {
        let io = |source| AuditError::Io {
            path: file_path.clone(),
            source,
        };
        let mut reader = LineReader::new(std::fs::File::open(file_path).map_err(io)?);
        let segment = (index < active).then(|| file_path.clone());
        while let Some((line, at)) = reader.next_line().map_err(io)? {
            let expected = next;
            let line_no = at.line_no;
            let fail = |damage| {
                AuditError::Verify(VerifyFailure {
                    seq: expected,
                    line: line_no,
                    damage,
                    segment: segment.clone(),
                })
            };
            let line = match line {
                Line::Complete(line) => line,
                Line::Torn(_) => return Err(fail(Damage::TornTail)),
                Line::TooLong => return Err(fail(Damage::Edited(LineError::TooLong.to_string()))),
            };
            let parsed =
                record::parse_line(line).map_err(|e| fail(Damage::Edited(e.to_string())))?;
            if summary.read == 0 && parsed.record.seq > 1 && parsed.record.kind == "audit.segment" {
                // The oldest segments were pruned: start at the first record kept.
                head = parsed.prev;
                next = parsed.record.seq;
            }
            let expected = next;
            let fail = |damage| {
                AuditError::Verify(VerifyFailure {
                    seq: expected,
                    line: line_no,
                    damage,
                    segment: segment.clone(),
                })
            };
            if parsed.record.seq != expected {
                return Err(fail(Damage::Edited(format!(
                    "found seq {} where {expected} belongs; run `forgeone audit verify` for details",
                    parsed.record.seq
                ))));
            }
            if parsed.prev != head {
                return Err(fail(Damage::BrokenLink));
            }
            head = parsed.hash;
            next += 1;
            summary.read += 1;
            let record = parsed.record;
            if !filter.matches(&record) {
                continue;
            }
            summary.exported += 1;
            match (&mut raw, &mut csv) {
                (Some(out), _) => {
                    out.write_all(line).map_err(AuditError::Output)?;
                    out.write_all(b"\n").map_err(AuditError::Output)?;
                }
                (None, None) => unreachable!("one writer is always set"),
                (None, Some(w)) => {
                    let actor = record.actor.as_ref();
                    let s = &record.subjects;
                    w.write_record([
                        record.seq.to_string().as_str(),
                        &record
                            .ts
                            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                        &record.kind,
                        actor.and_then(|a| a.tenant.as_deref()).unwrap_or(""),
                        actor.map(|a| a.principal.as_str()).unwrap_or(""),
                        actor.and_then(|a| a.trust.as_deref()).unwrap_or(""),
                        s.component.as_deref().unwrap_or(""),
                        s.container.as_deref().unwrap_or(""),
                        s.workload.as_deref().unwrap_or(""),
                        s.node.as_deref().unwrap_or(""),
                        &record.details.to_string(),
                        &record.prev,
                        &record.hash,
                    ])
                    .map_err(csv_output)?;
                }
            }
        }
    }
    if let Some(w) = &mut csv {
        w.flush().map_err(AuditError::Output)?;
    }
    if let Some(out) = &mut raw {
        out.flush().map_err(AuditError::Output)?;
    }
    Ok(summary)
}

/// A CSV writer's error as an output error, keeping the I/O error kind (so
/// a closed pipe is still recognisable as one).
fn csv_output(e: csv::Error) -> AuditError {
    let kind = match e.kind() {
        csv::ErrorKind::Io(io) => io.kind(),
        _ => std::io::ErrorKind::Other,
    };
    AuditError::Output(std::io::Error::new(kind, e))
}

/// Matches `text` against `pattern`, where `*` matches any run of characters
/// and everything else matches itself. Written here because kinds are short
/// ASCII and `*` is the only operator; a glob crate would bring path
/// semantics we do not want (and regex).
pub fn kind_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::kind_matches;

    #[test]
    fn globs() {
        assert!(kind_matches("container.*", "container.started"));
        assert!(kind_matches("*.failed", "container.failed"));
        assert!(kind_matches("*", "boot.x"));
        assert!(kind_matches(
            "boot.component.verified",
            "boot.component.verified"
        ));
        assert!(!kind_matches("container.*", "boot.started"));
        assert!(!kind_matches("boot", "boot.started"));
        assert!(kind_matches("b*t.*d", "boot.started"));
    }
}

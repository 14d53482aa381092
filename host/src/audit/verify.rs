//! Offline verification of a log: chain, sequence, checkpoints, sealing.
//!
//! The verifier reads the file once, checking for every line that its hash
//! matches its exact bytes, that its sequence number is the next one and that
//! it chains to the record before it; each checkpoint's signature is checked
//! against the pinned host key (or, without one, the key the log's
//! `audit.opened` record names, which proves integrity but not origin). A
//! log verifies only if it ends with a closing (`shutdown`) checkpoint, so a
//! tail cut off after the last checkpoint is detected; a live log may be
//! checked with [`VerifyOptions::allow_open_tail`].
//!
//! A log cut back to an earlier checkpoint (even a closing one) still
//! verifies on its own: only a signed head kept elsewhere
//! ([`VerifyOptions::head`], [`SignedHead`]) or a known minimum length
//! ([`VerifyOptions::min_seq`]) shows that it once went further.
//!
//! On failure the first bad sequence number is reported with the kind of
//! damage: edited, removed, reordered, inserted, bad checkpoint, an
//! unsealed (truncated) tail, or a log that ends before its signed head.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::AuditError;
use super::head::SignedHead;
use super::lines::{Line, LineReader};
use super::record::{self, GENESIS, LineError, Record, checkpoint_message};
use super::segments::list_segments;
use crate::keys::{KeyId, PublicKey};

/// Options for [`verify_file`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct VerifyOptions {
    pub(crate) key: Option<PublicKey>,
    pub(crate) allow_open_tail: bool,
    pub(crate) head: Option<SignedHead>,
    pub(crate) min_seq: u64,
    pub(crate) from_seq: u64,
}

impl VerifyOptions {
    /// Default options: no pinned key, the log must end sealed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pins the host public key checkpoints must be signed with. Default:
    /// none (the key recorded in the log is used, which shows the log is
    /// intact but not who wrote it).
    pub fn key(&mut self, key: PublicKey) -> &mut Self {
        self.key = Some(key);
        self
    }

    /// Accepts records after the last checkpoint (a log still being written,
    /// or one whose writer crashed). Default: false, such a tail is reported
    /// as possibly truncated.
    pub fn allow_open_tail(&mut self, allow: bool) -> &mut Self {
        self.allow_open_tail = allow;
        self
    }

    /// Requires the log to reach a signed head it is known to have reached
    /// (kept by the host in its head file, or by a witness): the record at
    /// the head's sequence number must have the head's hash, and the
    /// checkpoint after it must be there. Catches a log cut back to an
    /// earlier checkpoint, which verifies on its own. With a pinned
    /// [`VerifyOptions::key`], the head must be signed by that key. Default:
    /// none.
    pub fn head(&mut self, head: SignedHead) -> &mut Self {
        self.head = Some(head);
        self
    }

    /// Requires the log to hold at least `seq` records. Default: 0 (no
    /// minimum).
    pub fn min_seq(&mut self, seq: u64) -> &mut Self {
        self.min_seq = seq;
        self
    }

    /// Verifies only from the segment that holds record `seq` on: the
    /// earlier segments are not read, and the first record read is taken
    /// as the start (it is an `audit.segment` record, whose signature over
    /// the head before it is checked). Default: 0, every segment; a log
    /// whose oldest segments are missing then verifies only if an
    /// `audit.pruned` record accounts for them.
    pub fn from_seq(&mut self, seq: u64) -> &mut Self {
        self.from_seq = seq;
        self
    }
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records in the log.
    pub records: u64,
    /// Checkpoints among them, every signature verified.
    pub checkpoints: u64,
    /// Hash (hex) of the last record.
    pub head: String,
    /// Sequence number of the last checkpoint, if any.
    pub last_checkpoint: Option<u64>,
    /// Records after the last checkpoint (0 for a sealed log).
    pub unsealed: u64,
    /// The key the checkpoints were checked against.
    pub key_id: Option<KeyId>,
    /// True when that key was pinned by the caller, false when it was read
    /// from the log itself.
    pub key_pinned: bool,
    /// `audit.recovered` records (crash recoveries) seen, by sequence number.
    pub recoveries: Vec<u64>,
    /// The head the last checkpoint signed: what to hand a witness, or
    /// keep, to detect a later cut back to an earlier point. None when the
    /// log has no checkpoint.
    pub signed_head: Option<SignedHead>,
    /// The first record verified (1, unless segments were pruned or a
    /// range was asked for).
    pub first_seq: u64,
    /// The files verified: sealed segments, then the active one.
    pub files: usize,
}

/// The kind of damage found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// The record's bytes do not match its hash, or it does not parse.
    Edited(String),
    /// Records are missing: `seq` up to and including `through`.
    Removed {
        /// Last missing sequence number.
        through: u64,
    },
    /// A record with sequence number `found` stands where `seq` belongs.
    Reordered {
        /// The sequence number found instead.
        found: u64,
    },
    /// A record that is not part of the original chain was inserted here.
    Inserted(String),
    /// The record does not chain to the record before it (that one was
    /// replaced, or this one belongs to another chain).
    BrokenLink,
    /// A checkpoint is malformed, covers the wrong head, or its signature
    /// does not verify.
    BadCheckpoint(String),
    /// Records after the last checkpoint are not sealed: the tail may have
    /// been truncated (or the writer crashed or is still running).
    UnsealedTail {
        /// The last checkpoint, if any.
        last_checkpoint: Option<u64>,
        /// The last record in the file.
        last_seq: u64,
    },
    /// The final line has no newline (a crash mid-write not yet repaired by
    /// reopening the log).
    TornTail,
    /// The file holds no records.
    Empty,
    /// The log ends before the signed head it was checked against: it was
    /// cut back (or replaced) after that head was signed.
    EndsBeforeHead {
        /// The last record in the file.
        last_seq: u64,
        /// The signed head's sequence number (its checkpoint is the next).
        head_seq: u64,
    },
    /// The record at the signed head's sequence number has another hash:
    /// the log was rewritten from there, or is another log.
    NotTheHead {
        /// The hash (hex) the signed head states.
        expected: String,
        /// The record's hash (hex).
        found: String,
    },
    /// The log ends before the minimum sequence number it was required to
    /// reach.
    EndsBeforeMinSeq {
        /// The last record in the file.
        last_seq: u64,
        /// The minimum.
        min_seq: u64,
    },
    /// A segment file is not what its place in the log requires: named for
    /// another first record, empty, or not beginning with the
    /// `audit.segment` record that links it to the segment before.
    BadSegment(String),
    /// The log starts after seq 1 (its oldest segments are gone) and no
    /// `audit.pruned` record accounts for the records before it.
    UnprunedGap {
        /// The last missing record.
        through: u64,
    },
    /// The signed head was signed by another key than the pinned host key.
    HeadKey {
        /// The key that signed the head.
        signed_by: KeyId,
        /// The pinned host key.
        pinned: KeyId,
    },
}

/// Where and how verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The first bad sequence number.
    pub seq: u64,
    /// The 1-based line number in the file.
    pub line: u64,
    /// What is wrong.
    pub damage: Damage,
    /// The sealed segment the line is in (none for the active file).
    pub segment: Option<std::path::PathBuf>,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.seq;
        match &self.damage {
            Damage::Edited(why) => write!(f, "seq {seq}: record edited ({why})"),
            Damage::Removed { through } if *through == seq => {
                write!(f, "seq {seq}: record removed")
            }
            Damage::Removed { through } => {
                write!(f, "seq {seq}: records {seq}..={through} removed")
            }
            Damage::Reordered { found } => {
                write!(
                    f,
                    "seq {seq}: records reordered (found seq {found} where {seq} belongs)"
                )
            }
            Damage::Inserted(why) => write!(f, "seq {seq}: record inserted ({why})"),
            Damage::BrokenLink => write!(
                f,
                "seq {seq}: does not chain to seq {} (the record before it was replaced, or this one was inserted)",
                seq.saturating_sub(1)
            ),
            Damage::BadCheckpoint(why) => write!(f, "seq {seq}: bad checkpoint ({why})"),
            Damage::UnsealedTail {
                last_checkpoint,
                last_seq,
            } => {
                match last_checkpoint {
                    Some(cp) => write!(
                        f,
                        "seq {seq}: records after the checkpoint at seq {cp} (through seq {last_seq}) are not sealed"
                    )?,
                    None => write!(f, "seq {seq}: no checkpoint seals records 1..={last_seq}")?,
                }
                write!(
                    f,
                    ": the tail was truncated after the last checkpoint, or the writer crashed or is still running (use --allow-open-tail for a live log)"
                )
            }
            Damage::TornTail => write!(
                f,
                "seq {seq}: last line is torn (a crash mid-write; reopening the log repairs it)"
            ),
            Damage::Empty => write!(f, "the log holds no records"),
            Damage::EndsBeforeHead { last_seq, head_seq } => write!(
                f,
                "seq {seq}: the log ends at seq {last_seq}, before its signed head at seq {head_seq} (sealed by the checkpoint at seq {}): it was cut back or replaced",
                head_seq + 1
            ),
            Damage::NotTheHead { expected, found } => write!(
                f,
                "seq {seq}: the record has hash {found}, not {expected} as the signed head states: the log was rewritten from here, or is another log"
            ),
            Damage::EndsBeforeMinSeq { last_seq, min_seq } => write!(
                f,
                "seq {seq}: the log ends at seq {last_seq}, before seq {min_seq}, the least it must reach"
            ),
            Damage::BadSegment(why) => write!(f, "seq {seq}: bad segment ({why})"),
            Damage::UnprunedGap { through } => write!(
                f,
                "seq {seq}: records 1..={through} are missing (the oldest segments were removed) and no `audit.pruned` record accounts for them"
            ),
            Damage::HeadKey { signed_by, pinned } => write!(
                f,
                "seq {seq}: the signed head is signed by key {signed_by}, not by the pinned host key {pinned}"
            ),
        }?;
        match &self.segment {
            Some(segment) => write!(f, " [line {} of {}]", self.line, segment.display()),
            None => write!(f, " [line {}]", self.line),
        }
    }
}

/// Verifies the log at `path`: its sealed segments, oldest first, then
/// its active file (see [`segments_dir_for`](super::segments_dir_for)).
/// The chain runs across files; each sealed segment must be named for its
/// first record, and every file after the first must begin with the
/// `audit.segment` record that signs the head of the one before.
///
/// Returns `Err(AuditError::Verify(..))` naming the first bad sequence
/// number (and the segment it is in), or another [`AuditError`] when a
/// file cannot be read.
pub fn verify_file(
    path: impl AsRef<Path>,
    options: &VerifyOptions,
) -> Result<VerifyReport, AuditError> {
    let path = path.as_ref();
    let files = files_from(path, options.from_seq)?;
    // First pass: the sequence number each line claims, to tell removal from
    // reordering from insertion when the order breaks. Cheap: a few bytes per
    // line, no hashing.
    let mut claimed = Vec::new();
    for (file, _) in &files {
        claimed_sequence_numbers(file, &mut claimed)?;
    }
    let mut counts: HashMap<u64, u32> = HashMap::with_capacity(claimed.len());
    for seq in claimed.iter().flatten() {
        *counts.entry(*seq).or_default() += 1;
    }

    if let (Some(head), Some(pinned)) = (&options.head, &options.key)
        && head.key_id() != pinned.id()
    {
        return Err(AuditError::Verify(VerifyFailure {
            seq: head.seq(),
            line: 0,
            damage: Damage::HeadKey {
                signed_by: head.key_id().clone(),
                pinned: pinned.id().clone(),
            },
            segment: None,
        }));
    }
    let mut state = Walk::new(options);
    let mut line_no = 0u64;
    let mut position = 0usize;
    let active = files.len() - 1;
    for (index, (file_path, named)) in files.iter().enumerate() {
        let segment = (index < active).then(|| file_path.clone());
        let io = |source| AuditError::Io {
            path: file_path.clone(),
            source,
        };
        let mut reader = LineReader::new(std::fs::File::open(file_path).map_err(io)?);
        let mut first_in_file = true;
        while let Some((line, at)) = reader.next_line().map_err(io)? {
            line_no = at.line_no;
            position += 1;
            let expected = state.records + 1;
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
            let parsed = match record::parse_line(line) {
                Ok(parsed) => parsed,
                Err(LineError::HashMismatch) => {
                    return Err(fail(Damage::Edited(
                        "its content does not match its hash".into(),
                    )));
                }
                Err(other) => return Err(fail(Damage::Edited(other.to_string()))),
            };
            let found = parsed.record.seq;
            if std::mem::take(&mut first_in_file) {
                check_file_start(&parsed.record, *named, index).map_err(fail)?;
                if state.records == 0 && found > 1 {
                    // The first file starts later: pruned, or a range.
                    state.start_at(found, parsed.prev);
                }
            } else if parsed.record.kind == "audit.segment" {
                return Err(fail(Damage::BadSegment(
                    "an `audit.segment` record inside a segment (it may only begin one)".into(),
                )));
            }
            let expected = state.records + 1;
            let fail = |damage| {
                AuditError::Verify(VerifyFailure {
                    seq: expected,
                    line: line_no,
                    damage,
                    segment: segment.clone(),
                })
            };
            if found != expected {
                let at = (position - 1, state.first_seq - 1);
                return Err(fail(classify_break(expected, found, at, &claimed, &counts)));
            }
            if counts.get(&found).copied().unwrap_or(0) > 1 {
                // Two records claim this number: one of them was inserted (even
                // if it was hashed onto the chain correctly).
                return Err(fail(Damage::Inserted(format!(
                    "sequence number {found} appears twice"
                ))));
            }
            if parsed.prev != state.head {
                return Err(fail(Damage::BrokenLink));
            }
            if let Some(head) = &options.head
                && head.seq() == found
                && head.hash_bytes() != &parsed.hash
            {
                return Err(fail(Damage::NotTheHead {
                    expected: head.hash(),
                    found: hex::encode(parsed.hash),
                }));
            }
            state.accept(&parsed.record, parsed.hash).map_err(fail)?;
        }
        if first_in_file && index < active {
            return Err(AuditError::Verify(VerifyFailure {
                seq: state.records + 1,
                line: 0,
                damage: Damage::BadSegment("the segment holds no record".into()),
                segment,
            }));
        }
    }
    state.files = files.len();
    state.finish(line_no)
}

/// The files to verify, in chain order, each with the first sequence
/// number its name states (none for the active file): from the segment
/// holding `from_seq` on.
fn files_from(path: &Path, from_seq: u64) -> Result<Vec<(PathBuf, Option<u64>)>, AuditError> {
    let segments = list_segments(path)?;
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(AuditError::Io {
                path: path.to_owned(),
                source: std::io::Error::other("not a regular file"),
            });
        }
        Err(source) if segments.is_empty() => {
            return Err(AuditError::Io {
                path: path.to_owned(),
                source,
            });
        }
        _ => {}
    }
    let skip = segments
        .iter()
        .rposition(|s| s.first_seq <= from_seq)
        .unwrap_or(0);
    let mut files: Vec<_> = segments
        .into_iter()
        .skip(skip)
        .map(|s| (s.path, Some(s.first_seq)))
        .collect();
    if path.exists() {
        files.push((path.to_owned(), None));
    }
    Ok(files)
}

/// Checks the first record of file `index`: a sealed segment's name
/// states its sequence number, and every file but a log's very first
/// begins with `audit.segment`.
fn check_file_start(record: &Record, named: Option<u64>, index: usize) -> Result<(), Damage> {
    if let Some(named) = named
        && named != record.seq
    {
        return Err(Damage::BadSegment(format!(
            "its name says it starts at seq {named}, but its first record is seq {}",
            record.seq
        )));
    }
    let must_link = index > 0 || record.seq != 1;
    if must_link && record.kind != "audit.segment" {
        return Err(Damage::BadSegment(format!(
            "it begins with `{}`, not with the `audit.segment` record that links it to the segment before",
            record.kind
        )));
    }
    Ok(())
}

/// Chain state while walking a log.
struct Walk<'a> {
    options: &'a VerifyOptions,
    records: u64,
    head: [u8; 32],
    checkpoints: u64,
    last_checkpoint: Option<u64>,
    sealed_through: u64,
    closed: bool,
    /// The key named by the latest `audit.opened` record.
    logged_key: Option<PublicKey>,
    key_used: Option<KeyId>,
    recoveries: Vec<u64>,
    /// The head the latest checkpoint signed.
    signed_head: Option<SignedHead>,
    /// The first record walked.
    first_seq: u64,
    /// The log starts after seq 1: the last missing record and its hash,
    /// until an `audit.pruned` record accounts for them.
    unpruned: Option<(u64, [u8; 32])>,
    files: usize,
}

impl<'a> Walk<'a> {
    fn new(options: &'a VerifyOptions) -> Self {
        Walk {
            options,
            records: 0,
            head: GENESIS,
            checkpoints: 0,
            last_checkpoint: None,
            sealed_through: 0,
            closed: false,
            logged_key: None,
            key_used: options.key.as_ref().map(|k| k.id().clone()),
            recoveries: Vec::new(),
            signed_head: None,
            first_seq: 1,
            unpruned: None,
            files: 0,
        }
    }

    /// Starts the walk at record `seq`, whose previous hash is `prev`.
    fn start_at(&mut self, seq: u64, prev: [u8; 32]) {
        self.records = seq - 1;
        self.sealed_through = seq - 1;
        self.head = prev;
        self.first_seq = seq;
        if self.options.from_seq == 0 {
            self.unpruned = Some((seq - 1, prev));
        }
    }

    /// Takes a record that chains correctly; checks what its kind implies.
    fn accept(&mut self, record: &Record, hash: [u8; 32]) -> Result<(), Damage> {
        match record.kind.as_str() {
            "audit.opened" => {
                let hex = record.details["host_public_key"]
                    .as_str()
                    .unwrap_or_default();
                self.logged_key = PublicKey::from_hex(hex).ok();
            }
            "audit.recovered" => self.recoveries.push(record.seq),
            "audit.checkpoint" => self.check_checkpoint(record)?,
            "audit.segment" => {
                if self.logged_key.is_none() {
                    let hex = record.details["public_key"].as_str().unwrap_or_default();
                    self.logged_key = PublicKey::from_hex(hex).ok();
                }
                self.check_checkpoint(record)?;
            }
            "audit.pruned" => {
                if let Some((through, hash)) = self.unpruned
                    && record.details["last_seq"].as_u64() == Some(through)
                    && record.details["head"].as_str() == Some(hex::encode(hash).as_str())
                {
                    self.unpruned = None;
                }
            }
            _ => {}
        }
        self.closed = record.kind == "audit.checkpoint" && record.details["reason"] == "shutdown";
        self.records = record.seq;
        self.head = hash;
        Ok(())
    }

    /// The checks at the end of the file: the log reaches the signed head
    /// and the minimum asked for, holds records, and ends sealed (unless an
    /// open tail is allowed). Returns the report.
    fn finish(self, line_no: u64) -> Result<VerifyReport, AuditError> {
        let options = self.options;
        let fail = |seq, line, damage| {
            AuditError::Verify(VerifyFailure {
                seq,
                line,
                damage,
                segment: None,
            })
        };
        let next = self.records + 1;
        if let Some(head) = &options.head
            && self.records < head.checkpoint_seq()
        {
            let damage = Damage::EndsBeforeHead {
                last_seq: self.records,
                head_seq: head.seq(),
            };
            return Err(fail(next, line_no, damage));
        }
        if self.records < options.min_seq {
            let damage = Damage::EndsBeforeMinSeq {
                last_seq: self.records,
                min_seq: options.min_seq,
            };
            return Err(fail(next, line_no, damage));
        }
        if self.records == 0 {
            return Err(fail(0, 0, Damage::Empty));
        }
        if let Some((through, _)) = self.unpruned {
            return Err(fail(1, 0, Damage::UnprunedGap { through }));
        }
        if !self.closed && !options.allow_open_tail {
            let damage = Damage::UnsealedTail {
                last_checkpoint: self.last_checkpoint,
                last_seq: self.records,
            };
            let seq = self.last_checkpoint.map_or(1, |cp| cp + 1);
            return Err(fail(seq, line_no, damage));
        }
        Ok(VerifyReport {
            records: self.records,
            checkpoints: self.checkpoints,
            head: hex::encode(self.head),
            last_checkpoint: self.last_checkpoint,
            unsealed: self.records - self.sealed_through,
            key_id: self.key_used,
            key_pinned: options.key.is_some(),
            recoveries: self.recoveries,
            signed_head: self.signed_head,
            first_seq: self.first_seq,
            files: self.files,
        })
    }

    fn check_checkpoint(&mut self, record: &Record) -> Result<(), Damage> {
        let details = &record.details;
        let covers = details["covers"]
            .as_u64()
            .ok_or_else(|| Damage::BadCheckpoint("no `covers`".into()))?;
        if covers + 1 != record.seq {
            return Err(Damage::BadCheckpoint(format!(
                "covers seq {covers}, but it stands at seq {}",
                record.seq
            )));
        }
        if details["head"].as_str() != Some(record.prev.as_str()) {
            return Err(Damage::BadCheckpoint(
                "its head is not the hash of the record before it".into(),
            ));
        }
        let key_id = details["key_id"].as_str().unwrap_or_default();
        let signature = details["signature"]
            .as_str()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| Damage::BadCheckpoint("no signature".into()))?;
        let key = match (&self.options.key, &self.logged_key) {
            (Some(pinned), _) => pinned,
            (None, Some(logged)) => logged,
            (None, None) => {
                return Err(Damage::BadCheckpoint(
                    "no host key: none was given and no audit.opened record names one".into(),
                ));
            }
        };
        if key.id().as_str() != key_id {
            return Err(Damage::BadCheckpoint(format!(
                "signed by key {key_id}, expected {}",
                key.id()
            )));
        }
        let mut head = [0u8; 32];
        hex::decode_to_slice(&record.prev, &mut head)
            .map_err(|_| Damage::BadCheckpoint("bad head".into()))?;
        key.verify(&checkpoint_message(covers, &head), &signature)
            .map_err(|_| {
                Damage::BadCheckpoint(format!("signature by key {key_id} does not verify"))
            })?;
        let signature: [u8; 64] = signature
            .try_into()
            .map_err(|_| Damage::BadCheckpoint("bad signature".into()))?;
        self.signed_head = Some(SignedHead::new(covers, head, key.clone(), signature));
        self.key_used = Some(key.id().clone());
        self.checkpoints += 1;
        self.last_checkpoint = Some(record.seq);
        self.sealed_through = record.seq;
        Ok(())
    }
}

/// Explains a sequence number that is not the expected one.
fn classify_break(
    expected: u64,
    found: u64,
    (position, before_first): (usize, u64),
    claimed: &[Option<u64>],
    counts: &HashMap<u64, u32>,
) -> Damage {
    if counts.get(&found).copied().unwrap_or(0) > 1 {
        return Damage::Inserted(format!("sequence number {found} appears twice"));
    }
    let expected_later = claimed
        .iter()
        .skip(position + 1)
        .any(|s| *s == Some(expected));
    if !expected_later {
        // The expected record is nowhere: removed. Find how far the gap goes.
        let mut through = expected;
        while counts.get(&(through + 1)).is_none() && through + 1 < found {
            through += 1;
        }
        return Damage::Removed { through };
    }
    // The expected record exists further on. A permutation only moves
    // numbers that belong to the log; a number beyond the log's length
    // came from outside.
    let total = before_first + claimed.len() as u64;
    if found <= before_first || found > total {
        return Damage::Inserted(format!(
            "sequence number {found} does not belong in this log"
        ));
    }
    Damage::Reordered { found }
}

/// The `"seq":N` each line of `path` starts with (None when unreadable),
/// appended to `out`.
fn claimed_sequence_numbers(path: &Path, out: &mut Vec<Option<u64>>) -> Result<(), AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = LineReader::new(std::fs::File::open(path).map_err(io)?);
    while let Some((line, _)) = reader.next_line().map_err(io)? {
        let line = match line {
            Line::Complete(line) | Line::Torn(line) => line,
            Line::TooLong => b"",
        };
        let seq = line
            .strip_prefix(b"{\"seq\":")
            .map(|rest| {
                rest.iter()
                    .take_while(|b| b.is_ascii_digit())
                    .copied()
                    .collect::<Vec<u8>>()
            })
            .and_then(|digits| std::str::from_utf8(&digits).ok()?.parse().ok());
        out.push(seq);
    }
    Ok(())
}

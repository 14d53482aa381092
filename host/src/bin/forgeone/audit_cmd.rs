//! `forgeone audit verify|head|export|tail|prune`

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use forgeone::PublicKey;
use forgeone::audit::{
    self, AuditError, ExportFilter, ExportFormat, Followed, PruneRule, SignedHead, VerifyOptions,
};
use forgeone::cluster::Cluster;

use crate::util::{CmdResult, Failure, parse_time};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the hash chain, sequence and checkpoint signatures of a log.
    ///
    /// Prints `verified: N records, M checkpoints, head <hash>`, or the first
    /// bad sequence number and what is wrong there (edited, removed,
    /// reordered, inserted, bad checkpoint signature, tail truncated after the
    /// last checkpoint). Exits 1 when the log does not verify.
    Verify {
        /// The audit log (JSON Lines).
        #[arg(value_name = "LOG", required_unless_present = "nats")]
        log: Option<PathBuf>,
        /// Verify the chain of host --node from the cluster's audit stream
        /// at this NATS server instead (records after the last checkpoint
        /// are accepted: the host may be running). With LOG too, also
        /// check that LOG reaches as far as the stream: a local log cut
        /// back is caught.
        #[arg(long, value_name = "URL", requires = "node")]
        nats: Option<String>,
        /// The host whose records --nats verifies.
        #[arg(long, value_name = "ID", requires = "nats")]
        node: Option<String>,
        /// The host's public key (SPKI PEM). Without it, checkpoints are
        /// checked against the key the log itself names: that proves the log
        /// is intact, not who wrote it.
        #[arg(long, value_name = "HOST_PUB", env = "FORGEONE_HOST_PUB")]
        key: Option<PathBuf>,
        /// Accept records after the last checkpoint (a log still being
        /// written, or whose writer crashed).
        #[arg(long)]
        allow_open_tail: bool,
        /// A signed head the log must reach (the host's head file, e.g.
        /// `audit.head.json` beside the log, or a copy kept elsewhere):
        /// fails when the log ends before it or has another record there,
        /// which is how a log cut back to an earlier checkpoint shows.
        #[arg(long, value_name = "HEAD_FILE")]
        head: Option<PathBuf>,
        /// The least number of records the log must hold.
        #[arg(long, value_name = "N")]
        min_seq: Option<u64>,
        /// Verify only from the segment that holds record N on (the older
        /// segments are not read; the range starts at a signed
        /// `audit.segment` record). Default: every segment.
        #[arg(long, value_name = "N")]
        from_seq: Option<u64>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a log's latest signed head, as JSON, for keeping elsewhere.
    ///
    /// FILE is a head file (the one `run` and `up` keep beside the log, e.g.
    /// `audit.head.json`), or with `--from-log` a log, whose last
    /// checkpoint gives the head. The head's signature is checked (against
    /// the key it names, or the pinned --key) before it is printed. Keep it
    /// somewhere the host cannot rewrite; later, `audit verify LOG --head
    /// FILE` fails if the log was cut back before it.
    Head {
        /// The head file, or the log with --from-log.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// FILE is an audit log: take the head its last checkpoint signed
        /// (the log's chain is verified up to there).
        #[arg(long)]
        from_log: bool,
        /// The host's public key (SPKI PEM) the head must be signed by.
        #[arg(long, value_name = "HOST_PUB", env = "FORGEONE_HOST_PUB")]
        key: Option<PathBuf>,
        /// Write the head to FILE (atomically) instead of stdout.
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
    },
    /// Export records for review as JSON Lines or CSV (chain-checked while reading).
    Export {
        /// The audit log.
        #[arg(value_name = "LOG", required_unless_present = "nats")]
        log: Option<PathBuf>,
        /// Export every host's records from the cluster's audit stream at
        /// this NATS server instead, merged in time order, each with a
        /// `node` field (JSON Lines; the filters do not apply).
        #[arg(long, value_name = "URL", conflicts_with_all = ["since", "until", "kind", "output"])]
        nats: Option<String>,
        /// Output format. CSV has one column per common field and the details as JSON.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// Only records at or after T (RFC 3339, or a duration ago such as `2h`).
        #[arg(long, value_name = "T", value_parser = parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only records before T (RFC 3339, or a duration ago).
        #[arg(long, value_name = "T", value_parser = parse_time)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only kinds matching PATTERN (`*` matches anything: `container.*`, `*.failed`).
        #[arg(long, value_name = "PATTERN")]
        kind: Option<String>,
        /// Write to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Remove (or move away) a log's oldest sealed segments, on the record.
    ///
    /// Appends an `audit.pruned` record naming each segment removed (its
    /// first and last sequence numbers) and the hash of the last removed
    /// record, seals it with a checkpoint, and only then removes the files,
    /// so `audit verify` still proves the log whole from its first
    /// remaining record. Opens the log as its writer: it waits up to
    /// --lock-timeout while a host holds it. The active segment is never
    /// removed.
    Prune {
        /// The audit log (its active file; segments are in
        /// `<name>.segments/` beside it).
        #[arg(value_name = "LOG")]
        log: PathBuf,
        /// The host's signing key (PKCS#8 PEM): it signs the checkpoint
        /// that seals the prune record.
        #[arg(long, value_name = "KEY", env = "FORGEONE_HOST_KEY")]
        host_key: PathBuf,
        /// Keep the newest N sealed segments.
        #[arg(long, value_name = "N", conflicts_with_all = ["before_seq", "older_than"])]
        keep: Option<usize>,
        /// Remove the segments whose records are all before seq N.
        #[arg(long, value_name = "N", conflicts_with = "older_than")]
        before_seq: Option<u64>,
        /// Remove the segments sealed longer ago than DURATION (`30days`).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Move the segments into DIR instead of deleting them.
        #[arg(long, value_name = "DIR")]
        move_to: Option<PathBuf>,
        /// How long to wait while another process holds the log.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        lock_timeout: Duration,
    },
    /// Follow a log as it grows, pretty-printed (Ctrl-C to stop).
    Tail {
        /// The audit log.
        #[arg(value_name = "LOG")]
        log: PathBuf,
        /// Print what is there and exit instead of following.
        #[arg(long)]
        no_follow: bool,
        /// Start with only the last N records.
        #[arg(short = 'n', long, value_name = "N")]
        lines: Option<usize>,
        /// Only kinds matching PATTERN.
        #[arg(long, value_name = "PATTERN")]
        kind: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Verify {
            log,
            nats,
            node,
            key,
            allow_open_tail,
            head,
            min_seq,
            from_seq,
            json,
        } => {
            let mut options = VerifyOptions::new();
            options.allow_open_tail(allow_open_tail);
            if let Some(seq) = from_seq {
                options.from_seq(seq);
            }
            if let Some(path) = &key {
                options.key(PublicKey::from_file(path).map_err(Failure::input)?);
            }
            let mut required = None;
            if let Some(path) = &head {
                let head = SignedHead::from_file(path).map_err(audit_failure)?;
                required = Some(head.checkpoint_seq());
                options.head(head);
            }
            if let Some(n) = min_seq {
                options.min_seq(n);
                required = required.max(Some(n));
            }
            match (nats, node, log) {
                (Some(url), Some(node), log) => {
                    options.allow_open_tail(true);
                    verify_stream(&url, &node, log, &options, required, json)
                }
                (_, _, Some(log)) => verify(log, &options, required, json),
                _ => Err(Failure::input("give a LOG, or --nats URL --node ID")),
            }
        }
        Command::Head {
            file,
            from_log,
            key,
            output,
        } => head(file, from_log, key, output),
        Command::Export {
            log,
            nats,
            format,
            since,
            until,
            kind,
            output,
        } => {
            let log = match (nats, log) {
                (Some(url), _) => return export_stream(&url),
                (None, Some(log)) => log,
                (None, None) => return Err(Failure::input("give a LOG, or --nats URL")),
            };
            let mut filter = ExportFilter::new();
            if let Some(t) = since {
                filter.since(t);
            }
            if let Some(t) = until {
                filter.until(t);
            }
            if let Some(k) = kind {
                filter.kind(k);
            }
            let format = match format {
                Format::Jsonl => ExportFormat::Jsonl,
                Format::Csv => ExportFormat::Csv,
            };
            let summary = match &output {
                Some(path) => {
                    // Write next to the target and rename, so a failed export
                    // never leaves a half-written file that looks complete.
                    let tmp = path.with_extension("partial");
                    let mut file = std::io::BufWriter::new(
                        std::fs::File::create(&tmp)
                            .map_err(|e| Failure::input(format!("{}: {e}", tmp.display())))?,
                    );
                    let result = audit::export(&log, &mut file, format, &filter);
                    drop(file);
                    match result {
                        Ok(s) => {
                            std::fs::rename(&tmp, path)
                                .map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
                            s
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&tmp);
                            return Err(audit_failure(e));
                        }
                    }
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut lock = stdout.lock();
                    match audit::export(&log, &mut lock, format, &filter) {
                        Ok(summary) => summary,
                        // The reader went away (`| head`): not an error.
                        Err(AuditError::Output(e))
                            if e.kind() == std::io::ErrorKind::BrokenPipe =>
                        {
                            return Ok(ExitCode::SUCCESS);
                        }
                        Err(e) => return Err(audit_failure(e)),
                    }
                }
            };
            eprintln!("exported {} of {} records", summary.exported, summary.read);
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            log,
            no_follow,
            lines,
            kind,
        } => tail(log, no_follow, lines, kind),
        Command::Prune {
            log,
            host_key,
            keep,
            before_seq,
            older_than,
            move_to,
            lock_timeout,
        } => {
            let rule = match (keep, before_seq, older_than) {
                (Some(n), _, _) => PruneRule::KeepSegments(n),
                (_, Some(seq), _) => PruneRule::Before(seq),
                (_, _, Some(age)) => PruneRule::OlderThan(age),
                _ => {
                    return Err(Failure::input(
                        "say what to prune: --keep N, --before-seq N or --older-than DURATION",
                    ));
                }
            };
            prune(&log, &host_key, &rule, move_to.as_deref(), lock_timeout)
        }
    }
}

/// `audit prune`: opens the log as its writer, prunes, closes it.
fn prune(
    log: &std::path::Path,
    host_key: &std::path::Path,
    rule: &PruneRule,
    move_to: Option<&std::path::Path>,
    lock_timeout: Duration,
) -> CmdResult {
    let key = forgeone::SigningKey::from_file(host_key)
        .map_err(|e| Failure::input(format!("host key {e}")))?;
    let config = crate::util::audit_config(log, lock_timeout, 0);
    let audit = forgeone::audit::AuditLog::open(log, key, &config)
        .map_err(|e| Failure::input(crate::util::lock_failure(e)))?;
    let summary = audit.prune(rule, move_to).map_err(Failure::input);
    audit.close().map_err(Failure::input)?;
    let summary = summary?;
    if summary.removed.is_empty() {
        eprintln!("nothing to prune: no sealed segment matches");
        return Ok(ExitCode::SUCCESS);
    }
    for segment in &summary.removed {
        println!(
            "{} {} (seq {}..={})",
            if move_to.is_some() {
                "moved"
            } else {
                "removed"
            },
            segment.segment,
            segment.first_seq,
            segment.last_seq
        );
    }
    eprintln!(
        "recorded as audit.pruned at seq {} (last removed record's hash {})",
        summary.record_seq, summary.head
    );
    Ok(ExitCode::SUCCESS)
}

fn audit_failure(e: AuditError) -> Failure {
    match e {
        // A head whose signature does not verify is a failed check too.
        AuditError::Verify(_) | AuditError::Head { .. } => Failure::check(e),
        other => Failure::input(other),
    }
}

fn head(file: PathBuf, from_log: bool, key: Option<PathBuf>, output: Option<PathBuf>) -> CmdResult {
    let key = match &key {
        Some(path) => Some(PublicKey::from_file(path).map_err(Failure::input)?),
        None => None,
    };
    let head = if from_log {
        let mut options = VerifyOptions::new();
        options.allow_open_tail(true);
        if let Some(key) = &key {
            options.key(key.clone());
        }
        let report = audit::verify_file(&file, &options).map_err(audit_failure)?;
        report.signed_head.ok_or_else(|| {
            Failure::check(format!(
                "{}: no checkpoint yet, so no signed head",
                file.display()
            ))
        })?
    } else {
        SignedHead::from_file(&file).map_err(|e| match e {
            AuditError::Head { .. } => {
                Failure::check(format!("{e} (for an audit log, pass --from-log)"))
            }
            other => audit_failure(other),
        })?
    };
    if let Some(key) = &key
        && head.key_id() != key.id()
    {
        return Err(Failure::check(format!(
            "the head is signed by key {}, not by the pinned host key {}",
            head.key_id(),
            key.id()
        )));
    }
    match &output {
        Some(path) => head.write_to(path).map_err(Failure::input)?,
        None => print!("{}", head.to_json()),
    }
    eprintln!(
        "signed head: seq {} (sealed by the checkpoint at seq {}), hash {}, key {}",
        head.seq(),
        head.checkpoint_seq(),
        head.hash(),
        head.key_id()
    );
    Ok(ExitCode::SUCCESS)
}

/// Verifies `log`; `required` is the sequence number a signed head or
/// --min-seq made it reach, for the report.
fn cluster_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::input(format!("cannot start the async runtime: {e}")))
}

/// Verifies `node`'s chain as the cluster's audit stream holds it (copied
/// to a temporary file, as `audit verify` reads a log), and, with `local`,
/// that the local log is not behind the stream.
fn verify_stream(
    url: &str,
    node: &str,
    local: Option<PathBuf>,
    options: &VerifyOptions,
    required: Option<u64>,
    json: bool,
) -> CmdResult {
    let rt = cluster_runtime()?;
    let records = rt
        .block_on(async {
            let cluster = Cluster::connect(url, Duration::from_secs(5)).await?;
            cluster.audit_records(Some(node)).await
        })
        .map_err(Failure::input)?;
    if records.is_empty() {
        return Err(Failure::check(format!(
            "the audit stream at {url} holds no record of node `{node}`"
        )));
    }
    let stream_last = records.last().map_or(0, |r| r.seq);
    let tmp = std::env::temp_dir().join(format!(
        "forgeone-audit-{node}-{}.jsonl",
        uuid::Uuid::new_v4()
    ));
    let mut bytes = Vec::new();
    for r in &records {
        bytes.extend_from_slice(&r.line);
        bytes.push(b'\n');
    }
    std::fs::write(&tmp, &bytes).map_err(|e| Failure::input(format!("{}: {e}", tmp.display())))?;
    eprintln!(
        "{} records of `{node}` from the audit stream at {url}",
        records.len()
    );
    let result = verify(tmp.clone(), options, required, json);
    let _ = std::fs::remove_file(&tmp);
    let code = result?;
    if let Some(local) = local {
        let text = std::fs::read_to_string(&local)
            .map_err(|e| Failure::input(format!("{}: {e}", local.display())))?;
        let local_last = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["seq"].as_u64())
            .max()
            .unwrap_or(0);
        if local_last < stream_last {
            return Err(Failure::check(format!(
                "{} ends at seq {local_last}, but the audit stream holds `{node}`'s records up to seq {stream_last}: the local log was cut back",
                local.display()
            )));
        }
        eprintln!(
            "{} reaches seq {local_last}, the stream seq {stream_last}",
            local.display()
        );
    }
    Ok(code)
}

/// Every host's records from the audit stream, merged in time order, each
/// with its node.
fn export_stream(url: &str) -> CmdResult {
    let rt = cluster_runtime()?;
    let records = rt
        .block_on(async {
            let cluster = Cluster::connect(url, Duration::from_secs(5)).await?;
            cluster.audit_records(None).await
        })
        .map_err(Failure::input)?;
    let mut rows: Vec<(
        chrono::DateTime<chrono::Utc>,
        String,
        u64,
        serde_json::Value,
    )> = Vec::new();
    for r in records {
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&r.line) else {
            continue;
        };
        let ts = value["ts"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        value["node"] = serde_json::Value::String(r.node.clone());
        rows.push((ts, r.node, r.seq, value));
    }
    rows.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (_, _, _, value) in &rows {
        if writeln!(out, "{value}").is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    eprintln!(
        "exported {} records from the audit stream at {url}",
        rows.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(log: PathBuf, options: &VerifyOptions, required: Option<u64>, json: bool) -> CmdResult {
    match audit::verify_file(&log, options) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "verified": true,
                        "records": report.records,
                        "checkpoints": report.checkpoints,
                        "head": report.head,
                        "unsealed": report.unsealed,
                        "key_id": report.key_id,
                        "key_pinned": report.key_pinned,
                        "recoveries": report.recoveries,
                        "signed_head_seq": report.signed_head.as_ref().map(SignedHead::seq),
                        "first_seq": report.first_seq,
                        "files": report.files,
                    })
                );
            } else {
                println!(
                    "verified: {} records, {} checkpoints, head {}",
                    report.records, report.checkpoints, report.head
                );
                if report.files > 1 || report.first_seq > 1 {
                    eprintln!(
                        "note: {} files (sealed segments and the active one), from seq {}",
                        report.files, report.first_seq
                    );
                }
                if let (false, Some(id)) = (report.key_pinned, &report.key_id) {
                    eprintln!(
                        "note: checkpoints were checked against key {id}, named by the log itself; pass --key HOST_PUB to pin the host key"
                    );
                }
                if let Some(seq) = required {
                    eprintln!(
                        "note: the log reaches seq {seq}, as the signed head or --min-seq requires"
                    );
                }
                if report.unsealed > 0 {
                    eprintln!(
                        "note: the last {} records are not yet sealed by a checkpoint",
                        report.unsealed
                    );
                }
                for seq in &report.recoveries {
                    eprintln!("note: seq {seq} records a crash recovery (audit.recovered)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(AuditError::Verify(failure)) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"verified": false, "seq": failure.seq, "line": failure.line, "reason": failure.to_string()})
                );
                Ok(ExitCode::from(1))
            } else {
                Err(Failure::check(format!("FAILED at {failure}")))
            }
        }
        Err(other) => Err(Failure::input(other)),
    }
}

fn tail(log: PathBuf, no_follow: bool, lines: Option<usize>, kind: Option<String>) -> CmdResult {
    let mut follower = audit::Follower::open(&log).map_err(Failure::input)?;
    let mut first = follower.poll().map_err(Failure::input)?;
    if let Some(n) = lines {
        let records = first
            .iter()
            .filter(|f| matches!(f, Followed::Record(_)))
            .count();
        let mut skip = records.saturating_sub(n);
        first.retain(|f| match f {
            Followed::Record(_) if skip > 0 => {
                skip -= 1;
                false
            }
            _ => true,
        });
    }
    let stdout = std::io::stdout();
    let print = |items: Vec<Followed>| -> std::io::Result<()> {
        let mut out = stdout.lock();
        for item in items {
            match item {
                Followed::Record(record) => {
                    if kind
                        .as_deref()
                        .is_some_and(|p| !audit::kind_matches(p, &record.kind))
                    {
                        continue;
                    }
                    writeln!(out, "{}", render(&record))?;
                }
                Followed::Broken { line, reason } => {
                    writeln!(out, "!!! line {line} does not verify: {reason}")?;
                }
                _ => {}
            }
        }
        out.flush()
    };
    // The reader going away (`| head`) ends the command quietly.
    let printed = |result: std::io::Result<()>| match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::input(e)),
    };
    if !printed(print(first))? || no_follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let items = follower.poll().map_err(Failure::input)?;
        if !items.is_empty() && !printed(print(items))? {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// One record on one line: seq, time, kind, actor, subjects, details.
fn render(record: &audit::Record) -> String {
    let esc = audit::escape_untrusted;
    let mut line = format!(
        "{:>6}  {}  {:<28}",
        record.seq,
        record.ts.format("%Y-%m-%d %H:%M:%S%.3f"),
        esc(&record.kind)
    );
    if let Some(actor) = &record.actor {
        let who = match &actor.tenant {
            Some(tenant) => format!("{}/{}", tenant, actor.principal),
            None => actor.principal.clone(),
        };
        line.push_str(&format!("  by {}", esc(&who)));
    }
    let s = &record.subjects;
    for (name, value) in [
        ("workload", &s.workload),
        ("container", &s.container),
        ("component", &s.component),
        ("node", &s.node),
    ] {
        if let Some(v) = value {
            let v = if name == "component" && v.len() > 12 {
                &v[..12]
            } else {
                v.as_str()
            };
            line.push_str(&format!("  {name}={}", esc(v)));
        }
    }
    if record.details.as_object().is_some_and(|o| !o.is_empty()) {
        // serde_json escapes control characters, so this cannot drive the terminal.
        line.push_str(&format!("  {}", record.details));
    }
    line
}

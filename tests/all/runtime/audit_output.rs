//! A guest cannot amplify itself into the audit log: output is audited in
//! chunks, each run has a budget of audit bytes, and guest-supplied strings
//! are capped where the host receives them, with a marker.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// A sink counting the lines of each stream (a million lines would not fit
/// a collector comfortably).
fn counter() -> (OutputSink, Arc<[AtomicU64; 2]>) {
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let sink_counts = counts.clone();
    let sink = OutputSink::new(move |line| {
        let i = usize::from(line.stream != Stream::Stdout);
        sink_counts[i].fetch_add(1, Ordering::Relaxed);
    });
    (sink, counts)
}

fn chatty(args: &[&str]) -> ContainerConfig {
    let mut config = ContainerConfig::new(component(guests::CHATTY));
    for arg in args {
        config.arg(*arg);
    }
    config
}

fn log_size(h: &Harness) -> u64 {
    h.log.flush().unwrap();
    std::fs::metadata(&h.log_path).unwrap().len()
}

/// At most one record per full 16 KiB chunk, plus one per 100 ms of the
/// run (the age cut) and per stream at the end.
fn chunk_bound(bytes: u64, outcome: &forgeone::runtime::Outcome) -> usize {
    let ticks = outcome.stats.wall_time.as_millis() as u64 / 100 + 1;
    (bytes.div_ceil(16 * 1024) + ticks + 2) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_of_bare_newlines_is_a_few_bounded_records() {
    const MIB: u64 = 1024 * 1024;
    // With a budget large enough for all of it: every byte is audited, in
    // records of at most 16 KiB instead of one per line.
    let h = Harness::new(|_| {});
    let (sink, counts) = counter();
    let mut config = chatty(&["newlines", "1048576"]);
    config.max_audit_bytes(8 * MIB).output(sink);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert!(outcome.is_success(), "{outcome}");
    // The caller still sees every line.
    assert_eq!(counts[0].load(Ordering::Relaxed), MIB);
    let records = h.records();
    let (text, chunks) = audited_output(&records, "stdout");
    assert_eq!(text, "\\n".repeat(MIB as usize), "every newline, in order");
    assert!(chunks >= 64, "{chunks}");
    assert!(chunks <= chunk_bound(MIB, &outcome), "{chunks} records");
    assert!(h.records_of("container.output_dropped").is_empty());
    // About 3 bytes a newline (escaped, then JSON) and a few records.
    assert!(log_size(&h) < 4 * MIB, "{} bytes", log_size(&h));

    // With the default budget (1 MiB of audit bytes a run): what is over
    // it is counted, not written, and one record at the end says so.
    let h = Harness::new(|_| {});
    let (sink, counts) = counter();
    let mut config = chatty(&["newlines", "1048576"]);
    config.output(sink);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert!(outcome.is_success(), "{outcome}");
    assert_eq!(
        counts[0].load(Ordering::Relaxed),
        MIB,
        "output is unchanged"
    );
    let records = h.records();
    let (text, chunks) = audited_output(&records, "stdout");
    assert!(chunks <= chunk_bound(MIB / 2, &outcome), "{chunks} records");
    let dropped = h.records_of("container.output_dropped");
    assert_eq!(dropped.len(), 1, "{dropped:#?}");
    let d = &dropped[0]["details"];
    assert_eq!(d["budget_bytes"], MIB);
    let audited_bytes = text.len() as u64 / 2;
    assert_eq!(d["stdout_bytes"].as_u64().unwrap() + audited_bytes, MIB);
    assert_eq!(
        (d["stderr_bytes"].as_u64(), d["log_lines"].as_u64()),
        (Some(0), Some(0))
    );
    // The dropped record comes after the output, before the run's end.
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    let at = |kind| kinds.iter().position(|k| *k == kind).unwrap();
    assert!(
        at("container.output_dropped")
            > kinds
                .iter()
                .rposition(|k| *k == "container.output")
                .unwrap()
    );
    assert!(at("container.output_dropped") < at("container.exited"));
    assert!(log_size(&h) < 2 * MIB, "{} bytes", log_size(&h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_past_the_budget_are_counted_not_written() {
    let h = Harness::new(|_| {});
    let (sink, counts) = counter();
    let mut config = chatty(&["log-flood", "3000"]);
    config.max_audit_bytes(256 * 1024).output(sink);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    assert!(h.runtime.wait(id).await.unwrap().is_success());
    // Each 1 KiB line costs its text and 512 bytes of envelope: 170 fit.
    let written = h.records_of("container.log").len() as u64;
    assert_eq!(written, 256 * 1024 / (1024 + 512));
    let dropped = h.records_of("container.output_dropped");
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0]["details"]["log_lines"], 3000 - written);
    // The caller still got every line.
    assert_eq!(counts[1].load(Ordering::Relaxed), 3000);
    assert!(log_size(&h) < 512 * 1024, "{} bytes", log_size(&h));
}

fn marker(dropped: usize) -> String {
    format!("…[forgeone: {dropped} more bytes truncated]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_line_is_capped_at_8_kib_and_32_fields_of_1_kib() {
    let h = Harness::new(|_| {});
    let (sink, lines) = collector();
    let mut config = chatty(&["log-caps"]);
    config.output(sink);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    assert!(h.runtime.wait(id).await.unwrap().is_success());
    let logs = h.records_of("container.log");
    assert_eq!(logs.len(), 1);
    let d = &logs[0]["details"];
    let message = d["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!("{}{}", "m".repeat(8192), marker(100_000 - 8192))
    );
    let fields = d["fields"].as_array().unwrap();
    assert_eq!(
        fields.len(),
        32 + 1,
        "32 kept and one saying what was dropped"
    );
    for (i, field) in fields[..32].iter().enumerate() {
        let key = format!("k{i:02}{}", "k".repeat(1_497));
        assert_eq!(
            field[0],
            format!("{}{}", &key[..1024], marker(1_500 - 1024))
        );
        assert_eq!(
            field[1],
            format!("{}{}", "v".repeat(1024), marker(2_000 - 1024))
        );
    }
    assert_eq!(fields[32][0], "forgeone.truncated");
    assert_eq!(fields[32][1], "8 more fields dropped");
    // Capped at the source: the caller sees the same capped line.
    let lines = lines.lock().unwrap();
    let line = lines.iter().find(|l| l.stream == Stream::Log).unwrap();
    assert!(
        line.text
            .starts_with(&format!("[warn] {}{}", "m".repeat(8192), marker(91_808)))
    );
    assert!(line.text.len() < 8192 + 33 * 2200, "{}", line.text.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtrace_frame_name_is_capped_at_512_bytes() {
    let h = Harness::new(|_| {});
    let id = h
        .runtime
        .launch_container(chatty(&["long-name-trap"]), identity())
        .unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    let Failure::Trap { backtrace, .. } = failure(&outcome.end) else {
        panic!("expected a trap, got {outcome:?}");
    };
    let frame = backtrace
        .iter()
        .find(|f| f.contains("a_function_whose_name_comes_from_the_guests_own_name_section"))
        .unwrap_or_else(|| panic!("{backtrace:#?}"));
    let (kept, rest) = frame.split_once('…').unwrap();
    assert_eq!(kept.len(), 512, "{frame}");
    assert!(rest.starts_with("[forgeone: ") && rest.ends_with(" more bytes truncated]"));
    // The same in the audit record.
    let failed = h.records_of("container.failed");
    let frames = failed[0]["details"]["backtrace"].as_array().unwrap();
    assert!(frames.iter().any(|f| f == frame.as_str()));
    assert!(frames.iter().all(|f| f.as_str().unwrap().len() <= 512 + 64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_name_and_version_are_capped_at_256_bytes() {
    let h = Harness::new(|_| {});
    let plugin = h
        .runtime
        .load_plugin(
            &component(guests::BOASTFUL_PLUGIN),
            identity(),
            Limits::default(),
        )
        .await
        .unwrap();
    let name = format!("{}{}", "b".repeat(256), marker(1_000 - 256));
    let version = format!("1.0.0-{}{}", "v".repeat(250), marker(1_000 - 256));
    assert_eq!(
        (&plugin.info().name, &plugin.info().version),
        (&name, &version)
    );
    assert_eq!(plugin.describe().await.unwrap().name, name);
    let loaded = h.records_of("container.plugin.loaded");
    assert_eq!(loaded[0]["details"]["name"], name);
    assert_eq!(loaded[0]["details"]["version"], version);
    // It still works.
    let echoed = plugin.call("echo", Value::Integer(7)).await.unwrap();
    assert!(matches!(echoed, Ok(Value::Integer(7))), "{echoed:?}");
}

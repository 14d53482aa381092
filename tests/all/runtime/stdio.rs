//! Standard I/O: every byte of stdout to the caller's byte sink, exactly
//! and with back-pressure, while the kept copy and the audit log stay
//! bounded; terminal escaping; stdin grants, recorded in
//! `container.created`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use forgeone::runtime::{ByteSink, StdinGrant};
use tokio::io::AsyncWrite;

use super::*;

/// A writer collecting every byte; optionally slow (one `Pending` before
/// each write, and at most 1 KiB a write), checking at every write how far
/// the guest has run ahead of it.
#[derive(Clone, Default)]
struct Collect {
    bytes: Arc<Mutex<Vec<u8>>>,
    slow: Option<Ahead>,
}

/// For a slow writer: the bytes the guest has written so far (counted by
/// the line sink), and the most it was ever ahead of the writer.
#[derive(Clone, Default)]
struct Ahead {
    written: Arc<AtomicU64>,
    most: Arc<AtomicU64>,
    flip: Arc<Mutex<bool>>,
}

impl Collect {
    fn bytes(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

impl AsyncWrite for Collect {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut out = self.bytes.lock().unwrap();
        let take = match &self.slow {
            None => buf.len(),
            Some(ahead) => {
                let mut flip = ahead.flip.lock().unwrap();
                *flip = !*flip;
                if *flip {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let by = ahead
                    .written
                    .load(Ordering::SeqCst)
                    .saturating_sub(out.len() as u64);
                ahead.most.fetch_max(by, Ordering::SeqCst);
                buf.len().min(1024)
            }
        };
        out.extend_from_slice(&buf[..take]);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A writer that fails every write with `kind`, or never takes a byte.
enum Broken {
    Fails(io::ErrorKind),
    Stuck,
}

impl AsyncWrite for Broken {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        match *self {
            Broken::Fails(kind) => Poll::Ready(Err(io::Error::from(kind))),
            Broken::Stuck => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs `cat` with `stdin` and its stdout into a collecting sink.
async fn cat(h: &Harness, stdin: StdinGrant) -> (Outcome, Vec<u8>) {
    let out = Collect::default();
    let mut config = ContainerConfig::new(component(guests::CAT));
    config.stdin(stdin).stdout(ByteSink::new(out.clone()));
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    (outcome, out.bytes())
}

fn stdin_grant_recorded(h: &Harness) -> Json {
    let created = h.records_of("container.created");
    created.last().unwrap()["details"]["capabilities"]["stdin"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_sink_gets_all_output_while_the_kept_copy_is_capped() {
    let h = Harness::new(|_| {});
    let out = Collect::default();
    let (lines, kept) = collector();
    let mut config = ContainerConfig::new(component(guests::STDOUT_FLOOD));
    config
        .max_output(64 * 1024)
        .output(lines)
        .stdout(ByteSink::new(out.clone()));
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(outcome.end, RunEnd::Success, "{outcome:?}");
    // Every one of the 64 MiB, exactly, in order.
    let bytes = out.bytes();
    assert_eq!(bytes.len(), 64 << 20);
    let line = format!("{}\n", "F".repeat(63));
    assert!(bytes.chunks(64).all(|l| l == line.as_bytes()));
    // The kept copy (the line view and the audit log) stops at the limit.
    assert_eq!(outcome.stats.output_bytes, 64 << 20);
    assert!(outcome.stats.output_truncated);
    let kept: usize = kept
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.text.len() + 1)
        .sum();
    assert_eq!(kept, 64 * 1024);
    let (text, _) = audited_output(&h.records(), "stdout");
    assert_eq!(text, format!("{}\\n", "F".repeat(63)).repeat(1024));
    assert_eq!(h.records_of("container.output_truncated").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_holds_the_guest_back_and_loses_nothing() {
    let h = Harness::new(|_| {});
    let ahead = Ahead::default();
    let out = Collect {
        slow: Some(ahead.clone()),
        ..Collect::default()
    };
    // What the guest has written so far: the line view sees every line
    // (the kept limit is above the input).
    let written = ahead.written.clone();
    let lines = OutputSink::new(move |line| {
        if line.stream == Stream::Stdout {
            written.fetch_add(line.text.len() as u64 + 1, Ordering::SeqCst);
        }
    });
    let input: Vec<u8> = (0..32 * 1024u32)
        .flat_map(|i| format!("{i:063}\n").into_bytes())
        .collect();
    assert_eq!(input.len(), 2 << 20);
    let mut config = ContainerConfig::new(component(guests::CAT));
    config
        .max_output(4 << 20)
        .output(lines)
        .stdin(StdinGrant::bytes(input.clone()))
        .stdout(ByteSink::new(out.clone()));
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(out.bytes(), input);
    // The guest never got further ahead than what the host buffers (64 KiB
    // accepted, and one batch of as much being written), not 2 MiB.
    let most = ahead.most.load(Ordering::SeqCst);
    assert!(most > 0, "the writer never lagged");
    assert!(
        most <= 128 * 1024 + 4096,
        "the guest ran {most} bytes ahead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_fails_the_guests_write_and_a_stuck_one_meets_the_deadline() {
    let h = Harness::new(|_| {});
    for kind in [io::ErrorKind::BrokenPipe, io::ErrorKind::StorageFull] {
        // More than the host buffers: the guest's next write fails, and cat
        // exits 1 when a write fails.
        let mut config = ContainerConfig::new(component(guests::CAT));
        config
            .stdin(StdinGrant::bytes(vec![b'x'; 256 * 1024]))
            .stdout(ByteSink::new(Broken::Fails(kind)));
        let id = h.runtime.launch_container(config, identity()).unwrap();
        let outcome = h.runtime.wait(id).await.unwrap();
        assert_eq!(outcome.exit_code(), Some(1), "{kind:?}: {outcome:?}");
        let failed = outcome.stats.sink_failure.expect("the failure is reported");
        assert_eq!(failed.stream, "stdout");
        assert_eq!(failed.broken_pipe, kind == io::ErrorKind::BrokenPipe);
        assert!(failed.lost_bytes > 0);
        assert!(
            failed.error.contains(&io::Error::from(kind).to_string()),
            "{failed:?}"
        );
        // Less than that: the guest's only write may have been accepted
        // before the sink failed (then it exits 0), but the loss is
        // reported either way, not silent.
        let mut config = ContainerConfig::new(component(guests::CAT));
        config
            .stdin(StdinGrant::bytes(b"more than nothing".to_vec()))
            .stdout(ByteSink::new(Broken::Fails(kind)));
        let id = h.runtime.launch_container(config, identity()).unwrap();
        let outcome = h.runtime.wait(id).await.unwrap();
        let failed = outcome.stats.sink_failure.expect("the loss is reported");
        assert_eq!(failed.lost_bytes, 17);
    }
    // A reader that never reads holds the guest until its deadline, and
    // the outcome says the deadline ended it.
    let mut config = ContainerConfig::new(component(guests::CAT));
    config
        .timeout(Some(Duration::from_millis(500)))
        .stdin(StdinGrant::bytes(vec![b'x'; 256 * 1024]))
        .stdout(ByteSink::new(Broken::Stuck));
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(
        failure(&outcome.end),
        &Failure::Deadline { timeout_ms: 500 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_sink_escapes_only_what_controls_the_terminal() {
    let h = Harness::new(|_| {});
    let out = Collect::default();
    let mut config = ContainerConfig::new(component(guests::ANSI_OUTPUT));
    config.stdout(ByteSink::terminal(out.clone()));
    let id = h.runtime.launch_container(config, identity()).unwrap();
    assert!(h.runtime.wait(id).await.unwrap().is_success());
    assert_eq!(
        String::from_utf8(out.bytes()).unwrap(),
        "\\x1b[31mred alert\\x1b[0m\n\\x1b]0;pwned-title\x07\n\\x1b[2J\\x1b[Hcleared the \
         screen\n\\u{202e}evil bidi text\n"
    );
    // Exact bytes through the same guest with a plain sink, tabs,
    // backslashes, invalid UTF-8 and a missing final newline included.
    let input = b"caf\xe9 \\ \t \x1b[0m no newline".to_vec();
    let (outcome, bytes) = cat(&h, StdinGrant::bytes(input.clone())).await;
    assert!(outcome.is_success());
    assert_eq!(bytes, input);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_nothing_unless_granted_and_each_grant_is_recorded() {
    let h = Harness::new(|_| {});
    let (outcome, bytes) = cat(&h, StdinGrant::None).await;
    assert!(outcome.is_success());
    assert!(bytes.is_empty());
    assert_eq!(stdin_grant_recorded(&h), "none");

    let input = b"line one\nline two, no newline \xff".to_vec();
    let file = h.dir.path().join("input.txt");
    std::fs::write(&file, &input).unwrap();
    let (outcome, bytes) = cat(&h, StdinGrant::File(file.clone())).await;
    assert!(outcome.is_success());
    assert_eq!(bytes, input);
    assert_eq!(
        stdin_grant_recorded(&h),
        serde_json::json!({ "file": file.to_str().unwrap() })
    );

    let (_, bytes) = cat(&h, StdinGrant::bytes(input.clone())).await;
    assert_eq!(bytes, input);
    let recorded = stdin_grant_recorded(&h);
    assert_eq!(recorded["bytes"]["len"], input.len());
    assert_eq!(
        recorded["bytes"]["blake3"],
        blake3::hash(&input).to_hex().as_str()
    );

    // What cannot be read as a file is refused before the guest starts,
    // naming the path and the reason.
    for (path, reason) in [
        (h.dir.path().to_path_buf(), "it is a directory"),
        (h.dir.path().join("missing"), "No such file"),
    ] {
        let (outcome, _) = cat(&h, StdinGrant::File(path.clone())).await;
        let Failure::Instantiate { message } = failure(&outcome.end) else {
            panic!("{outcome:?}");
        };
        let named = format!("cannot grant {} as standard input: ", path.display());
        assert!(message.contains(&named), "{message}");
        assert!(message.contains(reason), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_keep_their_order_through_a_slow_shared_writer() {
    let h = Harness::new(|_| {});
    // One slow writer behind both streams: what it receives, in order, is
    // the order the guest wrote in.
    let out = Collect {
        slow: Some(Ahead::default()),
        ..Collect::default()
    };
    let mut config = ContainerConfig::new(component(guests::CHATTY));
    config
        .arg("interleave")
        .arg("500")
        .stdout(ByteSink::new(out.clone()))
        .stderr(ByteSink::new(out.clone()));
    let id = h.runtime.launch_container(config, identity()).unwrap();
    assert!(h.runtime.wait(id).await.unwrap().is_success());
    let expected: String = (0..500).map(|i| format!("out {i}\nerr {i}\n")).collect();
    assert_eq!(String::from_utf8(out.bytes()).unwrap(), expected);
}

//! File I/O: a file-heavy guest (`fs-grep`, a small ripgrep) reads a
//! granted tree correctly.

use super::*;

const NEEDLE: &str = "NEEDLE";

/// A tree under `root/data` that exercises reads: nested directories, a
/// line straddling the guest's 64 KiB read boundary, a line longer than
/// its buffer, an empty file, a binary file (skipped) and a symbolic link
/// (not followed while walking). Returns the `path:line` lines the guest
/// must print, sorted, and how many files it reads.
fn tree(root: &Path) -> (Vec<String>, usize) {
    let data = root.join("data");
    std::fs::create_dir_all(data.join("a/b/c")).unwrap();
    std::fs::create_dir_all(data.join("empty-dir")).unwrap();
    let mut expected = Vec::new();
    let mut files = 0;
    let mut write = |rel: &str, bytes: &[u8]| {
        std::fs::write(data.join(rel), bytes).unwrap();
        files += 1;
    };
    write("top.txt", b"no match here\nfirst NEEDLE line\nnone\n");
    expected.push("/data/top.txt:first NEEDLE line".to_string());
    // The needle's line starts before the 64 KiB boundary and ends after.
    let mut big = "x".repeat(64 * 1024 - 10);
    big.push('\n');
    let straddling = format!("before {NEEDLE} after");
    big.push_str(&straddling);
    big.push_str("\ntail without a newline NEEDLE");
    write("a/big.txt", big.as_bytes());
    expected.push(format!("/data/a/big.txt:{straddling}"));
    expected.push("/data/a/big.txt:tail without a newline NEEDLE".to_string());
    // One line of 200 KiB with the needle near its end.
    // (The output capture splits it into lines of at most `max_line`:
    // only its start is compared.)
    let long = format!("{}{NEEDLE}!", "y".repeat(200 * 1024));
    write("a/b/long.txt", format!("short\n{long}\n").as_bytes());
    expected.push("/data/a/b/long.txt:yyyyyyyy".to_string());
    // Two matches on one line are one matching line.
    write("a/b/c/deep.txt", b"NEEDLE and NEEDLE\n");
    expected.push("/data/a/b/c/deep.txt:NEEDLE and NEEDLE".to_string());
    write("a/b/c/empty.txt", b"");
    // Binary: read (its bytes counted) but not searched.
    write("a/bin.dat", b"\0\x01NEEDLE\n");
    // Not followed: only `top.txt` itself is read.
    std::os::unix::fs::symlink("top.txt", data.join("link.txt")).unwrap();
    expected.sort();
    (expected, files)
}

/// Runs `fs-grep ARGS..` with `root/data` granted read-only at `/data`.
async fn fs_grep(
    h: &Harness,
    root: &Path,
    args: &[&str],
    configure: impl FnOnce(&mut ContainerConfig),
) -> (Outcome, Vec<String>) {
    let (sink, lines) = collector();
    let mut config = ContainerConfig::new(component(guests::FS_GREP));
    config
        .grant_dir(DirGrant::new(root.join("data"), "/data", true))
        .output(sink);
    for arg in args {
        config.arg(*arg);
    }
    configure(&mut config);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    (outcome, texts(&lines))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_heavy_guest_reads_every_file_of_a_granted_tree() {
    let h = Harness::new(|_| {});
    let (expected, files) = tree(h.dir.path());
    let (outcome, mut out) = fs_grep(&h, h.dir.path(), &[NEEDLE, "/data"], |_| {}).await;
    assert!(outcome.is_success(), "{outcome:?}\n{out:#?}");
    let summary = out.pop().unwrap();
    let total: u64 = walk_bytes(&h.dir.path().join("data"));
    assert_eq!(
        summary,
        format!(
            "fs-grep: {files} files, {total} bytes, {} matching lines, 0 errors",
            expected.len()
        )
    );
    // Every matching line, the long one cut to its start; the rest of it
    // came as lines of `y`s.
    let (mut found, rest): (Vec<String>, Vec<String>) =
        out.into_iter().partition(|l| l.starts_with("/data/"));
    for line in &mut found {
        if line.starts_with("/data/a/b/long.txt:") {
            line.truncate("/data/a/b/long.txt:yyyyyyyy".len());
        }
    }
    found.sort();
    assert_eq!(found, expected);
    let tail = rest.concat();
    assert!(tail.ends_with("yyyNEEDLE!") && tail.trim_start_matches('y') == "NEEDLE!");
}

/// Bytes of the regular files under `dir` (links not followed).
fn walk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                walk_bytes(&e.path())
            } else if kind.is_file() {
                e.metadata().unwrap().len()
            } else {
                0
            }
        })
        .sum()
}

// ---------------------------------------------------------------------------
// Where file calls run: on the guest's thread, and still bounded.

/// `count` small files under `root/data`, two of them holding the needle.
fn many_files(root: &Path, count: usize) {
    for i in 0..count {
        let dir = root.join(format!("data/d{}", i % 8));
        std::fs::create_dir_all(&dir).unwrap();
        let text = if i % 100 == 0 {
            format!("file {i}\n{NEEDLE}\n")
        } else {
            format!("file {i}\nnothing here\n")
        };
        std::fs::write(dir.join(format!("f{i}.txt")), text).unwrap();
    }
}

/// `fs-grep ARGS..` over `root/data` (granted read-only at `/data`),
/// with file calls where `file_io` says (by default when `None`).
fn grep_config(root: &Path, args: &[&str], file_io: Option<FileIo>) -> ContainerConfig {
    let mut config = ContainerConfig::new(component(guests::FS_GREP));
    config.grant_dir(DirGrant::new(root.join("data"), "/data", true));
    if let Some(file_io) = file_io {
        config.file_io(file_io);
    }
    for arg in args {
        config.arg(*arg);
    }
    config
}

/// Runs `config` on this thread (a current-thread runtime polls the
/// guest here).
fn run_here(h: &Harness, config: ContainerConfig) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let prepared = h.runtime.prepare_container(config, identity()).unwrap();
    rt.block_on(prepared.into_future())
}

/// Runs `config` as [`run_here`] does, on a runtime whose blocking pool
/// has one thread, held by another task for the whole run: a call handed
/// to the pool waits until the run's deadline.
fn run_with_the_pool_held(h: &Harness, config: ContainerConfig) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started, running) = std::sync::mpsc::channel();
    rt.spawn_blocking(move || {
        started.send(()).unwrap();
        let _ = held.recv();
    });
    running.recv().unwrap();
    let prepared = h.runtime.prepare_container(config, identity()).unwrap();
    let outcome = rt.block_on(prepared.into_future());
    // The runtime waits for its pool when dropped.
    drop(release);
    outcome
}

#[test]
fn file_calls_run_on_the_guests_thread_without_the_blocking_pool() {
    const FILES: usize = 200;
    let h = Harness::new(|_| {});
    many_files(h.dir.path(), FILES);
    let args = ["--quiet", NEEDLE, "/data"];
    // Compiled first: the deadline counts compiling too.
    let first = run_here(&h, grep_config(h.dir.path(), &args, None));
    assert!(first.is_success(), "{first:?}");
    // By default (and with `FileIo::OnThread`) every open, read and
    // listing runs on the guest's thread: the search ends without the
    // pool. With `FileIo::BlockingPool` the first call waits for it.
    for file_io in [None, Some(FileIo::OnThread)] {
        let (sink, lines) = collector();
        let mut config = grep_config(h.dir.path(), &args, file_io);
        // Only a hang reaches it.
        config.output(sink).timeout(Some(Duration::from_secs(30)));
        let outcome = run_with_the_pool_held(&h, config);
        assert!(outcome.is_success(), "{file_io:?}: {outcome:?}");
        let out = texts(&lines);
        let summary = format!("fs-grep: {FILES} files, ");
        assert!(out[0].starts_with(&summary), "{out:?}");
    }
    let mut config = grep_config(h.dir.path(), &args, Some(FileIo::BlockingPool));
    config.timeout(Some(Duration::from_millis(500)));
    let outcome = run_with_the_pool_held(&h, config);
    assert_eq!(
        failure(&outcome.end),
        &Failure::Deadline { timeout_ms: 500 },
        "{outcome:?}"
    );
}

/// A tree of a few files for a guest to read over and over.
fn small_tree(root: &Path) {
    many_files(root, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_in_a_tight_file_read_loop_is_stopped_by_its_deadline() {
    // With fuel yields (the default), and with none: then only the epoch
    // check inside wasm, between two file calls, can end it.
    for yields in [Some(1_000_000), None] {
        let h = Harness::new(|c| {
            let mut engine = EngineConfig::new();
            engine.fuel_yield_interval(yields);
            c.engine(engine);
        });
        small_tree(h.dir.path());
        // Compiled first: the deadline counts compiling too.
        let warm = grep_config(h.dir.path(), &["--quiet", NEEDLE, "/data"], None);
        let id = h.runtime.launch_container(warm, identity()).unwrap();
        assert!(h.runtime.wait(id).await.unwrap().is_success());

        let args = ["--quiet", "--repeat", "0", NEEDLE, "/data"];
        let mut config = grep_config(h.dir.path(), &args, None);
        config.fuel(None).timeout(Some(Duration::from_millis(300)));
        let id = h.runtime.launch_container(config, identity()).unwrap();
        let outcome = h.runtime.wait(id).await.unwrap();
        assert_eq!(
            failure(&outcome.end),
            &Failure::Deadline { timeout_ms: 300 },
            "fuel yields {yields:?}: {outcome:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_in_a_tight_file_read_loop_runs_out_of_fuel() {
    let h = Harness::new(|_| {});
    small_tree(h.dir.path());
    let args = ["--quiet", "--repeat", "0", NEEDLE, "/data"];
    let mut config = grep_config(h.dir.path(), &args, None);
    config.fuel(Some(50_000_000)).timeout(None);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(
        failure(&outcome.end),
        &Failure::OutOfFuel { budget: 50_000_000 },
        "{outcome:?}"
    );
}

// ---------------------------------------------------------------------------
// FIFOs: an open that can wait for good never runs on the guest's thread.

/// A FIFO at `root/data/fifo`; its path.
fn fifo(root: &Path) -> PathBuf {
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("data/plain.txt"), "plain\n").unwrap();
    let path = root.join("data/fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    path
}

/// Opens the write end of `fifo` without blocking, which releases an open
/// of its read end that waits for it; `None` when there is none.
fn open_nonblocking(fifo: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(fifo)
        .ok()
}

/// Runs `fs-grep NEEDLE /data/fifo` with a 1 s deadline on a thread of
/// its own, which is also the guest's thread (a current-thread runtime):
/// the outcome comes over the channel, the thread is returned to join.
fn grep_fifo(
    h: &Harness,
) -> (
    std::sync::mpsc::Receiver<Outcome>,
    std::thread::JoinHandle<()>,
) {
    // Compiled first: the deadline counts compiling too.
    let warm = run_here(
        h,
        grep_config(h.dir.path(), &[NEEDLE, "/data/plain.txt"], None),
    );
    assert_eq!(failure(&warm.end), &Failure::Exit { code: 1 }, "no match");
    let mut config = grep_config(h.dir.path(), &[NEEDLE, "/data/fifo"], None);
    config.timeout(Some(Duration::from_secs(1)));
    let runtime = h.runtime.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let prepared = runtime.prepare_container(config, identity()).unwrap();
        let _ = tx.send(rt.block_on(prepared.into_future()));
        // Dropping the runtime waits for its blocking pool: the caller
        // releases the FIFO first.
    });
    (rx, thread)
}

/// Long enough that only a hang reaches it.
const HANG: Duration = Duration::from_secs(60);

#[test]
fn a_fifo_whose_open_waits_for_a_writer_does_not_hold_the_guests_thread() {
    let h = Harness::new(|_| {});
    let path = fifo(h.dir.path());
    let (outcome, thread) = grep_fifo(&h);
    let outcome = outcome.recv_timeout(HANG);
    // Releases the open, wherever it waits, so that everything ends.
    drop(open_nonblocking(&path));
    thread.join().unwrap();
    let outcome = outcome.expect("the guest's thread was held by the open");
    assert_eq!(
        failure(&outcome.end),
        &Failure::Deadline { timeout_ms: 1000 },
        "{outcome:?}"
    );
}

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

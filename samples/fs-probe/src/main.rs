//! `fs-probe`: reads a file inside its preopened directory, then tries every
//! usual way out of it and prints one line per attempt: `ok ...` when it
//! worked, `denied ...` with the error when the host refused.
//!
//! Usage: `fs-probe DIR [MODE]` where DIR is the guest path of a preopen
//! holding `inside.txt` and `escape-link` (a symlink pointing outside the
//! preopen). It first prints what it was given: one `arg ...` line per
//! argument and one `env K=V` line per environment variable (only what was
//! granted). MODE picks another probe instead of the escapes:
//!
//! - `open-many N`: opens `inside.txt` up to N times, keeping every handle,
//!   and prints `opened K` and the error that stopped it (`stopped KIND:
//!   message`); then closes them all and prints `reopened` once a fresh
//!   open and read work again.
//! - `open-many-strict N`: the same, but panics at the first error.
//! - `symlinks`: tries to plant links to an absolute target, to `../..`, to
//!   `../outside.txt` and to `inside.txt`, one `ok`/`denied` line each, then
//!   reads through the one inside.

use std::fs;
use std::path::Path;

fn report<T>(what: &str, result: std::io::Result<T>) {
    match result {
        Ok(_) => println!("ok {what}"),
        Err(e) => println!("denied {what}: {e}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    for arg in &args {
        println!("arg {arg}");
    }
    for (key, value) in std::env::vars() {
        println!("env {key}={value}");
    }
    let dir = args.get(1).map(String::as_str).unwrap_or("/data");
    let root = Path::new(dir);
    let count = || args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    match args.get(2).map(String::as_str) {
        Some("open-many") => return open_many(root, count(), false),
        Some("open-many-strict") => return open_many(root, count(), true),
        Some("symlinks") => return symlinks(root),
        _ => {}
    }

    match fs::read_to_string(root.join("inside.txt")) {
        Ok(text) => println!("ok read inside.txt: {}", text.trim()),
        Err(e) => println!("denied read inside.txt: {e}"),
    }
    report(
        "read ../outside.txt",
        fs::read_to_string(root.join("../outside.txt")),
    );
    report("read /etc/passwd", fs::read_to_string("/etc/passwd"));
    report(
        "read escape-link",
        fs::read_to_string(root.join("escape-link")),
    );
    report(
        "write written.txt",
        fs::write(root.join("written.txt"), b"written by fs-probe\n"),
    );
    report("list ..", fs::read_dir(root.join("..")).map(|_| ()));
}

/// Opens `inside.txt` up to `n` times, holding every handle.
fn open_many(root: &Path, n: usize, strict: bool) {
    let mut held = Vec::new();
    let mut stopped = None;
    for _ in 0..n {
        match fs::File::open(root.join("inside.txt")) {
            Ok(file) => held.push(file),
            Err(e) if strict => panic!("open #{} failed: {e}", held.len() + 1),
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    println!("opened {}", held.len());
    if let Some(e) = stopped {
        println!("stopped {:?}: {e}", e.kind());
    }
    drop(held);
    match fs::read_to_string(root.join("inside.txt")) {
        Ok(_) => println!("reopened"),
        Err(e) => println!("denied reopen: {e}"),
    }
}

/// Tries to plant symbolic links, then reads through the one inside.
fn symlinks(root: &Path) {
    for (target, link) in [
        ("/etc/passwd", "abs-link"),
        ("../..", "up-link"),
        ("../outside.txt", "out-link"),
        ("inside.txt", "in-link"),
    ] {
        #[allow(deprecated)] // the one portable spelling; wasi has no `unix::fs`
        let made = fs::soft_link(target, root.join(link));
        report(&format!("symlink {link} -> {target}"), made);
    }
    match fs::read_to_string(root.join("in-link")) {
        Ok(text) => println!("ok read in-link: {}", text.trim()),
        Err(e) => println!("denied read in-link: {e}"),
    }
}

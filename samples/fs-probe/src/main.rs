//! `fs-probe`: reads a file inside its preopened directory, then tries every
//! usual way out of it and prints one line per attempt: `ok ...` when it
//! worked, `denied ...` with the error when the host refused.
//!
//! Usage: `fs-probe DIR` where DIR is the guest path of a preopen holding
//! `inside.txt` and `escape-link` (a symlink pointing outside the preopen).
//! It first prints what it was given: one `arg ...` line per argument and
//! one `env K=V` line per environment variable (only what was granted).

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

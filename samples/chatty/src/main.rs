//! `chatty`: a hostile guest that tries to amplify itself into the audit
//! log. Usage: `chatty MODE [ARGS]`, where MODE is
//!
//! - `newlines BYTES`: writes BYTES bare newlines to stdout, 4 KiB a write;
//! - `log-caps`: one log line with a 100,000-byte message and 40 fields
//!   whose keys and values are 1,500 and 2,000 bytes;
//! - `log-flood N`: N log lines of 1 KiB;
//! - `long-name-trap`: traps in a function whose name is 700 bytes long;
//! - `until-stopped DIR`: forever: prints line `i` (1 KiB), then records
//!   `i` in `DIR/progress`, so that a test can compare what the guest did
//!   with what the audit log holds;
//! - `interleave N`: N lines `out i` to stdout and `err i` to stderr, one
//!   after the other, each flushed.

use std::io::Write as _;

use forgeone_guest::log::{self, Level};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let number = |i: usize| arg(i).parse::<usize>().expect("a number");
    match arg(1) {
        "newlines" => {
            let mut out = std::io::stdout().lock();
            let block = [b'\n'; 4096];
            let mut left = number(2);
            while left > 0 {
                let n = left.min(block.len());
                out.write_all(&block[..n]).unwrap();
                out.flush().unwrap();
                left -= n;
            }
        }
        "log-caps" => {
            let message = "m".repeat(100_000);
            let fields: Vec<(String, String)> = (0..40)
                .map(|i| (format!("k{i:02}{}", "k".repeat(1_497)), "v".repeat(2_000)))
                .collect();
            let fields: Vec<(&str, &str)> =
                fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            log::write(Level::Warn, &message, &fields);
        }
        "log-flood" => {
            let line = "l".repeat(1024);
            for _ in 0..number(2) {
                log::write(Level::Info, &line, &[]);
            }
        }
        "long-name-trap" => a_function_whose_name_comes_from_the_guests_own_name_section_and_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_on(),
        "until-stopped" => {
            let progress = std::path::Path::new(arg(2)).join("progress");
            let pad = "p".repeat(1000);
            for i in 0u64.. {
                println!("line {i:08} {pad}");
                std::fs::write(&progress, i.to_string()).unwrap();
            }
        }
        "interleave" => {
            for i in 0..number(2) {
                let mut out = std::io::stdout().lock();
                writeln!(out, "out {i}").unwrap();
                out.flush().unwrap();
                drop(out);
                let mut err = std::io::stderr().lock();
                writeln!(err, "err {i}").unwrap();
                err.flush().unwrap();
            }
        }
        other => panic!("unknown mode `{other}`"),
    }
}

#[inline(never)]
#[allow(non_snake_case)]
fn a_function_whose_name_comes_from_the_guests_own_name_section_and_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_onand_goes_on() {
    // A trap right here: this function is the innermost frame.
    core::arch::wasm32::unreachable()
}

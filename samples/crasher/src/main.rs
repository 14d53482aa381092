//! `crasher`: prints a line, then panics. Under a restart policy it shows
//! backoff and, when it keeps crashing, quarantine with the evidence kept.

fn main() {
    let me = forgeone_guest::identity();
    println!("crasher: starting in container {}", me.container_id);
    forgeone_guest::log::error!("about to crash on purpose");
    let reason = std::env::args().nth(1).unwrap_or_else(|| "on purpose".to_string());
    panic!("crasher: crashing {reason}");
}

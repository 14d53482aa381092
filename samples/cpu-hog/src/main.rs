//! `cpu-hog`: loops forever doing integer arithmetic, never calling the host.
//!
//! It shows that fuel ends a runaway guest, that the host preempts it at fuel
//! yield points (pause, resume and stop take effect while it spins), and that
//! a paused container burns no CPU. It prints one line first so a test can see
//! it started, and takes an optional iteration count as its first argument
//! (the benchmarks use it for a bounded CPU-bound run).

use std::hint::black_box;

fn main() {
    let limit: Option<u64> = std::env::args().nth(1).and_then(|a| a.parse().ok());
    println!("cpu-hog: spinning{}", match limit {
        Some(n) => format!(" for {n} iterations"),
        None => " forever".to_string(),
    });
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut i: u64 = 0;
    loop {
        // xorshift: cheap, not optimisable away, no memory traffic.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state = black_box(state);
        i += 1;
        if Some(i) == limit {
            break;
        }
    }
    println!("cpu-hog: done, state {state:016x}");
}

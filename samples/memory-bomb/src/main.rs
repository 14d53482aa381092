//! `memory-bomb`: grows its heap 1 MiB at a time, touching every page, until
//! the host refuses more linear memory. It reports how far it got, then takes
//! Rust's standard out-of-memory path (`handle_alloc_error`, which aborts),
//! as any program that cannot get the memory it needs would.

use std::alloc::Layout;

const CHUNK: usize = 1 << 20;

fn main() {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk: Vec<u8> = Vec::new();
        if chunk.try_reserve_exact(CHUNK).is_err() {
            println!(
                "memory-bomb: the host refused more memory after {} MiB",
                chunks.len()
            );
            std::alloc::handle_alloc_error(Layout::array::<u8>(CHUNK).unwrap());
        }
        chunk.resize(CHUNK, 0xa5);
        chunks.push(chunk);
        if chunks.len() % 8 == 0 {
            println!("memory-bomb: holding {} MiB", chunks.len());
        }
    }
}

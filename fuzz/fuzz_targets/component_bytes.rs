//! Component bytes as given, run through the unsigned path (as
//! `forgeone run --allow-unsigned FILE` does) under tiny fuel, memory,
//! table and time limits: the compiler's and linker's refusals and the
//! runtime's outcomes on mutated real components.
//!
//! Input: the component file.
#![no_main]

use std::sync::{LazyLock, Mutex};

use forgeone_fuzz::wasm::Harness;
use libfuzzer_sys::fuzz_target;

static HARNESS: LazyLock<Mutex<Harness>> = LazyLock::new(|| Mutex::new(Harness::new()));

fuzz_target!(
    init: forgeone_fuzz::seeds::write_if_asked("component_bytes"),
    |data: &[u8]| {
        let mut harness = HARNESS.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = harness.run("bytes", data);
        forgeone_fuzz::debug(|| format!("{:?}", outcome.as_ref().map(|o| &o.end).map_err(|e| e.to_string())));
    }
);

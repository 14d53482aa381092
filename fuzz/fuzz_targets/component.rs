//! Generated components run through the unsigned path: a `wasm-smith` core
//! module (features the engine supports, an exported `run`, imports drawn
//! from the kernel's log and identity calls and a few WASI calls) wrapped
//! in a command component, handed to the runtime as
//! `VerifiedComponent::unsigned` with unsigned code allowed, and run to its
//! outcome under tiny fuel, memory, table and time limits.
//!
//! Input: the bytes wasm-smith draws its choices from.
#![no_main]

use std::sync::{LazyLock, Mutex};

use forgeone_fuzz::wasm::{Harness, smith_module, wrap};
use libfuzzer_sys::fuzz_target;

static HARNESS: LazyLock<Mutex<Harness>> = LazyLock::new(|| Mutex::new(Harness::new()));

fuzz_target!(
    init: forgeone_fuzz::seeds::write_if_asked("component"),
    |data: &[u8]| {
        let Some(module) = smith_module(data) else {
            return;
        };
        let component = wrap(&module);
        let mut harness = HARNESS.lock().unwrap_or_else(|p| p.into_inner());
        // Refusals before the run (a compile error) are outcomes too; a
        // panic is the bug.
        let outcome = harness.run("smith", &component);
        forgeone_fuzz::debug(|| format!("{} byte module: {:?}", module.len(), outcome.as_ref().map(|o| &o.end).map_err(|e| e.to_string())));
    }
);

//! `word_stats`: a plugin with its own WIT world (`wit/world.wit`,
//! `example:word-stats`), not ForgeOne's `plugin-api`. A service binds the
//! same world with `wasmtime::component::bindgen!` and calls `count` with a
//! string and gets a record back; ForgeOne still verifies the component and
//! meters, limits and audits each call (see `host/examples/embed_world.rs`).

use std::collections::BTreeMap;

wit_bindgen::generate!({
    path: "wit",
    world: "word-stats",
});

use exports::example::word_stats::stats::{Counts, Guest, Refusal};

/// The longest text `count` takes, in bytes.
const MAX_TEXT: usize = 1 << 20;

struct WordStats;

impl Guest for WordStats {
    fn count(text: String, top: u32) -> Result<Counts, Refusal> {
        if text.len() > MAX_TEXT {
            return Err(Refusal::TooLong(text.len() as u64));
        }
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        let mut words = 0u32;
        for word in text
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
        {
            words += 1;
            *counts.entry(word.to_lowercase()).or_default() += 1;
        }
        if words == 0 {
            return Err(Refusal::Empty);
        }
        let mut frequent: Vec<(String, u32)> = counts.into_iter().collect();
        frequent.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        frequent.truncate(top as usize);
        Ok(Counts {
            words,
            lines: text.lines().count() as u32,
            top: frequent,
        })
    }

    fn spin(rounds: u64) -> u64 {
        let mut x = 1u64;
        let mut i = 0u64;
        while rounds == 0 || i < rounds {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            i += 1;
        }
        x
    }
}

// Exported for wasm only, so the crate's unit tests run natively.
#[cfg(target_family = "wasm")]
export!(WordStats);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words_lines_and_the_most_frequent() {
        let counts = WordStats::count("the cat and the hat\nthe end".into(), 2).unwrap();
        assert_eq!((counts.words, counts.lines), (7, 2));
        assert_eq!(counts.top, [("the".to_string(), 3), ("and".to_string(), 1)]);
        assert!(matches!(WordStats::count(" ,. ".into(), 3), Err(Refusal::Empty)));
    }
}

//! Caps on guest-supplied strings, applied where the host first receives
//! them (before they are escaped, logged, echoed or audited), so that no
//! guest can make one record, line or error arbitrarily large.
//!
//! A capped string keeps its first bytes (cut at a character boundary)
//! and ends with a marker saying how many bytes were cut:
//! `…[forgeone: 123 more bytes truncated]`.

/// A log message (`forgeone:kernel/log.write`): 8 KiB.
pub(crate) const LOG_MESSAGE: usize = 8 * 1024;
/// Fields kept per log line: 32 (more are dropped, and a last field
/// `forgeone.truncated` says how many).
pub(crate) const LOG_FIELDS: usize = 32;
/// A log field's key, and its value, each: 1 KiB.
pub(crate) const LOG_FIELD: usize = 1024;
/// A plugin's name and version, as its `describe()` returns them: 256 B.
pub(crate) const PLUGIN_INFO: usize = 256;
/// A backtrace frame (its function name comes from the guest's own name
/// section): 512 B.
pub(crate) const FRAME: usize = 512;
/// A compiler's error about a component (it may quote the component's own
/// names): 4 KiB.
pub(crate) const COMPILE_ERROR: usize = 4 * 1024;

/// `text` cut to at most `max` bytes (at a character boundary) followed by
/// the truncation marker, or `text` itself when it fits.
pub(crate) fn cap(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!("…[forgeone: {dropped} more bytes truncated]"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_unchanged_and_long_text_is_marked() {
        assert_eq!(cap("hello".into(), 5), "hello");
        assert_eq!(
            cap("hello world".into(), 5),
            "hello…[forgeone: 6 more bytes truncated]"
        );
        // Never splits a character: "é" is two bytes.
        assert_eq!(cap("aé".into(), 2), "a…[forgeone: 2 more bytes truncated]");
    }
}

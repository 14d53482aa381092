//! The event model: what a part of the kernel hands to the audit log.
//!
//! Each part of the kernel owns a typed enum of its events (boot's, the
//! runtime's, the scheduler's) and implements [`AuditEvent`] for it; the
//! audit log only sees the kind, the details and the subjects, so it knows
//! nothing about the parts that write into it. An [`Entry`] adds who acted
//! ([`Actor`]) and what the event is about ([`Subjects`]).

use std::fmt;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

/// The categories an event kind may start with.
pub const CATEGORIES: [&str; 6] = [
    "boot",
    "container",
    "schedule",
    "policy",
    "audit",
    "cluster",
];

/// A typed event that can be written to the audit log.
///
/// Implementations are usually an enum per part of the kernel, serialised
/// with serde; `kind` names the variant in dotted form
/// (`container.started`) and `details` carries its payload.
///
/// Events are serialised by the log's writer thread, not by the caller, so
/// appending costs the caller a clone and a short lock. Override
/// [`AuditEvent::write_details`] to serialise straight to bytes (for
/// example with `serde_json::to_writer(out, self)`) and skip building a
/// `serde_json::Value`.
pub trait AuditEvent: Send + 'static {
    /// The dotted kind: a category from [`CATEGORIES`], a dot, and a name
    /// made of `[a-z0-9_.-]`.
    fn kind(&self) -> &'static str;

    /// The structured payload (a JSON object). Guest-supplied text in it
    /// must already be escaped with [`Untrusted`].
    fn details(&self) -> serde_json::Value;

    /// Writes [`AuditEvent::details`] as JSON into `out`. The default
    /// serialises `details()`; override it for a faster path.
    fn write_details(&self, out: &mut Vec<u8>) {
        // Serialising a `serde_json::Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(out, &self.details());
    }

    /// About how many bytes [`AuditEvent::write_details`] writes, for the
    /// log's back-pressure in bytes
    /// ([`AuditConfig::max_pending_bytes`](super::AuditConfig::max_pending_bytes)),
    /// which counts records before they are serialised.
    ///
    /// The default, 0, suits events with small, fixed details: the log
    /// adds a fixed estimate per record anyway. An event that carries text
    /// or data of variable size (guest output, log messages, fields) must
    /// return at least the length of that text, e.g. the sum of its
    /// [`Untrusted`] strings' `as_str().len()`.
    fn size_hint(&self) -> usize {
        0
    }

    /// The severity operators see in their tracing logs. Defaults to info.
    fn severity(&self) -> Severity {
        Severity::Info
    }
}

/// Severity of an event for tracing output (the audit log keeps all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Routine event.
    Info,
    /// Something was refused or went wrong but the kernel handled it.
    Warn,
    /// Integrity or availability is at risk.
    Error,
}

/// Who caused an event: a host component, an operator, or a container's
/// identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// The tenant, when the actor acts for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The principal (user, service account, or `forgeone-host`).
    pub principal: String,
    /// The trust level of the actor, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<String>,
}

impl Actor {
    /// The host itself.
    pub fn host() -> Actor {
        Actor {
            tenant: None,
            principal: "forgeone-host".into(),
            trust: Some("system".into()),
        }
    }

    /// [`Actor::host`], shared: for the host's own frequent records.
    pub(crate) fn shared_host() -> Arc<Actor> {
        static HOST: LazyLock<Arc<Actor>> = LazyLock::new(|| Arc::new(Actor::host()));
        HOST.clone()
    }

    /// A human operator (e.g. the user running the CLI).
    pub fn operator(name: impl Into<String>) -> Actor {
        Actor {
            tenant: None,
            principal: name.into(),
            trust: None,
        }
    }
}

/// The ids an event is about. All optional; set what applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subjects {
    /// blake3 digest (hex) of a component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// A container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// A workload id or name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// A node id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Subjects {
    /// True when no subject is set.
    pub fn is_empty(&self) -> bool {
        self.component.is_none()
            && self.container.is_none()
            && self.workload.is_none()
            && self.node.is_none()
    }
}

/// One event ready to append: the event plus actor and subjects. The event
/// is kept as it is (not serialised) until the log's writer encodes it.
///
/// ```
/// use forgeone::audit::{Actor, Entry};
/// # use forgeone::audit::AuditEvent;
/// # #[derive(Clone)]
/// # struct Started;
/// # impl AuditEvent for Started {
/// #     fn kind(&self) -> &'static str { "container.started" }
/// #     fn details(&self) -> serde_json::Value { serde_json::json!({}) }
/// # }
/// let entry = Entry::new(&Started)
///     .actor(Actor::host())
///     .container("6f1c...")
///     .component("af13...");
/// ```
///
/// A part that writes many entries with the same actor and subjects (a
/// container's lifecycle) builds them once and shares them with
/// [`Entry::shared_actor`] and [`Entry::about`]: an append then costs a
/// reference count instead of copies of every string.
pub struct Entry {
    pub(crate) kind: &'static str,
    pub(crate) event: Box<dyn AuditEvent>,
    pub(crate) actor: Option<Arc<Actor>>,
    pub(crate) subjects: Arc<Subjects>,
}

/// Shared by every entry created without subjects.
static NO_SUBJECTS: LazyLock<Arc<Subjects>> = LazyLock::new(|| Arc::new(Subjects::default()));

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("kind", &self.kind)
            .field("actor", &self.actor)
            .field("subjects", &self.subjects)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// An entry for `event`, with no actor and no subjects yet.
    ///
    /// # Panics
    ///
    /// In debug builds, when the event's kind does not start with one of
    /// [`CATEGORIES`] or contains characters outside `[a-z0-9_.-]` (a
    /// programming error in the event type, never input-dependent).
    pub fn new<E: AuditEvent + Clone>(event: &E) -> Entry {
        Entry::owned(event.clone())
    }

    /// Like [`Entry::new`], taking the event by value (no clone).
    pub fn owned<E: AuditEvent>(event: E) -> Entry {
        let kind = event.kind();
        debug_assert!(is_valid_kind(kind), "invalid audit event kind `{kind}`");
        Entry {
            kind,
            event: Box::new(event),
            actor: None,
            subjects: NO_SUBJECTS.clone(),
        }
    }

    /// Sets who caused the event.
    pub fn actor(mut self, actor: impl Into<Actor>) -> Entry {
        self.actor = Some(Arc::new(actor.into()));
        self
    }

    /// Sets who caused the event, shared with other entries.
    pub fn shared_actor(mut self, actor: Arc<Actor>) -> Entry {
        self.actor = Some(actor);
        self
    }

    /// Sets everything the event is about at once, shared with other
    /// entries. The setters below still work afterwards (they copy).
    pub fn about(mut self, subjects: Arc<Subjects>) -> Entry {
        self.subjects = subjects;
        self
    }

    /// Sets the component digest the event is about.
    pub fn component(mut self, digest: impl Into<String>) -> Entry {
        Arc::make_mut(&mut self.subjects).component = Some(digest.into());
        self
    }

    /// Sets the container the event is about.
    pub fn container(mut self, id: impl fmt::Display) -> Entry {
        Arc::make_mut(&mut self.subjects).container = Some(id.to_string());
        self
    }

    /// Sets the workload the event is about.
    pub fn workload(mut self, id: impl Into<String>) -> Entry {
        Arc::make_mut(&mut self.subjects).workload = Some(id.into());
        self
    }

    /// Sets the node the event is about.
    pub fn node(mut self, id: impl Into<String>) -> Entry {
        Arc::make_mut(&mut self.subjects).node = Some(id.into());
        self
    }

    /// The event kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// What the log's back-pressure counts for this entry: a fixed cost per
    /// record, its actor and subjects, and the event's
    /// [`AuditEvent::size_hint`].
    pub(crate) fn estimated_bytes(&self) -> u64 {
        let actor = self.actor.as_deref().map_or(0, |a| {
            a.principal.len()
                + a.tenant.as_ref().map_or(0, String::len)
                + a.trust.as_ref().map_or(0, String::len)
        });
        let s = &*self.subjects;
        let subjects = [&s.component, &s.container, &s.workload, &s.node]
            .into_iter()
            .map(|v| v.as_ref().map_or(0, String::len))
            .sum::<usize>();
        let total = RECORD_BYTES
            .saturating_add(actor)
            .saturating_add(subjects)
            .saturating_add(self.event.size_hint());
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

/// What back-pressure counts per record besides its actor, subjects and
/// details: sequence number, time, kind, the two hashes and the JSON around
/// them.
pub(crate) const RECORD_BYTES: usize = 256;

/// True when `kind` is `<category>.<name>` with a known category and only
/// `[a-z0-9_.-]` characters.
pub fn is_valid_kind(kind: &str) -> bool {
    let Some((category, rest)) = kind.split_once('.') else {
        return false;
    };
    CATEGORIES.contains(&category)
        && !rest.is_empty()
        && rest.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Text that came from a guest (or any untrusted source), escaped so that it
/// can neither forge audit records nor drive an operator's terminal.
///
/// Control characters (C0 and C1, including ESC, CR and LF), the DEL
/// character, the Unicode line and paragraph separators (U+2028, U+2029:
/// line breaks to JavaScript and to many terminals and editors), and
/// Unicode bidirectional overrides are replaced by visible escapes (`\x1b`,
/// `\n`, `\u{2028}`, `\u{202e}`); backslashes are doubled so an escape
/// cannot be confused with text that looked like one. The JSON encoding of the
/// log then never contains a raw newline from a guest.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Untrusted(String);

impl Untrusted {
    /// Escapes `text`.
    pub fn new(text: &str) -> Untrusted {
        Untrusted(escape_untrusted(text))
    }

    /// Escapes `bytes`, replacing invalid UTF-8 with U+FFFD first.
    pub fn from_bytes(bytes: &[u8]) -> Untrusted {
        Untrusted::new(&String::from_utf8_lossy(bytes))
    }

    /// The escaped text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The escaped text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Escapes untrusted text; see [`Untrusted`].
pub fn escape_untrusted(text: &str) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            // Line and paragraph separators break lines like `\n` in
            // JavaScript, JSON viewers and some terminals; bidirectional
            // overrides and isolates can reorder what an operator sees (the
            // "Trojan Source" trick).
            '\u{2028}'
            | '\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200e}'
            | '\u{200f}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_validated() {
        assert!(is_valid_kind("boot.component.verified"));
        assert!(is_valid_kind("container.exit_code"));
        assert!(!is_valid_kind("boot"));
        assert!(!is_valid_kind("network.open"));
        assert!(!is_valid_kind("boot.Upper"));
        assert!(!is_valid_kind("audit."));
    }

    #[test]
    fn escaping_neutralises_control_and_bidi() {
        let hostile = "ok\n{\"seq\":2}\x1b[31mred\x1b[0m\r\u{202e}gnp.exe\\x1b";
        let escaped = escape_untrusted(hostile);
        assert!(!escaped.chars().any(|c| c.is_control()));
        assert!(!escaped.contains('\u{202e}'));
        assert_eq!(
            escaped,
            "ok\\n{\"seq\":2}\\x1b[31mred\\x1b[0m\\r\\u{202e}gnp.exe\\\\x1b"
        );
    }

    #[test]
    fn unicode_line_and_paragraph_separators_are_escaped() {
        let hostile = "one\u{2028}two\u{2029}three\u{85}four";
        let escaped = escape_untrusted(hostile);
        assert_eq!(escaped, "one\\u{2028}two\\u{2029}three\\x85four");
        // Nothing a line-oriented reader (JavaScript, a JSON viewer) would
        // split on is left.
        assert!(!escaped.contains(['\u{2028}', '\u{2029}', '\u{85}']));
        assert_eq!(Untrusted::new(hostile).as_str(), escaped);
    }
}

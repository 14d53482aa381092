//! The small languages of constraints: label selectors, location patterns
//! and affinity terms.
//!
//! Written by hand: each is a few lines of grammar, and a general parser or
//! glob crate (path-oriented, with escapes and character classes) would
//! accept more than we want to document.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// The operator of a [`LabelSelector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectorOp {
    /// The label is set to one of the values (`key=v`, `key in (a, b)`).
    In,
    /// The label is unset or set to none of the values (`key!=v`,
    /// `key notin (a, b)`).
    NotIn,
    /// The label is set, to anything (`key`).
    Exists,
    /// The label is not set (`!key`).
    DoesNotExist,
}

/// A selector over string labels, in the syntax of Kubernetes' `-l`:
/// `disk=ssd`, `disk!=hdd`, `disk in (ssd, nvme)`, `tier notin (spot)`,
/// `gpu` (exists), `!spot` (does not exist).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct LabelSelector {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: SelectorOp,
    /// The values for `In` / `NotIn` (empty otherwise).
    pub values: Vec<String>,
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

fn check_token(kind: &str, token: &str, whole: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err(format!("selector `{whole}`: empty {kind}"));
    }
    if let Some(bad) = token.chars().find(|c| !is_label_char(*c)) {
        return Err(format!(
            "selector `{whole}`: {kind} `{token}` contains `{bad}` (allowed: letters, digits, `.`, `_`, `-`, `/`)"
        ));
    }
    Ok(())
}

impl LabelSelector {
    /// Parses one selector. The error names the selector and what is wrong.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty label selector".into());
        }
        if let Some(rest) = t.strip_prefix('!') {
            let key = rest.trim();
            check_token("key", key, text)?;
            return Ok(LabelSelector {
                key: key.into(),
                op: SelectorOp::DoesNotExist,
                values: Vec::new(),
            });
        }
        if let Some((key, value)) = t.split_once("!=") {
            let (key, value) = (key.trim(), value.trim());
            check_token("key", key, text)?;
            check_token("value", value, text)?;
            return Ok(LabelSelector {
                key: key.into(),
                op: SelectorOp::NotIn,
                values: vec![value.into()],
            });
        }
        if let Some((key, value)) = t.split_once('=') {
            let key = key.trim();
            let value = value.strip_prefix('=').unwrap_or(value).trim();
            check_token("key", key, text)?;
            check_token("value", value, text)?;
            return Ok(LabelSelector {
                key: key.into(),
                op: SelectorOp::In,
                values: vec![value.into()],
            });
        }
        let mut words = t.splitn(2, char::is_whitespace);
        let key = words.next().unwrap_or_default();
        let rest = words.next().map(str::trim).unwrap_or_default();
        if rest.is_empty() {
            check_token("key", key, text)?;
            return Ok(LabelSelector {
                key: key.into(),
                op: SelectorOp::Exists,
                values: Vec::new(),
            });
        }
        check_token("key", key, text)?;
        let (op, list) = if let Some(list) = rest.strip_prefix("notin") {
            (SelectorOp::NotIn, list)
        } else if let Some(list) = rest.strip_prefix("in") {
            (SelectorOp::In, list)
        } else {
            return Err(format!(
                "selector `{text}`: expected `=`, `!=`, `in (..)` or `notin (..)` after `{key}`"
            ));
        };
        let list = list.trim();
        let Some(inner) = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')) else {
            return Err(format!(
                "selector `{text}`: the values must be in parentheses, e.g. `{key} in (a, b)`"
            ));
        };
        let mut values = Vec::new();
        for v in inner.split(',') {
            let v = v.trim();
            check_token("value", v, text)?;
            values.push(v.to_string());
        }
        Ok(LabelSelector {
            key: key.into(),
            op,
            values,
        })
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            SelectorOp::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOp::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOp::Exists => value.is_some(),
            SelectorOp::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            SelectorOp::Exists => f.write_str(&self.key),
            SelectorOp::DoesNotExist => write!(f, "!{}", self.key),
            SelectorOp::In if self.values.len() == 1 => {
                write!(f, "{}={}", self.key, self.values[0])
            }
            SelectorOp::NotIn if self.values.len() == 1 => {
                write!(f, "{}!={}", self.key, self.values[0])
            }
            SelectorOp::In => write!(f, "{} in ({})", self.key, self.values.join(", ")),
            SelectorOp::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(", ")),
        }
    }
}

/// A location pattern: one or more comma-separated alternatives, each
/// matched against a node's region and its zone; `*` matches any run of
/// characters (`eu-*`, `*-1a`), everything else literally.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocationPattern {
    alternatives: Vec<String>,
}

impl LocationPattern {
    /// Parses `eu-*`, `eu-west-1a`, `eu-*,us-east-1a`.
    pub fn parse(text: &str) -> Result<LocationPattern, String> {
        let mut alternatives = Vec::new();
        for alt in text.split(',') {
            let alt = alt.trim();
            if alt.is_empty() {
                return Err(format!("location `{text}`: empty pattern"));
            }
            if let Some(bad) = alt.chars().find(|c| !(is_label_char(*c) || *c == '*')) {
                return Err(format!(
                    "location `{text}`: `{bad}` is not allowed (letters, digits, `.`, `_`, `-` and the wildcard `*`)"
                ));
            }
            alternatives.push(alt.to_string());
        }
        Ok(LocationPattern { alternatives })
    }

    /// Whether the pattern matches `region` or `zone`.
    pub fn matches(&self, region: &str, zone: &str) -> bool {
        self.alternatives
            .iter()
            .any(|p| glob_match(p, region) || glob_match(p, zone))
    }

    /// Whether the pattern matches `name` (a region or a zone).
    pub fn matches_name(&self, name: &str) -> bool {
        self.alternatives.iter().any(|p| glob_match(p, name))
    }
}

impl fmt::Display for LocationPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.alternatives.join(","))
    }
}

/// `*`-only glob match, linear with one backtrack point (the classic
/// wildcard algorithm).
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// What an affinity or anti-affinity constraint selects: other workloads by
/// name, or by a workload label (`=` or `in` only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AffinityTerm {
    /// A workload with this name.
    Name(String),
    /// Workloads whose label `key` is one of `values`.
    Label {
        /// The label key.
        key: String,
        /// The accepted values.
        values: Vec<String>,
    },
}

impl AffinityTerm {
    /// Parses `db` (a name) or `app=db` / `app in (db, cache)` (labels).
    pub fn parse(text: &str) -> Result<AffinityTerm, String> {
        let t = text.trim();
        let looks_like_selector = t.contains(['=', '!', '(']) || t.contains(char::is_whitespace);
        if !looks_like_selector {
            check_token("workload name", t, text)?;
            return Ok(AffinityTerm::Name(t.into()));
        }
        let sel = LabelSelector::parse(t)?;
        match sel.op {
            SelectorOp::In => Ok(AffinityTerm::Label {
                key: sel.key,
                values: sel.values,
            }),
            _ => Err(format!(
                "affinity term `{text}`: only a workload name, `key=value` or `key in (..)` is allowed"
            )),
        }
    }

    /// Whether a workload with `name` and `labels` matches.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            AffinityTerm::Name(n) => n == name,
            AffinityTerm::Label { key, values } => {
                labels.get(key).is_some_and(|v| values.contains(v))
            }
        }
    }
}

impl fmt::Display for AffinityTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AffinityTerm::Name(n) => f.write_str(n),
            AffinityTerm::Label { key, values } if values.len() == 1 => {
                write!(f, "{key}={}", values[0])
            }
            AffinityTerm::Label { key, values } => write!(f, "{key} in ({})", values.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("eu-*", "eu-west-1a"));
        assert!(glob_match("*-1a", "eu-west-1a"));
        assert!(glob_match("eu-*-1*", "eu-west-1a"));
        assert!(!glob_match("eu-*", "us-east"));
        assert!(glob_match("eu-west-1a", "eu-west-1a"));
        assert!(!glob_match("eu-west", "eu-west-1a"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn selectors_round_trip() {
        for text in [
            "disk=ssd",
            "disk!=hdd",
            "disk in (ssd, nvme)",
            "tier notin (spot, batch)",
            "gpu",
            "!spot",
        ] {
            let s = LabelSelector::parse(text).unwrap();
            assert_eq!(s.to_string(), text);
        }
        assert!(LabelSelector::parse("disk in ssd").is_err());
        assert!(LabelSelector::parse("disk ~ ssd").is_err());
        assert!(LabelSelector::parse("=ssd").is_err());
    }
}

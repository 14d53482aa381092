//! Units of sizes, counts, CPU and durations, shared with `nodes.toml`.

use std::fmt;
use std::time::Duration;

/// A TOML scalar that may carry a unit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Int(i64),
    Float(f64),
    Str(String),
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string with a unit")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Bytes: an integer, or a string with a unit (`64MiB`, `1.5GB`).
pub(crate) fn size(v: &Scalar) -> Result<u64, String> {
    match v {
        Scalar::Int(n) if *n >= 0 => Ok(*n as u64),
        Scalar::Int(n) => Err(format!("size {n} is negative")),
        Scalar::Float(f) => Err(format!("size {f} needs a unit, e.g. \"64MiB\"")),
        Scalar::Str(s) => {
            let t = s.trim();
            if !t.chars().any(|c| c.is_ascii_alphabetic()) {
                return Err(format!("size `{s}` needs a unit, e.g. \"64MiB\""));
            }
            t.parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|_| {
                    format!("bad size `{s}` (use a number and a unit: B, KiB, MiB, GiB, KB, MB, GB, ...)")
                })
        }
    }
}

/// A count: an integer, or a string with an SI suffix (`50M`, `2.5G`,
/// `10_000k`).
pub(crate) fn count(v: &Scalar) -> Result<u64, String> {
    match v {
        Scalar::Int(n) if *n >= 0 => Ok(*n as u64),
        Scalar::Int(n) => Err(format!("{n} is negative")),
        Scalar::Float(f) => Err(format!("{f} is not a whole number; write e.g. \"1.5M\"")),
        Scalar::Str(s) => {
            let t: String = s.trim().chars().filter(|c| *c != '_').collect();
            let (num, mult) = match t.chars().last() {
                Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
                Some('M') => (&t[..t.len() - 1], 1e6),
                Some('G') => (&t[..t.len() - 1], 1e9),
                Some('T') => (&t[..t.len() - 1], 1e12),
                _ => (t.as_str(), 1.0),
            };
            match num.parse::<f64>() {
                Ok(n) if n >= 0.0 && n.is_finite() && n * mult < u64::MAX as f64 => {
                    Ok((n * mult).round() as u64)
                }
                _ => Err(format!(
                    "bad count `{s}` (a number with an optional k, M, G or T suffix, e.g. \"50M\")"
                )),
            }
        }
    }
}

/// Thousandths of a core: cores as a number (`0.5`, `2`) or millicores
/// as a string (`"500m"`).
pub(crate) fn cpu_millis(v: &Scalar) -> Result<u64, String> {
    let cores = match v {
        Scalar::Int(n) => *n as f64,
        Scalar::Float(f) => *f,
        Scalar::Str(s) => {
            let t = s.trim();
            if let Some(m) = t.strip_suffix('m') {
                return m.parse::<u64>().map_err(|_| {
                    format!("bad cpu `{s}` (cores like 0.5, or millicores like \"500m\")")
                });
            }
            t.parse::<f64>().map_err(|_| {
                format!("bad cpu `{s}` (cores like 0.5, or millicores like \"500m\")")
            })?
        }
    };
    if !(0.0..=1_000_000.0).contains(&cores) || !cores.is_finite() {
        return Err(format!("cpu {cores} is out of range (0 to 1000000 cores)"));
    }
    Ok((cores * 1000.0).round() as u64)
}

/// A duration with a unit (`5s`, `250ms`, `2m`).
pub(crate) fn duration(v: &Scalar) -> Result<Duration, String> {
    match v {
        Scalar::Str(s) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("bad duration `{s}`: {e} (e.g. \"5s\", \"250ms\")")),
        other => Err(format!(
            "{} needs a unit, e.g. \"5s\"",
            match other {
                Scalar::Int(n) => n.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Str(s) => s.clone(),
            }
        )),
    }
}

/// A label name or value: letters, digits, `.`, `_`, `-`, `/`, 1..=63.
pub(crate) fn check_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("`{s}` must be 1 to 63 characters"));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(format!(
            "`{s}` contains `{bad}` (allowed: letters, digits, `.`, `_`, `-`, `/`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_parsing() {
        assert_eq!(size(&Scalar::Str("64MiB".into())), Ok(64 << 20));
        assert!(size(&Scalar::Str("64".into())).is_err());
        assert!(size(&Scalar::Str("64MiBs".into())).is_err());
        assert_eq!(count(&Scalar::Str("50M".into())), Ok(50_000_000));
        assert_eq!(count(&Scalar::Int(50_000_000)), Ok(50_000_000));
        assert!(count(&Scalar::Str("50Q".into())).is_err());
        assert_eq!(cpu_millis(&Scalar::Float(0.5)), Ok(500));
        assert_eq!(cpu_millis(&Scalar::Str("250m".into())), Ok(250));
        assert_eq!(
            duration(&Scalar::Str("5s".into())),
            Ok(Duration::from_secs(5))
        );
        assert!(duration(&Scalar::Int(5)).is_err());
    }
}

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
            if !s.chars().any(|c| c.is_ascii_alphabetic()) {
                return Err(format!("size `{s}` needs a unit, e.g. \"64MiB\""));
            }
            parse_size(s)
        }
    }
}

/// Parses a size: a whole number of bytes (`1048576`) or a number and a
/// unit (`64MiB`, `1.5GB`, `512 KiB`). Units, in any case: `B`; `KB`
/// (or `K`), `MB`, `GB`, `TB`, `PB`, `EB` in powers of 1000; `KiB` (or
/// `Ki`), `MiB`, `GiB`, `TiB`, `PiB`, `EiB` in powers of 1024. Fractions
/// are exact and round down to whole bytes. A size over `u64::MAX` bytes
/// (16 EiB) is refused, never saturated. Every size the host reads goes
/// through here: `forgeone.toml`, `nodes.toml` and the CLI's flags.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "bad size `{t}` (use a number and a unit: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB, ...)"
        )
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim_start());
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "p" | "pb" => 1_000_000_000_000_000,
        "e" | "eb" => 1_000_000_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        "pi" | "pib" => 1 << 50,
        "ei" | "eib" => 1 << 60,
        _ => return Err(bad()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(bad());
    }
    let too_large = || format!("size `{t}` is over the largest size, 16 EiB (2^64 - 1 bytes)");
    // Exact arithmetic: whole * factor + fraction * factor / 10^digits,
    // in u128 (digits past the 19th cannot change the whole bytes).
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse::<u64>().map_err(|_| too_large())?.into()
    };
    let digits = &fraction[..fraction.len().min(19)];
    let scale = 10u128.pow(digits.len() as u32);
    let fraction: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| bad())?
    };
    let bytes = whole * u128::from(factor) + fraction * u128::from(factor) / scale;
    u64::try_from(bytes).map_err(|_| too_large())
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

/// A name people read (a tenant, a principal): not empty, and free of
/// what a terminal or a log viewer would act on instead of showing: control
/// characters (C0, DEL, C1), line and paragraph separators, and
/// bidirectional overrides.
pub(crate) fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    let unprintable = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    match s.chars().find(|&c| unprintable(c)) {
        Some(c) => Err(format!(
            "`{s}` contains the control character U+{:04X}; names are shown on terminals and in logs",
            c as u32
        )),
        None => Ok(()),
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
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("0.5kib"), Ok(512));
        assert_eq!(
            parse_size("16EiB").unwrap_err(),
            parse_size("16EiB").unwrap_err()
        );
        assert_eq!(parse_size("15EiB"), Ok(15 << 60));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size("18446744073709551615B"), Ok(u64::MAX));
        for too_large in [
            "18446744073709551615TiB",
            "18446744073709551616",
            "16EiB",
            "18446744.073709551616TB",
            "99999999999999999999999999999999KiB",
        ] {
            let e = parse_size(too_large).unwrap_err();
            assert!(
                e.contains("over the largest size, 16 EiB"),
                "{too_large}: {e}"
            );
        }
        for bad in [
            "",
            "MiB",
            ".",
            "1..5MiB",
            "1.2.3KiB",
            "-1MiB",
            "1 Mebibyte",
            "0x10",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.starts_with("bad size"), "{bad}: {e}");
        }
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

//! What a container is granted: directories, environment, arguments and
//! network. Nothing is granted unless listed.
//!
//! A directory grant has one text form, shared by `forgeone run --dir` and
//! the `dirs` of `forgeone.toml`: `HOST::GUEST[:ro|:rw]`, read-only unless
//! `:rw` is given ([`DirGrant::parse`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

/// A host directory granted to a container.
///
/// Build one with [`DirGrant::read_only`], [`DirGrant::read_write`] or
/// [`DirGrant::new`], or parse its text form `HOST::GUEST[:ro|:rw]` with
/// [`DirGrant::parse`] (or `str::parse`). Its [`Display`](fmt::Display) is
/// that text form, with the mode always spelled out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DirGrant {
    /// The directory on the host, as written (a caller with a base
    /// directory, such as a deployment file, resolves a relative one).
    pub host: PathBuf,
    /// Where the guest sees it (e.g. `/data`).
    pub guest: String,
    /// Read-only when true.
    pub read_only: bool,
}

impl DirGrant {
    /// Grants `host` at `guest`, read-only when `read_only`.
    pub fn new(host: impl Into<PathBuf>, guest: impl Into<String>, read_only: bool) -> DirGrant {
        DirGrant {
            host: host.into(),
            guest: guest.into(),
            read_only,
        }
    }

    /// Grants `host` at `guest`, read-only.
    pub fn read_only(host: impl Into<PathBuf>, guest: impl Into<String>) -> DirGrant {
        DirGrant::new(host, guest, true)
    }

    /// Grants `host` at `guest`, read-write.
    pub fn read_write(host: impl Into<PathBuf>, guest: impl Into<String>) -> DirGrant {
        DirGrant::new(host, guest, false)
    }

    /// Parses `HOST::GUEST[:ro|:rw]`: the host path, `::`, the absolute
    /// guest path, and at most one mode suffix. Without a suffix the grant
    /// is read-only; only `:rw` makes it read-write. The host path is kept
    /// as written. Refused, each with a [`DirGrantError`] quoting `text`:
    /// no `::`, an empty host or guest path, a guest path that is relative
    /// or has a `..` component, an unknown mode (a guest path cannot
    /// contain `:`), and more than one mode (`HOST::/data:rw:ro`).
    pub fn parse(text: &str) -> Result<DirGrant, DirGrantError> {
        let owned = || text.to_string();
        let Some((host, rest)) = text.split_once("::") else {
            return Err(DirGrantError::MissingSeparator { text: owned() });
        };
        if host.is_empty() {
            return Err(DirGrantError::EmptyHost { text: owned() });
        }
        let mut parts = rest.split(':');
        let guest = parts.next().unwrap_or_default();
        let mut read_only = true;
        for (n, mode) in parts.enumerate() {
            read_only = match mode {
                "ro" => true,
                "rw" => false,
                other => {
                    return Err(DirGrantError::UnknownMode {
                        text: owned(),
                        mode: other.to_string(),
                    });
                }
            };
            if n > 0 {
                return Err(DirGrantError::MoreThanOneMode { text: owned() });
            }
        }
        if guest.is_empty() {
            return Err(DirGrantError::EmptyGuest { text: owned() });
        }
        if !guest.starts_with('/') {
            return Err(DirGrantError::RelativeGuest {
                text: owned(),
                guest: guest.to_string(),
            });
        }
        if guest.split('/').any(|component| component == "..") {
            return Err(DirGrantError::ParentComponent {
                text: owned(),
                guest: guest.to_string(),
            });
        }
        Ok(DirGrant::new(host, guest, read_only))
    }
}

impl FromStr for DirGrant {
    type Err = DirGrantError;

    /// See [`DirGrant::parse`].
    fn from_str(text: &str) -> Result<DirGrant, DirGrantError> {
        DirGrant::parse(text)
    }
}

impl fmt::Display for DirGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.read_only { "ro" } else { "rw" };
        write!(f, "{}::{}:{mode}", self.host.display(), self.guest)
    }
}

/// Why a directory grant's text (`HOST::GUEST[:ro|:rw]`) was refused. Each
/// message quotes the text and says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirGrantError {
    /// There is no `::` between the host and the guest path.
    #[error(
        "directory grant `{text}`: expected HOST::GUEST[:ro|:rw], with `::` between the host and \
         guest paths"
    )]
    MissingSeparator {
        /// The refused text.
        text: String,
    },
    /// The host path is empty.
    #[error("directory grant `{text}`: the host path (before `::`) is empty")]
    EmptyHost {
        /// The refused text.
        text: String,
    },
    /// The guest path is empty.
    #[error("directory grant `{text}`: the guest path (after `::`) is empty")]
    EmptyGuest {
        /// The refused text.
        text: String,
    },
    /// The guest path does not start with `/`.
    #[error(
        "directory grant `{text}`: the guest path `{guest}` is relative; it must start with `/`"
    )]
    RelativeGuest {
        /// The refused text.
        text: String,
        /// The guest path.
        guest: String,
    },
    /// The guest path has a `..` component.
    #[error("directory grant `{text}`: the guest path `{guest}` contains a `..` component")]
    ParentComponent {
        /// The refused text.
        text: String,
        /// The guest path.
        guest: String,
    },
    /// A `:` suffix that is not `:ro` or `:rw`.
    #[error(
        "directory grant `{text}`: `:{mode}` is not a mode; expected `:ro` or `:rw` (a guest path \
         cannot contain `:`)"
    )]
    UnknownMode {
        /// The refused text.
        text: String,
        /// The suffix after the `:`.
        mode: String,
    },
    /// More than one mode suffix, such as `:rw:ro`.
    #[error(
        "directory grant `{text}`: more than one mode suffix; give at most one of `:ro` (the \
         default) or `:rw`"
    )]
    MoreThanOneMode {
        /// The refused text.
        text: String,
    },
}

/// The capabilities granted to a container: nothing unless listed.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Grants {
    /// Preopened directories.
    pub dirs: Vec<DirGrant>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Outbound and inbound network (TCP, UDP, name lookup). Requires the
    /// runtime policy to allow network.
    pub network: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_is_read_only_unless_rw_is_given() {
        assert_eq!(
            DirGrant::parse("data::/data").unwrap(),
            DirGrant::read_only("data", "/data")
        );
        assert_eq!(
            DirGrant::parse("data::/data:ro").unwrap(),
            DirGrant::read_only("data", "/data")
        );
        assert_eq!(
            DirGrant::parse("data::/data:rw").unwrap(),
            DirGrant::read_write("data", "/data")
        );
    }

    #[test]
    fn the_host_path_stays_as_written() {
        let grant: DirGrant = "../shared dir/x::/srv/app:rw".parse().unwrap();
        assert_eq!(grant.host, PathBuf::from("../shared dir/x"));
        assert_eq!(grant.guest, "/srv/app");
        assert!(!grant.read_only);
        // A single `:` belongs to the host path; the first `::` separates.
        let grant = DirGrant::parse("/mnt/a:b::/").unwrap();
        assert_eq!(grant, DirGrant::read_only("/mnt/a:b", "/"));
    }

    #[test]
    fn display_is_the_text_form_with_the_mode_spelled_out() {
        let grant = DirGrant::parse("data::/data").unwrap();
        assert_eq!(grant.to_string(), "data::/data:ro");
        assert_eq!(DirGrant::parse(&grant.to_string()).unwrap(), grant);
        let grant = DirGrant::new("/var/x", "/x", false);
        assert_eq!(grant.to_string(), "/var/x::/x:rw");
        assert_eq!(DirGrant::parse(&grant.to_string()).unwrap(), grant);
    }

    #[test]
    fn malformed_grants_are_refused_precisely() {
        let cases: &[(&str, &str)] = &[
            ("HOST::/data:rw:ro", "more than one mode suffix"),
            ("HOST::/data:ro:ro", "more than one mode suffix"),
            (
                "HOST::/data/../etc",
                "the guest path `/data/../etc` contains a `..` component",
            ),
            (
                "HOST::/..",
                "the guest path `/..` contains a `..` component",
            ),
            (
                "HOST::data",
                "the guest path `data` is relative; it must start with `/`",
            ),
            ("HOST::./data:rw", "the guest path `./data` is relative"),
            ("::/data", "the host path (before `::`) is empty"),
            ("HOST::", "the guest path (after `::`) is empty"),
            ("HOST:::rw", "the guest path (after `::`) is empty"),
            ("HOST:/data", "expected HOST::GUEST[:ro|:rw], with `::`"),
            ("HOST", "expected HOST::GUEST[:ro|:rw], with `::`"),
            ("", "expected HOST::GUEST[:ro|:rw], with `::`"),
            (
                "HOST::/data:RW",
                "`:RW` is not a mode; expected `:ro` or `:rw`",
            ),
            ("HOST::/data:", "`:` is not a mode"),
            ("HOST::/a::b", "`:` is not a mode"),
        ];
        for (text, expected) in cases {
            let error = DirGrant::parse(text).expect_err(text);
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("directory grant `{text}`: ")),
                "{text}: {message}"
            );
            assert!(message.contains(expected), "{text}: {message}");
        }
        assert_eq!(
            "h::/d:rw:ro".parse::<DirGrant>(),
            Err(DirGrantError::MoreThanOneMode {
                text: "h::/d:rw:ro".into()
            })
        );
        assert_eq!(
            DirGrant::parse("h::/d/../x"),
            Err(DirGrantError::ParentComponent {
                text: "h::/d/../x".into(),
                guest: "/d/../x".into()
            })
        );
        assert!(matches!(
            DirGrant::parse("h::d"),
            Err(DirGrantError::RelativeGuest { .. })
        ));
        assert!(matches!(
            DirGrant::parse("h/d"),
            Err(DirGrantError::MissingSeparator { .. })
        ));
    }
}

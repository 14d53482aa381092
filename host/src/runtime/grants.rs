//! What a container is granted: directories, environment, arguments,
//! standard input and network. Nothing is granted unless listed.
//!
//! A directory grant has one text form, shared by `forgeone run --dir` and
//! the `dirs` of `forgeone.toml`: `HOST::GUEST[:ro|:rw]`, read-only unless
//! `:rw` is given ([`DirGrant::parse`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use wasmtime_wasi::WasiCtxBuilder;

use super::RuntimeError;

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

/// What a container reads as its standard input. In the audit log (the
/// `capabilities` of `container.created`) it is `"none"`, `"inherit"`,
/// `{"file": PATH}` or `{"bytes": {"len": N, "blake3": HEX}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StdinGrant {
    /// Nothing: the guest's stdin is empty (reads end at once). The
    /// default.
    #[default]
    None,
    /// The host process's own standard input, read as the guest asks for
    /// it (what `forgeone run` grants: the input of the user who invoked
    /// it, as `wasmtime run` does). Every container granted it reads the
    /// same stream; a restart reads on where the last run stopped.
    Inherit,
    /// A regular file on the host, opened when each run starts and read
    /// from its beginning. A path that cannot be opened, or that is not a
    /// regular file (a directory, a FIFO, a device), fails the run before
    /// the guest starts, naming it.
    File(PathBuf),
    /// These bytes, from the beginning, on every run.
    Bytes(Arc<[u8]>),
}

impl StdinGrant {
    /// Grants `bytes` as the guest's stdin.
    pub fn bytes(bytes: impl Into<Arc<[u8]>>) -> StdinGrant {
        StdinGrant::Bytes(bytes.into())
    }

    /// Sets `builder`'s stdin to this grant, opening a file grant (the
    /// error names the file).
    pub(crate) fn apply(&self, builder: &mut WasiCtxBuilder) -> Result<(), RuntimeError> {
        match self {
            StdinGrant::None => {}
            StdinGrant::Inherit => {
                builder.inherit_stdin();
            }
            StdinGrant::Bytes(bytes) => {
                let bytes = wasmtime_wasi_io::bytes::Bytes::copy_from_slice(bytes);
                builder.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(bytes));
            }
            StdinGrant::File(path) => {
                let refuse = |reason: String| RuntimeError::Stdin {
                    path: path.clone(),
                    reason,
                };
                let file = std::fs::File::open(path).map_err(|e| refuse(e.to_string()))?;
                let kind = file
                    .metadata()
                    .map_err(|e| refuse(e.to_string()))?
                    .file_type();
                if !kind.is_file() {
                    let what = if kind.is_dir() {
                        "a directory"
                    } else {
                        "not a regular file (a FIFO, socket or device)"
                    };
                    return Err(refuse(format!("it is {what}; grant a regular file")));
                }
                // Read on tokio's blocking pool, never on the guest's thread.
                let file = tokio::fs::File::from_std(file);
                builder.stdin(wasmtime_wasi::cli::AsyncStdinStream::new(file));
            }
        }
        Ok(())
    }
}

impl fmt::Display for StdinGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StdinGrant::None => f.write_str("none"),
            StdinGrant::Inherit => f.write_str("inherit"),
            StdinGrant::File(path) => write!(f, "file {}", path.display()),
            StdinGrant::Bytes(bytes) => write!(f, "{} bytes", bytes.len()),
        }
    }
}

impl Serialize for StdinGrant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        match self {
            StdinGrant::None => s.serialize_str("none"),
            StdinGrant::Inherit => s.serialize_str("inherit"),
            StdinGrant::File(path) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("file", path)?;
                map.end()
            }
            StdinGrant::Bytes(bytes) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(
                    "bytes",
                    &serde_json::json!({
                        "len": bytes.len(),
                        "blake3": blake3::hash(bytes).to_hex().as_str(),
                    }),
                )?;
                map.end()
            }
        }
    }
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
    /// Standard input. Default: none.
    pub stdin: StdinGrant,
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

//! What a container is granted: directories, environment, arguments and
//! network. Nothing is granted unless listed.

use std::path::PathBuf;

use serde::Serialize;

/// A host directory granted to a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it (e.g. `/data`).
    pub guest: String,
    /// Read-only when true.
    pub read_only: bool,
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

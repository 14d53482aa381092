//! What is wrong with a deployment file.

use std::fmt;
use std::path::{Path, PathBuf};

/// Largest deployment file accepted (1 MiB).
pub const MAX_DEPLOYMENT_BYTES: u64 = 1 << 20;

/// One problem in a deployment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The workload (or tenant) it concerns, if any.
    pub workload: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if let Some(w) = &self.workload {
            write!(f, "workload `{w}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Errors reading a deployment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentError {
    /// The file could not be read (or is larger than the cap).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid: TOML syntax, unknown keys, bad values or
    /// contradictions. Each problem names its line and column.
    #[error("{}", render(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

fn render(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{p}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

impl DeploymentError {
    /// The problems (empty for I/O errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            DeploymentError::Invalid { problems, .. } => problems,
            DeploymentError::Io { .. } => &[],
        }
    }
}

//! Writing a small file atomically, the one way the host does it: a new
//! temporary file in the same directory, written and fsynced, renamed over
//! the target, and the directory fsynced. A crash leaves the old file or the
//! new one, never a mix; a reader never sees a partial file. The audit log's
//! head file and the boot state use it.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically (mode 0600 on Unix). On failure,
/// returns the path the failing step was about (the temporary file, the
/// target, or the directory) with the error, and removes the temporary file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let at = |p: &Path| {
        let p = p.to_owned();
        move |e| (p, e)
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp).map_err(at(&tmp))?;
        file.write_all(bytes).map_err(at(&tmp))?;
        file.sync_all().map_err(at(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(at(path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(at(&dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("head.json")]);
        // A missing directory is named in the error.
        let (failed, _) = write_atomic(&dir.path().join("nope/head.json"), b"x").unwrap_err();
        assert!(failed.starts_with(dir.path().join("nope")), "{failed:?}");
    }
}

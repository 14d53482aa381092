//! The on-disk compiled cache: one file per (component digest, engine),
//! under a MAC made with this cache's secret.
//!
//! The artifact is native code that wasmtime maps and runs without
//! validating it again, so a file is trusted only if it carries a MAC over
//! (component digest, engine fingerprint, format, sizes, the bytes on disk).
//! The MAC is checked before anything else reads the bytes, the
//! decompressor included; what is loaded is a function of the bytes it
//! covers. A file that fails the check (edited, truncated, swapped for
//! another component's, written by another engine) is never decompressed
//! or deserialized: the caller recompiles from the verified bytes and
//! replaces it, and audits the rejection.
//!
//! Two layouts, told apart by their magic, both read whatever
//! [`Compression`] writes:
//!
//! - compressed: `FO1CWZST (8) || MAC (32) || artifact
//!   length (8, little endian) || zstd frame` of the artifact, at level 3;
//! - uncompressed (the default): `FO1CWASM (8) || MAC (32) || artifact`.
//!
//! Files live at `<dir>/<component digest>-<first 16 hex of engine
//! fingerprint>.cwasm`. The secret is `<dir>/cache.key`, 32 random bytes
//! created with mode 0600. Both are read as files the host keeps for
//! itself: a symbolic link, a FIFO or a device in their place is refused
//! without being followed or read, and nothing past four times the
//! component size cap ([`DEFAULT_MAX_COMPONENT_SIZE`], 256 MiB; 1 GiB,
//! plus the header) is read or decompressed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use wasmtime::Engine;

use crate::boot::{BootError, DEFAULT_MAX_COMPONENT_SIZE, Digest, read_private};

use super::RuntimeError;
use super::engine::engine_fingerprint;

const MAGIC_RAW: &[u8; 8] = b"FO1CWASM";
const MAGIC_ZSTD: &[u8; 8] = b"FO1CWZST";
const CONTEXT_RAW: &[u8] = b"forgeone.compiled-cache.v1\0";
const CONTEXT_ZSTD: &[u8] = b"forgeone.compiled-cache.v2.zstd\0";
const MAC_LEN: usize = 32;
/// Magic and MAC; the compressed layout adds the artifact's length.
const HEADER: usize = 8 + MAC_LEN;
/// The largest artifact read, written or decompressed: four times the
/// component size cap (1 GiB), as compiled code is larger than the wasm it
/// came from (CPython's 95 MiB component compiles to a 319 MiB artifact).
/// A larger file (a cache entry swapped for `/dev/zero`'s worth of bytes)
/// is refused on its size, never read.
const MAX_ARTIFACT: u64 = 4 * DEFAULT_MAX_COMPONENT_SIZE;
/// zstd's level: its default, which wasmtime's own cache uses too.
const ZSTD_LEVEL: i32 = 3;

/// How compiled artifacts are written to the on-disk cache. Either is read
/// back whatever is configured, so changing it keeps the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// zstd at level 3: a quarter to a third of the disk space (fs-probe
    /// 507 KB to 185 KB, CPython 334 MB to 85 MB), for a slower cache hit
    /// (fs-probe 1.04 ms against 0.70 ms uncompressed, in the same run;
    /// the figures are in the README). For caches where disk matters more
    /// than start time.
    Zstd,
    /// The artifact as wasmtime serializes it: the fastest cache hit. The
    /// default.
    #[default]
    None,
}

pub(crate) enum CacheRead {
    Hit(Vec<u8>),
    Miss,
    Rejected(String),
}

#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
    fingerprint: [u8; 32],
    compression: Compression,
}

impl DiskCache {
    pub(crate) fn open(
        dir: &Path,
        engine: &Engine,
        compression: Compression,
    ) -> Result<DiskCache, RuntimeError> {
        let io = |source| RuntimeError::Cache {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let key = load_or_create_key(dir)?;
        Ok(DiskCache {
            dir: dir.to_owned(),
            key,
            fingerprint: engine_fingerprint(engine),
            compression,
        })
    }

    pub(crate) fn path(&self, digest: Digest) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            digest.to_hex(),
            hex::encode(&self.fingerprint[..8])
        ))
    }

    /// The MAC over `stored` (the bytes after the MAC) in the layout
    /// `context` names.
    fn mac(&self, context: &[u8], digest: Digest, stored: &[u8]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(context);
        hasher.update(digest.as_bytes());
        hasher.update(&self.fingerprint);
        hasher.update(&(stored.len() as u64).to_le_bytes());
        hasher.update(stored);
        hasher.finalize()
    }

    pub(crate) fn load(&self, digest: Digest) -> CacheRead {
        let path = self.path(digest);
        let mut bytes = match read_private(&path, HEADER + 8 + MAX_ARTIFACT as usize) {
            Ok(bytes) => bytes,
            Err(BootError::Missing { .. }) => return CacheRead::Miss,
            Err(BootError::TooLarge { size, .. }) => {
                return CacheRead::Rejected(format!(
                    "{size} bytes, over the limit of {} bytes",
                    (HEADER + 8) as u64 + MAX_ARTIFACT
                ));
            }
            Err(BootError::NotAFile { found, .. }) => {
                return CacheRead::Rejected(format!("is {found}, not a regular file"));
            }
            Err(e) => return CacheRead::Rejected(format!("unreadable: {e}")),
        };
        let context = match bytes.get(..8) {
            Some(m) if m == MAGIC_RAW => CONTEXT_RAW,
            Some(m) if m == MAGIC_ZSTD => CONTEXT_ZSTD,
            _ => {
                return CacheRead::Rejected("not a ForgeOne compiled artifact (bad header)".into());
            }
        };
        if bytes.len() < HEADER {
            return CacheRead::Rejected("not a ForgeOne compiled artifact (bad header)".into());
        }
        let mut stored = [0u8; MAC_LEN];
        stored.copy_from_slice(&bytes[8..HEADER]);
        // `blake3::Hash` equality is constant-time.
        if self.mac(context, digest, &bytes[HEADER..]) != blake3::Hash::from_bytes(stored) {
            return CacheRead::Rejected(
                "integrity check failed (MAC mismatch): edited, truncated or not written by this host"
                    .into(),
            );
        }
        if context == CONTEXT_RAW {
            bytes.drain(..HEADER);
            return CacheRead::Hit(bytes);
        }
        // Authentic, so written by `store` below: still, never decompress
        // past the cap.
        match decompress(&bytes[HEADER..]) {
            Ok(artifact) => CacheRead::Hit(artifact),
            Err(reason) => CacheRead::Rejected(reason),
        }
    }

    pub(crate) fn store(&self, digest: Digest, artifact: &[u8]) -> std::io::Result<()> {
        if artifact.len() as u64 > MAX_ARTIFACT {
            // It would be refused when read back.
            return Err(std::io::Error::other(format!(
                "artifact of {} bytes is over the limit of {MAX_ARTIFACT} bytes",
                artifact.len()
            )));
        }
        let (magic, context, stored) = match self.compression {
            Compression::None => (MAGIC_RAW, CONTEXT_RAW, std::borrow::Cow::Borrowed(artifact)),
            Compression::Zstd => {
                let mut stored = (artifact.len() as u64).to_le_bytes().to_vec();
                stored.extend(zstd::bulk::compress(artifact, ZSTD_LEVEL)?);
                (MAGIC_ZSTD, CONTEXT_ZSTD, std::borrow::Cow::Owned(stored))
            }
        };
        let path = self.path(digest);
        let tmp = self
            .dir
            .join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(magic)?;
            file.write_all(self.mac(context, digest, &stored).as_bytes())?;
            file.write_all(&stored)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// `length (8, LE) || zstd frame` back to the artifact: exactly `length`
/// bytes, at most [`MAX_ARTIFACT`].
fn decompress(stored: &[u8]) -> Result<Vec<u8>, String> {
    let Some((length, frame)) = stored.split_first_chunk::<8>() else {
        return Err("compressed artifact without its length".into());
    };
    let length = u64::from_le_bytes(*length);
    if length > MAX_ARTIFACT {
        return Err(format!(
            "compressed artifact of {length} bytes, over the limit of {MAX_ARTIFACT} bytes"
        ));
    }
    let artifact = zstd::bulk::decompress(frame, length as usize)
        .map_err(|e| format!("does not decompress: {e}"))?;
    if artifact.len() as u64 != length {
        return Err(format!(
            "decompressed to {} bytes where its header says {length}",
            artifact.len()
        ));
    }
    Ok(artifact)
}

/// Reads the cache secret `<dir>/cache.key`, creating it (mode 0600) on
/// first use. A secret its group or others may access is refused (the check
/// private keys get, [`crate::keys`]): anyone who can read it can forge
/// artifacts that this host would execute. Processes sharing the directory
/// never see a partly written secret: it is written whole to a temporary
/// file and linked into place, and whoever links first wins.
fn load_or_create_key(dir: &Path) -> Result<[u8; 32], RuntimeError> {
    let path = dir.join("cache.key");
    let io = |source| RuntimeError::Cache {
        path: path.clone(),
        source,
    };
    let invalid = |what: &str| io(std::io::Error::new(std::io::ErrorKind::InvalidData, what));
    for _ in 0..2 {
        // Read as the host's own file: a link (to /dev/zero, say) or a FIFO
        // in its place is refused, and nothing past 64 bytes is read.
        match read_private(&path, 64) {
            Ok(bytes) => {
                let meta = std::fs::symlink_metadata(&path).map_err(io)?;
                crate::keys::check_private(&path, &meta, "cache secret").map_err(|e| {
                    RuntimeError::Cache {
                        path: dir.to_owned(),
                        source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, e),
                    }
                })?;
                return bytes
                    .try_into()
                    .map_err(|_| invalid("cache secret is not 32 bytes"));
            }
            Err(BootError::Missing { .. }) => {
                let mut key = [0u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
                let tmp = dir.join(format!(".cache.key.{}.tmp", uuid::Uuid::new_v4().simple()));
                let linked =
                    write_private(&tmp, &key).and_then(|()| std::fs::hard_link(&tmp, &path));
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => return Ok(key),
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) => return Err(io(std::io::Error::other(e))),
        }
    }
    Err(invalid(
        "cache secret appeared and vanished while it was read",
    ))
}

/// Writes a new file, mode 0600, synced.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

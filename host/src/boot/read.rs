//! Reading inputs: size-capped small documents, and components read once
//! into the buffer that is handed to the runtime, hashed while they are read.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use super::{BootError, Digest};

/// Default largest component accepted (bytes): 256 MiB.
pub const DEFAULT_MAX_COMPONENT_SIZE: u64 = 256 * 1024 * 1024;

/// Components are read and hashed in slices of this size: each slice is
/// hashed right after it is read, while it is still in the CPU cache, so the
/// bytes cross memory once. Large enough for blake3's SIMD parallelism.
const CHUNK: usize = 256 * 1024;

/// Opens `path` as a regular file, refusing missing paths, directories and
/// special files with the path in the error. The type is checked before the
/// open (so a FIFO cannot block us) and again on the open handle (so a path
/// swapped in between is still caught).
fn open_regular(path: &Path) -> Result<(File, u64), BootError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            BootError::Missing {
                path: path.to_owned(),
            }
        } else {
            BootError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };
    let kind_error = |meta: &std::fs::Metadata| BootError::NotAFile {
        path: path.to_owned(),
        found: if meta.is_dir() {
            "a directory"
        } else {
            "a special file"
        },
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(kind_error(&meta));
    }
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(kind_error(&meta));
    }
    Ok((file, meta.len()))
}

/// Reads a small document (anchor, manifest, signature, state), refusing it
/// when it is over `limit` bytes: checked on the file's size and again while
/// reading (a file growing underneath is cut at `limit + 1`).
pub(crate) fn read_small(path: &Path, limit: usize) -> Result<Vec<u8>, BootError> {
    let (file, len) = open_regular(path)?;
    let too_large = |size: u64| BootError::TooLarge {
        what: path.display().to_string(),
        size,
        limit: limit as u64,
    };
    if len > limit as u64 {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| BootError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads a component into the buffer the runtime will own and hashes it on
/// the way: one read of each byte, no copy, no second read (so there is no
/// window between what was hashed and what is compiled).
///
/// `expected_size`, when known (a manifest entry), is compared with the
/// file's size before a byte is read.
pub(crate) fn read_component(
    path: &Path,
    name: &str,
    limit: u64,
    expected_size: Option<u64>,
) -> Result<(Arc<[u8]>, Digest), BootError> {
    let (mut file, len) = open_regular(path)?;
    if len > limit {
        return Err(BootError::TooLarge {
            what: path.display().to_string(),
            size: len,
            limit,
        });
    }
    if let Some(expected) = expected_size
        && expected != len
    {
        return Err(BootError::SizeMismatch {
            name: name.to_owned(),
            expected,
            actual: len,
        });
    }
    let len = usize::try_from(len).map_err(|_| BootError::TooLarge {
        what: path.display().to_string(),
        size: len,
        limit,
    })?;
    let io = |source| BootError::Io {
        path: path.to_owned(),
        source,
    };
    let changed = || BootError::Changed {
        path: path.to_owned(),
    };

    // A zeroed allocation: for large buffers the allocator hands out fresh
    // zero pages (calloc), so this costs no extra pass over the memory.
    let zeroed = Arc::<[u8]>::new_zeroed_slice(len);
    // SAFETY: `new_zeroed_slice` initialised every byte to 0, a valid `u8`.
    let mut buffer: Arc<[u8]> = unsafe { zeroed.assume_init() };
    let slice = Arc::get_mut(&mut buffer).expect("a new Arc has no other owner");
    let mut hasher = blake3::Hasher::new();
    for chunk in slice.chunks_mut(CHUNK) {
        match file.read_exact(chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(changed()),
            Err(e) => return Err(io(e)),
        }
        hasher.update(chunk);
    }
    // The file must end where its size said it would.
    let mut probe = [0u8; 1];
    if file.read(&mut probe).map_err(io)? != 0 {
        return Err(changed());
    }
    Ok((buffer, Digest::from_bytes(*hasher.finalize().as_bytes())))
}

/// What a Wasm header says the bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WasmKind {
    /// A core module (version 1).
    Module,
    /// A component (layer 1).
    Component,
}

/// Checks the 8-byte preamble: `\0asm` then either the core module version
/// (1, layer 0) or the component encoding (version 0xd, layer 1). Anything
/// else is refused here, before a byte reaches the compiler.
pub(crate) fn wasm_kind(bytes: &[u8]) -> Result<WasmKind, String> {
    if bytes.len() < 8 {
        return Err(format!(
            "{} byte(s), shorter than the 8-byte Wasm header",
            bytes.len()
        ));
    }
    if &bytes[..4] != b"\0asm" {
        return Err(format!(
            "bad magic {} (expected 0061736d, `\\0asm`)",
            hex::encode(&bytes[..4])
        ));
    }
    match &bytes[4..8] {
        [1, 0, 0, 0] => Ok(WasmKind::Module),
        [0x0d, 0, 1, 0] => Ok(WasmKind::Component),
        other => Err(format!(
            "unknown Wasm version/layer {} (expected 01000000 for a module or 0d000100 for a component)",
            hex::encode(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(wasm_kind(b"\0asm\x01\0\0\0"), Ok(WasmKind::Module));
        assert_eq!(wasm_kind(b"\0asm\x0d\0\x01\0rest"), Ok(WasmKind::Component));
        assert!(wasm_kind(b"\0asm\x02\0\0\0").is_err());
        assert!(wasm_kind(b"\x7fELF\x02\x01\x01\0").is_err());
        assert!(wasm_kind(b"\0as").is_err());
    }

    #[test]
    fn component_read_hashes_every_byte_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wasm");
        let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
        bytes.extend((0..3 * CHUNK + 17).map(|i| i as u8));
        std::fs::write(&path, &bytes).unwrap();
        let (read, digest) = read_component(&path, "c", u64::MAX, None).unwrap();
        assert_eq!(&read[..], &bytes[..]);
        assert_eq!(digest, Digest::of(&bytes));
        assert!(matches!(
            read_component(&path, "c", 10, None),
            Err(BootError::TooLarge { .. })
        ));
        assert!(matches!(
            read_component(&path, "c", u64::MAX, Some(3)),
            Err(BootError::SizeMismatch { .. })
        ));
        assert!(matches!(
            read_component(dir.path(), "c", u64::MAX, None),
            Err(BootError::NotAFile { .. })
        ));
        assert!(matches!(
            read_component(&dir.path().join("nope"), "c", u64::MAX, None),
            Err(BootError::Missing { .. })
        ));
    }
}

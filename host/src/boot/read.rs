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

/// Whether the last component of a path may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// Follow it (documents and components an operator names).
    Follow,
    /// Refuse it (files the host itself keeps, such as compiled-cache
    /// artifacts: a planted link must not redirect what the host reads).
    Refuse,
}

/// Opens `path` as a regular file, refusing missing paths, directories and
/// special files with the path in the error. The type is checked before the
/// open, the open itself does not block (`O_NONBLOCK`: a FIFO swapped in
/// between cannot hang us), and the type is checked again on the open
/// handle (so a path swapped in between is still caught). With
/// [`Links::Refuse`] a symbolic link is refused, before the open and by the
/// open (`O_NOFOLLOW`).
fn open_regular(path: &Path, links: Links) -> Result<(File, u64), BootError> {
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
        found: file_kind(meta),
    };
    let meta = match links {
        Links::Follow => std::fs::metadata(path),
        Links::Refuse => std::fs::symlink_metadata(path),
    }
    .map_err(io)?;
    if !meta.is_file() {
        return Err(kind_error(&meta));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let nofollow = match links {
            Links::Follow => 0,
            Links::Refuse => rustix::fs::OFlags::NOFOLLOW.bits(),
        };
        // Reads of a regular file ignore O_NONBLOCK.
        options.custom_flags((rustix::fs::OFlags::NONBLOCK.bits() | nofollow) as i32);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        // O_NOFOLLOW on a symbolic link that appeared since the check.
        #[cfg(unix)]
        Err(e)
            if links == Links::Refuse
                && e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) =>
        {
            return Err(BootError::NotAFile {
                path: path.to_owned(),
                found: "a symbolic link",
            });
        }
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(kind_error(&meta));
    }
    Ok((file, meta.len()))
}

/// What a path that is not a regular file is, for the error.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        return "a directory";
    }
    if kind.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
    }
    "a special file"
}

/// Reads a small document (anchor, manifest, signature, state), refusing it
/// when it is over `limit` bytes: checked on the file's size and again while
/// reading (a file growing underneath is cut at `limit + 1`).
pub(crate) fn read_small(path: &Path, limit: usize) -> Result<Vec<u8>, BootError> {
    read_capped(path, limit, Links::Follow)
}

/// Reads a file the host keeps for itself (a compiled-cache artifact, the
/// cache secret) as [`read_small`] does, but refusing a symbolic link: it
/// must be a regular file at exactly that path, at most `limit` bytes.
pub(crate) fn read_private(path: &Path, limit: usize) -> Result<Vec<u8>, BootError> {
    read_capped(path, limit, Links::Refuse)
}

fn read_capped(path: &Path, limit: usize, links: Links) -> Result<Vec<u8>, BootError> {
    let (file, len) = open_regular(path, links)?;
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
    let (mut file, len) = open_regular(path, Links::Follow)?;
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

    #[cfg(unix)]
    #[test]
    fn fifos_links_and_sparse_giants_are_refused_before_a_byte_is_read() {
        let dir = tempfile::tempdir().unwrap();
        // A FIFO with no writer: opening it for reading would block forever.
        let fifo = dir.path().join("fifo.wasm");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let err = read_component(&fifo, "fifo", u64::MAX, None).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::NotAFile {
                    found: "a FIFO (named pipe)",
                    ..
                }
            ),
            "{err}"
        );
        assert!(read_small(&fifo, 1024).is_err());

        // 20 GiB that take no space: refused on its size, not read.
        let sparse = dir.path().join("sparse.wasm");
        File::create(&sparse).unwrap().set_len(20 << 30).unwrap();
        let err = read_component(&sparse, "sparse", DEFAULT_MAX_COMPONENT_SIZE, None).unwrap_err();
        assert!(
            matches!(err, BootError::TooLarge { size, limit, .. } if size == 20 << 30 && limit == DEFAULT_MAX_COMPONENT_SIZE),
            "{err}"
        );

        // A private read refuses a link (to a FIFO, to /dev/zero, to a
        // regular file alike) and a device; a plain read follows a link.
        let target = dir.path().join("target");
        std::fs::write(&target, b"0123456789").unwrap();
        for (link, to) in [
            ("to-file", target.as_path()),
            ("to-zero", Path::new("/dev/zero")),
            ("to-fifo", fifo.as_path()),
        ] {
            let link = dir.path().join(link);
            std::os::unix::fs::symlink(to, &link).unwrap();
            let err = read_private(&link, 1024).unwrap_err();
            assert!(
                matches!(
                    err,
                    BootError::NotAFile {
                        found: "a symbolic link",
                        ..
                    }
                ),
                "{err}"
            );
        }
        assert_eq!(
            read_small(&dir.path().join("to-file"), 1024).unwrap(),
            b"0123456789"
        );
        assert_eq!(read_private(&target, 1024).unwrap(), b"0123456789");
        assert!(matches!(
            read_private(&target, 9),
            Err(BootError::TooLarge {
                size: 10,
                limit: 9,
                ..
            })
        ));
        let err = read_private(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::NotAFile {
                    found: "a device",
                    ..
                }
            ),
            "{err}"
        );
    }
}

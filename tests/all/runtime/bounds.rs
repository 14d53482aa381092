//! Bounded inputs: every component path reads through one capped reader.

use forgeone::boot::{BootError, DEFAULT_MAX_COMPONENT_SIZE};

use super::*;

#[test]
fn the_unsigned_path_reads_through_the_capped_reader() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO with no writer: reading it would hang.
    let fifo = dir.path().join("fifo.wasm");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let err = VerifiedComponent::unsigned_file(&fifo, DEFAULT_MAX_COMPONENT_SIZE).unwrap_err();
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
    assert!(
        err.to_string()
            .contains("is a FIFO (named pipe), not a regular file")
    );

    // 20 GiB that occupy no disk: refused on its size before a read.
    let sparse = dir.path().join("sparse.wasm");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(20 << 30)
        .unwrap();
    let err = VerifiedComponent::unsigned_file(&sparse, DEFAULT_MAX_COMPONENT_SIZE).unwrap_err();
    assert!(
        matches!(err, BootError::TooLarge { size, limit, .. } if size == 20 << 30 && limit == 256 << 20),
        "{err}"
    );

    // A directory, and a real component (named after the file, hashed).
    let err = VerifiedComponent::unsigned_file(dir.path(), DEFAULT_MAX_COMPONENT_SIZE).unwrap_err();
    assert!(
        matches!(
            err,
            BootError::NotAFile {
                found: "a directory",
                ..
            }
        ),
        "{err}"
    );
    let component =
        VerifiedComponent::unsigned_file(guests::HELLO, DEFAULT_MAX_COMPONENT_SIZE).unwrap();
    let bytes = std::fs::read(guests::HELLO).unwrap();
    assert_eq!(component.name(), "hello");
    assert_eq!(component.digest(), forgeone::boot::Digest::of(&bytes));
    assert!(!component.is_signed());
    let err = VerifiedComponent::unsigned_file(guests::HELLO, 1024).unwrap_err();
    assert!(
        matches!(err, BootError::TooLarge { limit: 1024, .. }),
        "{err}"
    );
}

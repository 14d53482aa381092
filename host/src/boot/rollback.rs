//! Rollback protection, shared by the manifest boot and by per-component
//! signature checks that are given the state directory: the pinned trust
//! anchor (pinned on first use, rotated only when the pinned version's root
//! keys authorise it) and the highest accepted version of each component.

use super::anchor::TrustAnchor;
use super::event::{BootEvent, Emitter};
use super::state::BootState;
use super::{BootError, Digest, parse_version, shown};

/// Pins `anchor` on first use; afterwards accepts the pinned anchor, an
/// authorised rotation of it (audited as `boot.anchor.rotated`) or, with
/// `allow_downgrade`, an older version (audited as
/// `boot.downgrade.allowed`). Returns how it was accepted (`first-use`,
/// `pinned`, `rotated`, `downgraded`). A refusal goes through `refuse`,
/// which audits it and returns the error to propagate; an unusable state
/// directory is returned as it is.
pub(crate) fn check_pin(
    emit: &Emitter<'_>,
    state: &BootState,
    anchor: &TrustAnchor,
    allow_downgrade: bool,
    refuse: impl Fn(BootError) -> BootError,
) -> Result<&'static str, BootError> {
    let Some(pinned) = state.pinned_anchor()? else {
        state.pin_anchor(anchor)?;
        return Ok("first-use");
    };
    if pinned.id() != anchor.id() {
        return Err(refuse(BootError::AnchorMismatch {
            pinned: pinned.id(),
            found: anchor.id(),
        }));
    }
    if anchor.version() == pinned.version() {
        if anchor.digest() != pinned.digest() {
            return Err(refuse(BootError::VersionConflict {
                what: format!("trust anchor {}", anchor.id()),
                version: anchor.version().to_string(),
            }));
        }
        return Ok("pinned");
    }
    if anchor.version() > pinned.version() {
        let previous = pinned.verify_successor(anchor).map_err(&refuse)?;
        state.pin_anchor(anchor)?;
        emit.emit(
            &BootEvent::AnchorRotated {
                anchor_id: anchor.id().to_string(),
                from_version: pinned.version(),
                to_version: anchor.version(),
                signed_by_previous: previous.iter().map(ToString::to_string).collect(),
                signed_by_new: anchor.signers().iter().map(ToString::to_string).collect(),
            },
            None,
        )?;
        return Ok("rotated");
    }
    if !allow_downgrade {
        return Err(refuse(BootError::Rollback {
            what: format!("trust anchor {}", anchor.id()),
            found: anchor.version().to_string(),
            highest: pinned.version().to_string(),
        }));
    }
    emit.emit(
        &BootEvent::DowngradeAllowed {
            what: format!("trust anchor {}", anchor.id()),
            from: pinned.version().to_string(),
            to: anchor.version().to_string(),
        },
        None,
    )?;
    state.pin_anchor(anchor)?;
    Ok("downgraded")
}

/// Checks `name`@`version` against the highest accepted version of `name`:
/// the same or newer passes; an older one is refused (audited as
/// `boot.rollback.refused`) unless `allow_downgrade`, when it passes and is
/// audited as `boot.downgrade.allowed`. `digest` is the audit subject.
pub(crate) fn check_component_version(
    emit: &Emitter<'_>,
    state: &BootState,
    name: &str,
    version: &str,
    digest: Option<Digest>,
    allow_downgrade: bool,
) -> Result<(), BootError> {
    let Some(highest) = state.highest_version(name) else {
        return Ok(());
    };
    let highest_v = semver::Version::parse(&highest).map_err(|e| BootError::StateCorrupt {
        path: state.dir().join("state.json"),
        reason: format!(
            "component {name} highest version `{}`: {e}",
            shown(&highest)
        ),
        source: Some(Box::new(e)),
    })?;
    let what = format!("component {name}");
    let presented = parse_version(&what, version)?;
    if presented >= highest_v {
        return Ok(());
    }
    if !allow_downgrade {
        emit.emit(
            &BootEvent::RollbackRefused {
                what: what.clone(),
                found: version.to_owned(),
                highest: highest.clone(),
            },
            digest,
        )?;
        return Err(BootError::Rollback {
            what,
            found: version.to_owned(),
            highest,
        });
    }
    emit.emit(
        &BootEvent::DowngradeAllowed {
            what,
            from: highest,
            to: version.to_owned(),
        },
        digest,
    )?;
    Ok(())
}

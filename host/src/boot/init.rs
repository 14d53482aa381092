//! The boot itself: anchor, manifest, components, recovery, report.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::anchor::TrustAnchor;
use super::event::{BootEvent, Emitter};
use super::manifest::{BootManifest, ManifestComponent};
use super::measure::{Measurement, MeasurementKind, MeasurementRegister, MeasurementStatus};
use super::quote::{BootQuote, BootReport, ReportAnchor, ReportComponent};
use super::read::{DEFAULT_MAX_COMPONENT_SIZE, read_component, wasm_kind};
use super::state::{BootState, CopyStatus, DEFAULT_MAX_TRIES, StoredCopy};
use super::{BootError, Digest, Provenance, VerifiedComponent, parse_version};
use crate::audit::{AuditLog, Untrusted};
use crate::keys::{KeyId, SigningKey};

/// Name of the anchor's measurement.
pub(crate) const ANCHOR_MEASUREMENT: &str = "trust-anchor";
/// Name of the manifest's measurement.
pub(crate) const MANIFEST_MEASUREMENT: &str = "boot-manifest";

/// What happens when a component fails verification and no last-known-good
/// copy of it verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BootPolicy {
    /// The whole boot is [`IntegrityStatus::Compromised`] and nothing runs.
    /// The default.
    #[default]
    FailClosed,
    /// Boot without that component; the rest runs.
    Degraded,
}

impl BootPolicy {
    /// `fail-closed` or `degraded`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BootPolicy::FailClosed => "fail-closed",
            BootPolicy::Degraded => "degraded",
        }
    }
}

/// The integrity of a boot, as in the core spec.
///
/// `Verified`: every component of the manifest runs from bytes that
/// verified (some possibly recovered from their last-known-good copy; see
/// [`BootContext::outcome`]). `Compromised(reason)`: the manifest was
/// refused, or a component was refused without a good copy to fall back on;
/// with [`BootPolicy::FailClosed`] nothing runs, with
/// [`BootPolicy::Degraded`] the verified rest runs. `Unknown`: not measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "reason")]
pub enum IntegrityStatus {
    /// Everything that runs verified.
    Verified,
    /// Something failed verification; the reason names it.
    Compromised(String),
    /// Not measured.
    Unknown,
}

impl std::fmt::Display for IntegrityStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntegrityStatus::Verified => f.write_str("verified"),
            IntegrityStatus::Compromised(reason) => write!(f, "compromised: {reason}"),
            IntegrityStatus::Unknown => f.write_str("unknown"),
        }
    }
}

/// How the boot ended, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BootOutcome {
    /// Everything verified as listed.
    Verified,
    /// Everything runs verified, but at least one component came from its
    /// last-known-good copy.
    Recovered,
    /// At least one component is left out (degraded policy).
    Degraded,
    /// Nothing runs.
    Compromised,
}

impl BootOutcome {
    /// `verified`, `recovered`, `degraded` or `compromised`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BootOutcome::Verified => "verified",
            BootOutcome::Recovered => "recovered",
            BootOutcome::Degraded => "degraded",
            BootOutcome::Compromised => "compromised",
        }
    }
}

/// A component that was refused and replaced by a last-known-good copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// The component.
    pub name: String,
    /// The digest of the refused bytes, when they could be measured.
    pub failed_digest: Option<Digest>,
    /// Why they were refused.
    pub reason: String,
    /// The digest of the copy used instead.
    pub digest: Digest,
    /// Its version.
    pub version: String,
}

/// A component that does not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    /// The component.
    pub name: String,
    /// The version the manifest listed.
    pub version: String,
    /// Why it was refused (and why no copy could replace it).
    pub reason: String,
}

/// The result of a boot, as in the core spec, plus what may run.
///
/// Only [`BootContext::components`] reaches the runtime: when the outcome is
/// [`BootOutcome::Compromised`] it is empty.
#[derive(Debug)]
#[non_exhaustive]
pub struct BootContext {
    /// The anchor the boot trusted.
    pub trust_anchor: TrustAnchor,
    /// Every measurement, in the order it was extended into the register.
    pub boot_measurements: Vec<Measurement>,
    /// The integrity of the boot.
    pub integrity_status: IntegrityStatus,
    /// When the boot started (the boot's clock).
    pub boot_time: chrono::DateTime<chrono::Utc>,
    /// How it ended.
    pub outcome: BootOutcome,
    /// The components allowed to run, in manifest order.
    pub components: Vec<VerifiedComponent>,
    /// Components replaced by their last-known-good copy.
    pub recovered: Vec<Recovery>,
    /// Components that do not run.
    pub left_out: Vec<LeftOut>,
    /// The final measurement register.
    pub register: Digest,
    /// The manifest's release, when the manifest verified.
    pub release: Option<String>,
    /// The manifest's version, when the manifest verified.
    pub manifest_version: Option<u64>,
    /// The boot quote, when the boot was given a host key.
    pub quote: Option<BootQuote>,
    state: Option<BootState>,
}

impl BootContext {
    /// The state directory the boot used, for
    /// [`BootState::record_start`].
    pub fn state(&self) -> Option<&BootState> {
        self.state.as_ref()
    }

    /// The verified component called `name`.
    pub fn component(&self, name: &str) -> Option<&VerifiedComponent> {
        self.components.iter().find(|c| c.name() == name)
    }

    /// The boot report (what a quote signs). `host_key` is the id of the key
    /// that will sign it, if any.
    pub fn report(&self, host_key: Option<&KeyId>, nonce: Option<&str>) -> BootReport {
        BootReport {
            format: super::quote::REPORT_FORMAT.into(),
            boot_time: self.boot_time,
            host_key: host_key.map(|k| k.to_string()),
            nonce: nonce.map(str::to_owned),
            anchor: ReportAnchor {
                id: self.trust_anchor.id(),
                version: self.trust_anchor.version(),
                digest: self.trust_anchor.digest(),
            },
            release: self.release.clone(),
            manifest_version: self.manifest_version,
            outcome: self.outcome,
            integrity: self.integrity_status.clone(),
            measurements: self.boot_measurements.clone(),
            register: self.register,
            components: self
                .components
                .iter()
                .map(|c| ReportComponent {
                    name: c.name().to_owned(),
                    version: c.version().to_owned(),
                    digest: c.digest(),
                    recovered: matches!(c.provenance(), Provenance::Recovered { .. }),
                })
                .collect(),
        }
    }

    /// Signs the boot report with the host key: a quote another party can
    /// check with [`super::verify_quote`]. `nonce` is the verifier's
    /// challenge, if it sent one (it proves the quote is fresh).
    pub fn sign_quote(&self, host_key: &SigningKey, nonce: Option<&str>) -> BootQuote {
        BootQuote::sign(self.report(Some(host_key.id()), nonce), host_key)
    }
}

/// A progress reporter.
type ProgressFn = Box<dyn Fn(&str) + Send + Sync>;

enum Source<T> {
    Loaded(T),
    File(PathBuf),
}

/// Boots with everything beyond the anchor and manifest made explicit.
///
/// ```no_run
/// # fn main() -> Result<(), forgeone::boot::BootError> {
/// use forgeone::boot::{self, BootBuilder, BootManifest, BootPolicy, TrustAnchor};
/// let anchor = TrustAnchor::from_file("trust_anchor.json")?;
/// let manifest = BootManifest::from_file("boot/manifest.json")?;
/// let ctx = BootBuilder::new(anchor, &manifest)
///     .state_dir("/var/lib/forgeone/boot")
///     .policy(BootPolicy::Degraded)
///     .run()?;
/// if ctx.integrity_status == boot::IntegrityStatus::Verified {
///     println!("register {}", ctx.register);
/// }
/// # Ok(()) }
/// ```
pub struct BootBuilder {
    anchor: Source<TrustAnchor>,
    manifest: Source<BootManifest>,
    state_dir: Option<PathBuf>,
    state: Option<BootState>,
    policy: BootPolicy,
    audit: Option<AuditLog>,
    host_key: Option<SigningKey>,
    quote_nonce: Option<String>,
    now: Option<chrono::DateTime<chrono::Utc>>,
    max_tries: u32,
    max_component_size: u64,
    allow_downgrade: bool,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for BootBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootBuilder")
            .field("state_dir", &self.state_dir)
            .field("policy", &self.policy)
            .field("now", &self.now)
            .field("max_tries", &self.max_tries)
            .field("max_component_size", &self.max_component_size)
            .field("allow_downgrade", &self.allow_downgrade)
            .finish_non_exhaustive()
    }
}

/// Boots `manifest` under `anchor` with the defaults of [`BootBuilder`]: no
/// state directory (so no rollback protection, pinning or recovery),
/// fail-closed, no audit log (events are traced), the system clock.
pub fn initialize(anchor: TrustAnchor, manifest: &BootManifest) -> Result<BootContext, BootError> {
    BootBuilder::new(anchor, manifest).run()
}

impl BootBuilder {
    /// A boot of `manifest` under an already loaded `anchor`.
    pub fn new(anchor: TrustAnchor, manifest: &BootManifest) -> BootBuilder {
        Self::with(Source::Loaded(anchor), Source::Loaded(manifest.clone()))
    }

    /// A boot that loads both files itself, so that a refused anchor or
    /// manifest file is audited like every other refusal.
    pub fn from_files(anchor: impl AsRef<Path>, manifest: impl AsRef<Path>) -> BootBuilder {
        Self::with(
            Source::File(anchor.as_ref().to_owned()),
            Source::File(manifest.as_ref().to_owned()),
        )
    }

    fn with(anchor: Source<TrustAnchor>, manifest: Source<BootManifest>) -> BootBuilder {
        BootBuilder {
            anchor,
            manifest,
            state_dir: None,
            state: None,
            policy: BootPolicy::FailClosed,
            audit: None,
            host_key: None,
            quote_nonce: None,
            now: None,
            max_tries: DEFAULT_MAX_TRIES,
            max_component_size: DEFAULT_MAX_COMPONENT_SIZE,
            allow_downgrade: false,
            progress: None,
        }
    }

    /// The state directory (pinning, rollback protection, last-known-good
    /// copies, try counters), opened and locked by [`BootBuilder::run`].
    /// Default: none.
    pub fn state_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// An already open state directory (takes precedence over
    /// [`BootBuilder::state_dir`]). Default: none.
    pub fn state(&mut self, state: BootState) -> &mut Self {
        self.state = Some(state);
        self
    }

    /// What a refused component without a good copy does to the boot.
    /// Default: [`BootPolicy::FailClosed`].
    pub fn policy(&mut self, policy: BootPolicy) -> &mut Self {
        self.policy = policy;
        self
    }

    /// The audit log every step is written to; if it cannot be written the
    /// boot stops. Default: none (events are traced under `forgeone::boot`).
    pub fn audit(&mut self, log: AuditLog) -> &mut Self {
        self.audit = Some(log);
        self
    }

    /// The host key that signs the boot quote ([`BootContext::quote`]).
    /// Default: none (no quote).
    pub fn host_key(&mut self, key: SigningKey) -> &mut Self {
        self.host_key = Some(key);
        self
    }

    /// A verifier's challenge to include in the quote. Default: none.
    pub fn quote_nonce(&mut self, nonce: impl Into<String>) -> &mut Self {
        self.quote_nonce = Some(nonce.into());
        self
    }

    /// The time expiries are checked against and measurements stamped with.
    /// Default: the system clock when [`BootBuilder::run`] starts.
    pub fn now(&mut self, now: chrono::DateTime<chrono::Utc>) -> &mut Self {
        self.now = Some(now);
        self
    }

    /// Consecutive failed starts after which a new version is marked bad.
    /// Default: 3.
    pub fn max_tries(&mut self, tries: u32) -> &mut Self {
        self.max_tries = tries.max(1);
        self
    }

    /// Largest component file read. Default:
    /// [`DEFAULT_MAX_COMPONENT_SIZE`](super::DEFAULT_MAX_COMPONENT_SIZE) (256 MiB).
    pub fn max_component_size(&mut self, bytes: u64) -> &mut Self {
        self.max_component_size = bytes;
        self
    }

    /// Accept an older anchor, manifest or component version than the
    /// highest accepted one; every such downgrade is audited
    /// (`boot.downgrade.allowed`) and becomes the new recorded version.
    /// Default: false.
    pub fn allow_downgrade(&mut self, allow: bool) -> &mut Self {
        self.allow_downgrade = allow;
        self
    }

    /// Called with a line of progress before each long step (for a CLI's
    /// stderr). Default: none.
    pub fn progress(&mut self, report: impl Fn(&str) + Send + Sync + 'static) -> &mut Self {
        self.progress = Some(Box::new(report));
        self
    }

    /// Boots.
    ///
    /// `Err` means no trust could be established: the anchor was refused
    /// (malformed, badly signed, expired, not the pinned one, a rollback or
    /// an unauthorised rotation), the manifest file could not be read, or
    /// the state directory or the audit log cannot be used. Every other refusal (the manifest, a component) is
    /// an `Ok` context whose [`BootContext::integrity_status`] and
    /// [`BootContext::outcome`] say what happened, with nothing of what
    /// failed in [`BootContext::components`].
    pub fn run(&self) -> Result<BootContext, BootError> {
        let now = self.now.unwrap_or_else(chrono::Utc::now);
        let emit = Emitter::new(self.audit.as_ref());
        if let Some(log) = &self.audit {
            log.ensure_writable()?;
        }
        let anchor_path = source_path(&self.anchor);
        emit.emit(
            &BootEvent::Started {
                policy: self.policy.as_str(),
                state_dir: self
                    .state
                    .as_ref()
                    .map(|s| s.dir().to_owned())
                    .or_else(|| self.state_dir.clone())
                    .map(|d| Untrusted::new(&d.display().to_string())),
                anchor: anchor_path,
                manifest: source_path(&self.manifest),
                allow_downgrade: self.allow_downgrade,
            },
            None,
        )?;

        // 1. The trust anchor.
        self.report_progress("verifying the trust anchor");
        let anchor = match &self.anchor {
            Source::Loaded(anchor) => anchor.clone(),
            Source::File(path) => {
                TrustAnchor::from_file(path).map_err(|e| self.refuse_anchor(&emit, e, None))?
            }
        };
        anchor
            .check_time(now)
            .map_err(|e| self.refuse_anchor(&emit, e, Some(&anchor)))?;
        let state = match (&self.state, &self.state_dir) {
            (Some(state), _) => Some(state.clone()),
            (None, Some(dir)) => Some(BootState::open(dir)?),
            (None, None) => None,
        };
        if let Some(state) = &state {
            state.set_max_tries(self.max_tries);
            if let Some(log) = &self.audit {
                state.set_audit(log.clone());
            }
        }
        let pin = match &state {
            Some(state) => self.check_pin(&emit, state, &anchor)?,
            None => "unpinned",
        };
        let mut run = Run {
            emit,
            now,
            measurements: Vec::new(),
            register: MeasurementRegister::new(),
        };
        run.measure(anchor_measurement(&anchor, now));
        run.emit.emit(
            &BootEvent::AnchorVerified {
                anchor_id: anchor.id().to_string(),
                version: anchor.version(),
                digest: anchor.digest().to_hex(),
                signers: anchor.signers().iter().map(ToString::to_string).collect(),
                expires_at: anchor.expires_at(),
                pin,
            },
            None,
        )?;

        // 2. The boot manifest.
        self.report_progress("verifying the boot manifest");
        let loaded = match &self.manifest {
            Source::Loaded(manifest) => Ok(manifest.clone()),
            Source::File(path) => BootManifest::from_file(path),
        };
        let manifest = match loaded {
            Ok(manifest) => manifest,
            Err(error) => return self.manifest_refused(run, anchor, state, None, error),
        };
        let signers = match manifest.verify(&anchor, now).and_then(|signers| {
            self.check_manifest_version(&run.emit, state.as_ref(), &manifest)
                .map(|()| signers)
        }) {
            Ok(signers) => signers,
            Err(error) => return self.manifest_refused(run, anchor, state, Some(&manifest), error),
        };
        run.measure(manifest_measurement(
            &manifest,
            now,
            MeasurementStatus::Valid,
            None,
        ));
        run.emit.emit(
            &BootEvent::ManifestVerified {
                release: manifest.release().to_owned(),
                version: manifest.version(),
                digest: manifest.digest().to_hex(),
                signers: signers.iter().map(ToString::to_string).collect(),
                components: manifest.components().len(),
                expires_at: manifest.document().expires_at,
            },
            None,
        )?;
        if let Some(state) = &state {
            state.record_manifest(&manifest);
        }

        // 3. The components.
        let mut components = Vec::new();
        let mut recovered = Vec::new();
        let mut left_out = Vec::new();
        for entry in manifest.components() {
            self.report_progress(&format!(
                "measuring {} {} ({})",
                entry.name,
                entry.version,
                bytesize::ByteSize::b(entry.size)
            ));
            match self.measure_component(&run.emit, state.as_ref(), &manifest, entry, &signers) {
                Ok(component) => {
                    run.measure(component_measurement(
                        entry,
                        Some(component.digest()),
                        now,
                        MeasurementStatus::Valid,
                        None,
                    ));
                    run.emit.emit(
                        &BootEvent::ComponentMeasured {
                            name: entry.name.clone(),
                            version: entry.version.clone(),
                            digest: component.digest().to_hex(),
                            expected: entry.blake3.to_hex(),
                            size: entry.size,
                            status: MeasurementStatus::Valid.as_str(),
                        },
                        Some(component.digest()),
                    )?;
                    components.push(component);
                }
                Err((error, measured)) => {
                    if matches!(error, BootError::Audit(_) | BootError::StateCorrupt { .. }) {
                        return Err(error);
                    }
                    let status = if measured.is_some() {
                        MeasurementStatus::Invalid
                    } else {
                        MeasurementStatus::NotMeasured
                    };
                    run.measure(component_measurement(
                        entry,
                        measured,
                        now,
                        status,
                        Some(error.to_string()),
                    ));
                    run.emit.emit(
                        &BootEvent::ComponentRefused {
                            name: Untrusted::new(&entry.name),
                            version: Some(entry.version.clone()),
                            code: error.code(),
                            reason: error.to_string(),
                            expected: Some(entry.blake3.to_hex()),
                            measured: measured.map(|d| d.to_hex()),
                        },
                        Some(measured.unwrap_or(entry.blake3)),
                    )?;
                    match self.recover(
                        &mut run,
                        state.as_ref(),
                        &anchor,
                        entry,
                        &error,
                        measured,
                        &signers,
                    )? {
                        Some((component, reason)) => {
                            recovered.push(Recovery {
                                name: entry.name.clone(),
                                failed_digest: measured,
                                reason,
                                digest: component.digest(),
                                version: component.version().to_owned(),
                            });
                            components.push(component);
                        }
                        None => {
                            if self.policy == BootPolicy::Degraded {
                                run.emit.emit(
                                    &BootEvent::ComponentLeftOut {
                                        name: entry.name.clone(),
                                        reason: error.to_string(),
                                        policy: self.policy.as_str(),
                                    },
                                    Some(entry.blake3),
                                )?;
                            }
                            left_out.push(LeftOut {
                                name: entry.name.clone(),
                                version: entry.version.clone(),
                                reason: error.to_string(),
                            });
                        }
                    }
                }
            }
        }

        // 4. The outcome.
        let (outcome, integrity) = if left_out.is_empty() {
            let outcome = if recovered.is_empty() {
                BootOutcome::Verified
            } else {
                BootOutcome::Recovered
            };
            (outcome, IntegrityStatus::Verified)
        } else {
            let reasons = left_out
                .iter()
                .map(|l| format!("{}: {}", l.name, l.reason))
                .collect::<Vec<_>>()
                .join("; ");
            match self.policy {
                BootPolicy::Degraded => (
                    BootOutcome::Degraded,
                    IntegrityStatus::Compromised(format!(
                        "degraded: {} component(s) left out ({reasons})",
                        left_out.len()
                    )),
                ),
                BootPolicy::FailClosed => (
                    BootOutcome::Compromised,
                    IntegrityStatus::Compromised(format!("failed closed: {reasons}")),
                ),
            }
        };
        if outcome == BootOutcome::Compromised {
            components.clear();
        }
        if let Some(state) = &state {
            if outcome != BootOutcome::Compromised {
                for component in &components {
                    if matches!(component.provenance(), Provenance::Manifest { .. }) {
                        state.store_copy(component, &manifest, now, true)?;
                    }
                }
            }
            state.prune_and_save()?;
        }
        let ctx = BootContext {
            trust_anchor: anchor,
            boot_measurements: run.measurements,
            integrity_status: integrity,
            boot_time: now,
            outcome,
            components,
            recovered,
            left_out,
            register: run.register.value(),
            release: Some(manifest.release().to_owned()),
            manifest_version: Some(manifest.version()),
            quote: None,
            state,
        };
        self.complete(&run.emit, ctx)
    }

    fn report_progress(&self, line: &str) {
        if let Some(report) = &self.progress {
            report(line);
        }
    }

    /// Audits an anchor refusal; returns the error to propagate (the audit
    /// error, if the refusal itself cannot be audited).
    fn refuse_anchor(
        &self,
        emit: &Emitter<'_>,
        error: BootError,
        anchor: Option<&TrustAnchor>,
    ) -> BootError {
        if let BootError::Rollback {
            what,
            found,
            highest,
        } = &error
            && let Err(audit) = emit.emit(
                &BootEvent::RollbackRefused {
                    what: what.clone(),
                    found: found.clone(),
                    highest: highest.clone(),
                },
                None,
            )
        {
            return audit;
        }
        match emit.emit(
            &BootEvent::AnchorRefused {
                code: error.code(),
                reason: error.to_string(),
                anchor_id: anchor.map(|a| a.id().to_string()),
                version: anchor.map(TrustAnchor::version),
            },
            None,
        ) {
            Ok(()) => error,
            Err(audit) => audit,
        }
    }

    /// Pins the anchor on first use; afterwards accepts the pinned one, an
    /// authorised rotation, or (explicitly) a downgrade.
    fn check_pin(
        &self,
        emit: &Emitter<'_>,
        state: &BootState,
        anchor: &TrustAnchor,
    ) -> Result<&'static str, BootError> {
        let refuse = |e| self.refuse_anchor(emit, e, Some(anchor));
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
            let previous = pinned.verify_successor(anchor).map_err(refuse)?;
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
        if !self.allow_downgrade {
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

    fn check_manifest_version(
        &self,
        emit: &Emitter<'_>,
        state: Option<&BootState>,
        manifest: &BootManifest,
    ) -> Result<(), BootError> {
        let Some((highest, digest)) = state.and_then(BootState::manifest_record) else {
            return Ok(());
        };
        let what = "boot manifest".to_owned();
        if manifest.version() < highest {
            if !self.allow_downgrade {
                emit.emit(
                    &BootEvent::RollbackRefused {
                        what: what.clone(),
                        found: manifest.version().to_string(),
                        highest: highest.to_string(),
                    },
                    None,
                )?;
                return Err(BootError::Rollback {
                    what,
                    found: manifest.version().to_string(),
                    highest: highest.to_string(),
                });
            }
            emit.emit(
                &BootEvent::DowngradeAllowed {
                    what,
                    from: highest.to_string(),
                    to: manifest.version().to_string(),
                },
                None,
            )?;
        } else if manifest.version() == highest && manifest.digest() != digest {
            return Err(BootError::VersionConflict {
                what,
                version: highest.to_string(),
            });
        }
        Ok(())
    }

    /// Ends a boot whose manifest was refused: Compromised, nothing runs.
    fn manifest_refused(
        &self,
        mut run: Run<'_>,
        anchor: TrustAnchor,
        state: Option<BootState>,
        manifest: Option<&BootManifest>,
        error: BootError,
    ) -> Result<BootContext, BootError> {
        if let BootError::Audit(_) = error {
            return Err(error);
        }
        // A manifest that cannot be read at all is an input error, not a
        // verdict on the boot: audited, then returned as `Err`.
        if manifest.is_none()
            && matches!(
                error,
                BootError::Io { .. }
                    | BootError::Missing { .. }
                    | BootError::NotAFile { .. }
                    | BootError::Changed { .. }
            )
        {
            run.emit.emit(
                &BootEvent::ManifestRefused {
                    code: error.code(),
                    reason: error.to_string(),
                    release: None,
                    version: None,
                },
                None,
            )?;
            return Err(error);
        }
        let status = match manifest {
            Some(_) => MeasurementStatus::Invalid,
            None => MeasurementStatus::NotMeasured,
        };
        let measurement = match manifest {
            Some(m) => manifest_measurement(m, run.now, status, Some(error.to_string())),
            None => Measurement {
                component: MANIFEST_MEASUREMENT.into(),
                kind: MeasurementKind::Manifest,
                version: String::new(),
                hash: String::new(),
                expected_hash: String::new(),
                timestamp: run.now,
                status,
                reason: Some(error.to_string()),
            },
        };
        run.measure(measurement);
        run.emit.emit(
            &BootEvent::ManifestRefused {
                code: error.code(),
                reason: error.to_string(),
                release: manifest.map(|m| Untrusted::new(m.release())),
                version: manifest.map(BootManifest::version),
            },
            None,
        )?;
        if let Some(state) = &state {
            state.save()?;
        }
        let ctx = BootContext {
            trust_anchor: anchor,
            boot_measurements: run.measurements,
            integrity_status: IntegrityStatus::Compromised(format!(
                "boot manifest refused: {error}"
            )),
            boot_time: run.now,
            outcome: BootOutcome::Compromised,
            components: Vec::new(),
            recovered: Vec::new(),
            left_out: Vec::new(),
            register: run.register.value(),
            release: None,
            manifest_version: None,
            quote: None,
            state,
        };
        self.complete(&run.emit, ctx)
    }

    /// Writes `boot.completed` and signs the quote.
    fn complete(&self, emit: &Emitter<'_>, mut ctx: BootContext) -> Result<BootContext, BootError> {
        emit.emit(
            &BootEvent::Completed {
                outcome: ctx.outcome.as_str(),
                integrity: ctx.integrity_status.to_string(),
                register: ctx.register.to_hex(),
                components: ctx
                    .components
                    .iter()
                    .map(|c| format!("{}@{} {}", c.name(), c.version(), c.digest()))
                    .collect(),
                recovered: ctx.recovered.iter().map(|r| r.name.clone()).collect(),
                left_out: ctx.left_out.iter().map(|l| l.name.clone()).collect(),
                measurements: ctx.boot_measurements.len(),
            },
            None,
        )?;
        if let Some(key) = &self.host_key {
            let quote = ctx.sign_quote(key, self.quote_nonce.as_deref());
            emit.emit(
                &BootEvent::QuoteSigned {
                    register: ctx.register.to_hex(),
                    host_key: key.id().to_string(),
                    quote_digest: quote.digest().to_hex(),
                    nonce: self.quote_nonce.as_deref().map(Untrusted::new),
                },
                None,
            )?;
            ctx.quote = Some(quote);
        }
        Ok(ctx)
    }

    /// Checks one manifest entry: rollback, boot assessment, then the bytes
    /// (read once, hashed while read), then the Wasm header. On failure,
    /// returns the digest of the bytes if they were measured.
    // The error is large, but this is a private function on the refusal path.
    #[allow(clippy::result_large_err)]
    fn measure_component(
        &self,
        emit: &Emitter<'_>,
        state: Option<&BootState>,
        manifest: &BootManifest,
        entry: &ManifestComponent,
        signers: &[KeyId],
    ) -> Result<VerifiedComponent, (BootError, Option<Digest>)> {
        if let Some(state) = state {
            self.check_component_version(emit, state, entry)
                .map_err(|e| (e, None))?;
            if let Some(bad) = state
                .copies(&entry.name)
                .into_iter()
                .find(|c| c.digest == entry.blake3 && c.status == CopyStatus::Bad)
            {
                return Err((
                    BootError::MarkedBad {
                        name: entry.name.clone(),
                        digest: bad.digest,
                        failures: bad.failures,
                    },
                    None,
                ));
            }
        }
        let path = manifest.path_of(entry);
        let (bytes, digest) = read_component(
            &path,
            &entry.name,
            self.max_component_size,
            Some(entry.size),
        )
        .map_err(|e| (e, None))?;
        if digest != entry.blake3 {
            return Err((
                BootError::DigestMismatch {
                    name: entry.name.clone(),
                    expected: entry.blake3,
                    actual: digest,
                },
                Some(digest),
            ));
        }
        wasm_kind(&bytes).map_err(|reason| {
            (
                BootError::NotWasm {
                    name: entry.name.clone(),
                    reason,
                },
                Some(digest),
            )
        })?;
        Ok(VerifiedComponent::verified(
            entry.name.clone(),
            entry.version.clone(),
            digest,
            bytes,
            signers.to_vec(),
            Provenance::Manifest {
                release: manifest.release().to_owned(),
            },
        ))
    }

    fn check_component_version(
        &self,
        emit: &Emitter<'_>,
        state: &BootState,
        entry: &ManifestComponent,
    ) -> Result<(), BootError> {
        let Some(highest) = state.highest_version(&entry.name) else {
            return Ok(());
        };
        let highest_v = semver::Version::parse(&highest).map_err(|e| BootError::StateCorrupt {
            path: state.dir().join("state.json"),
            reason: format!(
                "component {} highest version `{}`: {e}",
                entry.name,
                super::shown(&highest)
            ),
        })?;
        let version = parse_version(&format!("component {}", entry.name), &entry.version)?;
        if version >= highest_v {
            return Ok(());
        }
        let what = format!("component {}", entry.name);
        if !self.allow_downgrade {
            emit.emit(
                &BootEvent::RollbackRefused {
                    what: what.clone(),
                    found: entry.version.clone(),
                    highest: highest.clone(),
                },
                Some(entry.blake3),
            )?;
            return Err(BootError::Rollback {
                what,
                found: entry.version.clone(),
                highest,
            });
        }
        emit.emit(
            &BootEvent::DowngradeAllowed {
                what,
                from: highest,
                to: entry.version.clone(),
            },
            Some(entry.blake3),
        )?;
        Ok(())
    }

    /// Looks for a last-known-good copy of `entry` that still verifies:
    /// the exact bytes the manifest lists first, then good copies, then
    /// pending ones, newest first; never a copy marked bad, and after a
    /// rollback refusal never one older than the highest accepted version.
    #[allow(clippy::too_many_arguments)]
    fn recover(
        &self,
        run: &mut Run<'_>,
        state: Option<&BootState>,
        anchor: &TrustAnchor,
        entry: &ManifestComponent,
        error: &BootError,
        failed: Option<Digest>,
        signers: &[KeyId],
    ) -> Result<Option<(VerifiedComponent, String)>, BootError> {
        let Some(state) = state else {
            return Ok(None);
        };
        let floor = match error {
            BootError::Rollback { .. } => state
                .highest_version(&entry.name)
                .and_then(|h| semver::Version::parse(&h).ok()),
            _ => None,
        };
        let mut candidates: Vec<StoredCopy> = state
            .copies(&entry.name)
            .into_iter()
            .filter(|c| c.status != CopyStatus::Bad && Some(c.digest) != failed)
            .filter(|c| match (&floor, semver::Version::parse(&c.version)) {
                (Some(floor), Ok(v)) => v >= *floor,
                (Some(_), Err(_)) => false,
                (None, _) => true,
            })
            .collect();
        // Stable sort of the newest-first list: exact match, then good, then pending.
        candidates.sort_by_key(|c| {
            let exact = c.digest == entry.blake3 && c.version == entry.version;
            (!exact, c.status != CopyStatus::Good)
        });
        for copy in candidates {
            self.report_progress(&format!(
                "trying the last-known-good copy of {} ({})",
                entry.name,
                copy.digest.short()
            ));
            match self.verify_copy(state, anchor, entry, &copy, error, signers, run.now) {
                Ok(component) => {
                    let reason = format!(
                        "{}; booted the last-known-good copy {}@{} instead",
                        error,
                        component.version(),
                        component.digest()
                    );
                    run.measure(Measurement {
                        component: entry.name.clone(),
                        kind: MeasurementKind::Recovery,
                        version: component.version().to_owned(),
                        hash: component.digest().to_hex(),
                        expected_hash: copy.digest.to_hex(),
                        timestamp: run.now,
                        status: MeasurementStatus::Valid,
                        reason: Some(reason.clone()),
                    });
                    run.emit.emit(
                        &BootEvent::ComponentRecovered {
                            name: entry.name.clone(),
                            failed_digest: failed.map(|d| d.to_hex()),
                            digest: component.digest().to_hex(),
                            version: component.version().to_owned(),
                            reason: error.to_string(),
                        },
                        Some(component.digest()),
                    )?;
                    return Ok(Some((component, reason)));
                }
                Err(copy_error) => {
                    run.emit.emit(
                        &BootEvent::ComponentRefused {
                            name: Untrusted::new(&entry.name),
                            version: Some(copy.version.clone()),
                            code: copy_error.code(),
                            reason: format!(
                                "last-known-good copy {} does not verify: {copy_error}",
                                copy.digest
                            ),
                            expected: Some(copy.digest.to_hex()),
                            measured: None,
                        },
                        Some(copy.digest),
                    )?;
                }
            }
        }
        Ok(None)
    }

    /// Re-verifies a stored copy: its bytes against its digest, its header,
    /// and its authorisation: the current manifest when it lists exactly
    /// these bytes, otherwise the stored manifest that listed them, which
    /// must still verify under the current anchor (signatures and expiry).
    #[allow(clippy::too_many_arguments)]
    fn verify_copy(
        &self,
        state: &BootState,
        anchor: &TrustAnchor,
        entry: &ManifestComponent,
        copy: &StoredCopy,
        error: &BootError,
        signers: &[KeyId],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<VerifiedComponent, BootError> {
        let path = state.object_path(&copy.digest);
        let (bytes, digest) =
            read_component(&path, &entry.name, self.max_component_size, Some(copy.size))?;
        if digest != copy.digest {
            return Err(BootError::DigestMismatch {
                name: entry.name.clone(),
                expected: copy.digest,
                actual: digest,
            });
        }
        wasm_kind(&bytes).map_err(|reason| BootError::NotWasm {
            name: entry.name.clone(),
            reason,
        })?;
        let (version, signers) = if copy.digest == entry.blake3 && copy.size == entry.size {
            (entry.version.clone(), signers.to_vec())
        } else {
            let stored = BootManifest::from_file(state.manifest_path(&copy.manifest))?;
            if stored.digest() != copy.manifest {
                return Err(BootError::StateCorrupt {
                    path: state.manifest_path(&copy.manifest),
                    reason: format!("holds manifest {}", stored.digest()),
                });
            }
            let signers = stored.verify(anchor, now)?;
            let listed = stored
                .components()
                .iter()
                .find(|c| c.name == entry.name && c.blake3 == copy.digest && c.size == copy.size)
                .ok_or_else(|| BootError::Invalid {
                    what: format!("stored manifest {} v{}", stored.release(), stored.version()),
                    reason: format!("does not list {} {}", entry.name, copy.digest),
                })?;
            (listed.version.clone(), signers)
        };
        Ok(VerifiedComponent::verified(
            entry.name.clone(),
            version,
            digest,
            bytes,
            signers,
            Provenance::Recovered {
                reason: error.to_string(),
            },
        ))
    }
}

fn source_path<T>(source: &Source<T>) -> Option<Untrusted> {
    match source {
        Source::File(p) => Some(Untrusted::new(&p.display().to_string())),
        Source::Loaded(_) => None,
    }
}

/// The measurement state of one boot.
struct Run<'a> {
    emit: Emitter<'a>,
    now: chrono::DateTime<chrono::Utc>,
    measurements: Vec<Measurement>,
    register: MeasurementRegister,
}

impl Run<'_> {
    fn measure(&mut self, measurement: Measurement) {
        self.register.extend_measurement(&measurement);
        self.measurements.push(measurement);
    }
}

/// The anchor's measurement when it is accepted.
pub(crate) fn anchor_measurement(
    anchor: &TrustAnchor,
    now: chrono::DateTime<chrono::Utc>,
) -> Measurement {
    Measurement {
        component: ANCHOR_MEASUREMENT.into(),
        kind: MeasurementKind::Anchor,
        version: anchor.version().to_string(),
        hash: anchor.digest().to_hex(),
        expected_hash: anchor.digest().to_hex(),
        timestamp: now,
        status: MeasurementStatus::Valid,
        reason: None,
    }
}

/// The manifest's measurement.
pub(crate) fn manifest_measurement(
    manifest: &BootManifest,
    now: chrono::DateTime<chrono::Utc>,
    status: MeasurementStatus,
    reason: Option<String>,
) -> Measurement {
    Measurement {
        component: MANIFEST_MEASUREMENT.into(),
        kind: MeasurementKind::Manifest,
        version: manifest.version().to_string(),
        hash: manifest.digest().to_hex(),
        expected_hash: if status == MeasurementStatus::Valid {
            manifest.digest().to_hex()
        } else {
            String::new()
        },
        timestamp: now,
        status,
        reason,
    }
}

/// A component's measurement.
pub(crate) fn component_measurement(
    entry: &ManifestComponent,
    measured: Option<Digest>,
    now: chrono::DateTime<chrono::Utc>,
    status: MeasurementStatus,
    reason: Option<String>,
) -> Measurement {
    Measurement {
        component: entry.name.clone(),
        kind: MeasurementKind::Component,
        version: entry.version.clone(),
        hash: measured.map(|d| d.to_hex()).unwrap_or_default(),
        expected_hash: entry.blake3.to_hex(),
        timestamp: now,
        status,
        reason,
    }
}

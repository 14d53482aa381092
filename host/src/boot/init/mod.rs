//! The boot itself, phase by phase: the trust anchor ([`anchor`]), the
//! boot manifest ([`manifest`]), the components ([`components`]) with
//! recovery from last-known-good copies ([`recovery`]), and the outcome,
//! the state and the quote ([`outcome`]). A boot by per-component
//! signatures ([`signatures`]) replaces the manifest and components phases.
//! [`BootBuilder`] holds the configuration and runs the phases in order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::audit::{AuditLog, Untrusted};
use crate::boot::anchor::TrustAnchor;
use crate::boot::context::{BootContext, BootFile, FileKey, LeftOut, Recovery, Slot};
use crate::boot::event::{BootEvent, Emitter};
use crate::boot::manifest::BootManifest;
use crate::boot::measure::{Measurement, MeasurementRegister};
use crate::boot::read::DEFAULT_MAX_COMPONENT_SIZE;
use crate::boot::state::{BootState, DEFAULT_MAX_TRIES};
use crate::boot::statement::default_signature_path;
use crate::boot::status::BootPolicy;
use crate::boot::{BootError, VerifiedComponent};
use crate::keys::SigningKey;

mod anchor;
mod components;
mod manifest;
mod outcome;
mod recovery;
mod signatures;

use manifest::ManifestPhase;

/// A progress reporter.
type ProgressFn = Box<dyn Fn(&str) + Send + Sync>;
/// Told which lock it waits for.
type LockWaitFn = Box<dyn Fn(&Path) + Send + Sync>;

enum Source<T> {
    Loaded(T),
    File(PathBuf),
}

/// What is booted: the components a signed manifest lists, or component
/// files that each carry their own signature.
enum Mode {
    Manifest(Source<BootManifest>),
    Signatures(Vec<SignedFile>),
}

/// A component file and its signature file.
struct SignedFile {
    path: PathBuf,
    signature: PathBuf,
}

/// Boots with everything beyond the anchor and manifest made explicit.
///
/// Two modes, one result ([`BootContext`]): a boot of the components a
/// signed boot manifest lists ([`BootBuilder::new`],
/// [`BootBuilder::from_files`]), and a boot of component files that each
/// carry their own signature ([`BootBuilder::signatures`]).
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
    mode: Mode,
    /// `component` was called on a manifest boot.
    misplaced_component: bool,
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
    allow_recovery_downgrade: bool,
    progress: Option<ProgressFn>,
    lock_timeout: Duration,
    on_lock_wait: Option<LockWaitFn>,
}

impl std::fmt::Debug for BootBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Manifest(_) => "manifest",
            Mode::Signatures(_) => "signatures",
        };
        f.debug_struct("BootBuilder")
            .field("mode", &mode)
            .field("state_dir", &self.state_dir)
            .field("policy", &self.policy)
            .field("now", &self.now)
            .field("max_tries", &self.max_tries)
            .field("max_component_size", &self.max_component_size)
            .field("allow_downgrade", &self.allow_downgrade)
            .field("allow_recovery_downgrade", &self.allow_recovery_downgrade)
            .field("lock_timeout", &self.lock_timeout)
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
        Self::with(
            Source::Loaded(anchor),
            Mode::Manifest(Source::Loaded(manifest.clone())),
        )
    }

    /// A boot that loads both files itself, so that a refused anchor or
    /// manifest file is audited like every other refusal.
    pub fn from_files(anchor: impl AsRef<Path>, manifest: impl AsRef<Path>) -> BootBuilder {
        Self::with(
            Source::File(anchor.as_ref().to_owned()),
            Mode::Manifest(Source::File(manifest.as_ref().to_owned())),
        )
    }

    /// A boot by per-component signatures under the anchor file `anchor`:
    /// each file added with [`BootBuilder::component`] is read once and
    /// verified against its own signature as [`ComponentCheck`] does
    /// (audited as `boot.component.verified` / `boot.component.refused`),
    /// and measured into the register after the anchor.
    ///
    /// With a state directory the anchor is pinned and each component's
    /// highest accepted version enforced and recorded, as in a manifest
    /// boot; but once the state directory has accepted a boot manifest
    /// version, this boot is refused ([`BootError::ManifestRequired`]):
    /// deleting the manifest must not drop its rollback protection.
    ///
    /// There is no recovery in this mode (no manifest authorises a stored
    /// copy): under [`BootPolicy::FailClosed`] and [`BootPolicy::Recover`] a
    /// refused component makes the boot compromised, under
    /// [`BootPolicy::Degraded`] it is left out and the rest runs.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), forgeone::boot::BootError> {
    /// use forgeone::boot::BootBuilder;
    /// let ctx = BootBuilder::signatures("trust_anchor.json")
    ///     .component("app.wasm", None) // signature: app.wasm.sig.json
    ///     .component("auth.wasm", Some("signatures/auth.json".into()))
    ///     .state_dir("/var/lib/forgeone/boot")
    ///     .run()?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`ComponentCheck`]: crate::boot::ComponentCheck
    pub fn signatures(anchor: impl AsRef<Path>) -> BootBuilder {
        Self::with(
            Source::File(anchor.as_ref().to_owned()),
            Mode::Signatures(Vec::new()),
        )
    }

    /// Adds the component file `path` to a boot by signatures
    /// ([`BootBuilder::signatures`]), verified against `signature`
    /// (default: `path` with `.sig.json` appended). Components are
    /// measured in the order they are added; a file added twice is booted
    /// once. On a manifest boot, which boots what its manifest lists,
    /// [`BootBuilder::run`] refuses to start ([`BootError::Invalid`]).
    pub fn component(&mut self, path: impl Into<PathBuf>, signature: Option<PathBuf>) -> &mut Self {
        let path = path.into();
        match &mut self.mode {
            Mode::Signatures(files) => files.push(SignedFile {
                signature: signature.unwrap_or_else(|| default_signature_path(&path)),
                path,
            }),
            Mode::Manifest(_) => self.misplaced_component = true,
        }
        self
    }

    fn with(anchor: Source<TrustAnchor>, mode: Mode) -> BootBuilder {
        BootBuilder {
            anchor,
            mode,
            misplaced_component: false,
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
            allow_recovery_downgrade: false,
            progress: None,
            lock_timeout: Duration::ZERO,
            on_lock_wait: None,
        }
    }

    /// The state directory (pinning, rollback protection, last-known-good
    /// copies, try counters), opened and locked by [`BootBuilder::run`].
    /// Default: none.
    pub fn state_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// How long [`BootBuilder::run`] waits for the state directory while
    /// another process holds it (a second host on one directory, one more
    /// run in a script) before [`BootError::StateLocked`]. Default: zero,
    /// no wait.
    pub fn lock_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.lock_timeout = timeout;
        self
    }

    /// Called once, with the state directory's lock file, when
    /// [`BootBuilder::run`] begins to wait for it (so that a CLI can say
    /// why it pauses). Default: none.
    pub fn on_lock_wait(&mut self, tell: impl Fn(&Path) + Send + Sync + 'static) -> &mut Self {
        self.on_lock_wait = Some(Box::new(tell));
        self
    }

    /// An already open state directory (takes precedence over
    /// [`BootBuilder::state_dir`]). Default: none.
    pub fn state(&mut self, state: BootState) -> &mut Self {
        self.state = Some(state);
        self
    }

    /// What a refused component does to the boot: fail closed at once,
    /// recover from a last-known-good copy or fail closed, or recover or
    /// leave it out (see [`BootPolicy`]). Default: [`BootPolicy::FailClosed`]
    /// (no recovery).
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
    /// [`DEFAULT_MAX_COMPONENT_SIZE`](crate::boot::DEFAULT_MAX_COMPONENT_SIZE) (256 MiB).
    pub fn max_component_size(&mut self, bytes: u64) -> &mut Self {
        self.max_component_size = bytes;
        self
    }

    /// Accept an older anchor, manifest or component version than the
    /// highest accepted one when it is the one presented (the anchor file,
    /// the manifest, a version the manifest lists); every such downgrade is
    /// audited (`boot.downgrade.allowed`) and becomes the new recorded
    /// version. It does not let recovery fall back to an older copy: see
    /// [`BootBuilder::allow_recovery_downgrade`]. Default: false.
    pub fn allow_downgrade(&mut self, allow: bool) -> &mut Self {
        self.allow_downgrade = allow;
        self
    }

    /// Let recovery ([`BootPolicy::Recover`], [`BootPolicy::Degraded`]) fall
    /// back to a last-known-good copy older than the highest accepted
    /// version of its component: the larger of the version the state
    /// directory records and the version the verified manifest lists (with
    /// [`BootBuilder::allow_downgrade`], the listed one). A boot that does is
    /// [`BootOutcome::Downgraded`](crate::boot::BootOutcome::Downgraded)
    /// (its integrity is not `Verified`), each fall-back is audited as
    /// `boot.component.downgraded` (component, from and to versions,
    /// digests) and listed with
    /// [`Recovery::downgraded_from`](crate::boot::Recovery::downgraded_from),
    /// and the recorded highest version stays where it was.
    ///
    /// Without it such a copy is not used (`boot.component.refused` with
    /// code `recovery-downgrade`): the component has no usable copy, and the
    /// refusal says a downgrade would have been needed. Default: false.
    pub fn allow_recovery_downgrade(&mut self, allow: bool) -> &mut Self {
        self.allow_recovery_downgrade = allow;
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
    /// an unauthorised rotation), the manifest file could not be read, a
    /// boot by signatures met a state directory that has accepted a
    /// manifest ([`BootError::ManifestRequired`]), or the state directory
    /// or the audit log cannot be used. Every other refusal (the manifest,
    /// a component) is an `Ok` context whose
    /// [`BootContext::integrity_status`] and [`BootContext::outcome`] say
    /// what happened, with nothing of what failed in
    /// [`BootContext::components`].
    pub fn run(&self) -> Result<BootContext, BootError> {
        if self.misplaced_component {
            return Err(BootError::Invalid {
                what: "boot".into(),
                reason: "component() adds files to a boot by per-component signatures \
                         (BootBuilder::signatures); a manifest boot boots what its manifest lists"
                    .into(),
                source: None,
            });
        }
        let now = self.now.unwrap_or_else(chrono::Utc::now);
        let emit = Emitter::new(self.audit.as_ref());
        if let Some(log) = &self.audit {
            log.ensure_writable()?;
        }
        let (mode, manifest) = match &self.mode {
            Mode::Manifest(source) => ("manifest", source_path(source)),
            Mode::Signatures(_) => ("signatures", None),
        };
        emit.emit(
            &BootEvent::Started {
                mode,
                policy: self.policy.as_str(),
                state_dir: self
                    .state
                    .as_ref()
                    .map(|s| s.dir().to_owned())
                    .or_else(|| self.state_dir.clone())
                    .map(|d| Untrusted::new(&d.display().to_string())),
                anchor: source_path(&self.anchor),
                manifest,
                allow_downgrade: self.allow_downgrade,
                allow_recovery_downgrade: self.allow_recovery_downgrade,
            },
            None,
        )?;
        let mut run = self.trust_anchor(emit, now)?;
        let source = match &self.mode {
            Mode::Manifest(source) => source,
            Mode::Signatures(files) => {
                let tally = self.signed_components(&mut run, files)?;
                return self.outcome(run, None, tally);
            }
        };
        let (manifest, signers) = match self.boot_manifest(&mut run, source) {
            ManifestPhase::Verified(manifest, signers) => (manifest, signers),
            ManifestPhase::Refused(manifest, error) => {
                return self.manifest_refused(run, manifest.as_ref(), error);
            }
        };
        let tally = self.components(&mut run, &manifest, &signers)?;
        self.outcome(run, Some(manifest), tally)
    }

    fn report_progress(&self, line: &str) {
        if let Some(report) = &self.progress {
            report(line);
        }
    }
}

fn source_path<T>(source: &Source<T>) -> Option<Untrusted> {
    match source {
        Source::File(p) => Some(Untrusted::new(&p.display().to_string())),
        Source::Loaded(_) => None,
    }
}

/// What the components phase found: what runs, what was recovered, what
/// was left out.
#[derive(Default)]
struct Tally {
    components: Vec<VerifiedComponent>,
    recovered: Vec<Recovery>,
    left_out: Vec<LeftOut>,
    files: Vec<BootFile>,
}

impl Tally {
    /// `component`, read from `path`, runs.
    fn runs(&mut self, path: &Path, component: VerifiedComponent) {
        self.files.push(BootFile {
            path: path.to_owned(),
            key: FileKey::of(path),
            slot: Slot::Runs(self.components.len()),
        });
        self.components.push(component);
    }

    /// The component read from `left_out.path` does not run.
    fn left_out(&mut self, left_out: LeftOut) {
        self.files.push(BootFile {
            path: left_out.path.clone(),
            key: FileKey::of(&left_out.path),
            slot: Slot::LeftOut(self.left_out.len()),
        });
        self.left_out.push(left_out);
    }

    /// Nothing runs: every component that verified becomes a left-out one
    /// with `reason`.
    fn hold_back(&mut self, reason: &str) {
        let components = std::mem::take(&mut self.components);
        for file in &mut self.files {
            if let Slot::Runs(i) = file.slot {
                let component = &components[i];
                file.slot = Slot::LeftOut(self.left_out.len());
                self.left_out.push(LeftOut {
                    name: component.name().to_owned(),
                    version: component.version().to_owned(),
                    path: file.path.clone(),
                    reason: reason.to_owned(),
                });
            }
        }
    }
}

/// One boot in progress: its clock, its audit, its measurements so far, the
/// anchor it trusts and the state directory it uses.
struct Run<'a> {
    emit: Emitter<'a>,
    now: chrono::DateTime<chrono::Utc>,
    measurements: Vec<Measurement>,
    register: MeasurementRegister,
    anchor: TrustAnchor,
    state: Option<BootState>,
}

impl Run<'_> {
    fn measure(&mut self, measurement: Measurement) {
        self.register.extend_measurement(&measurement);
        self.measurements.push(measurement);
    }
}

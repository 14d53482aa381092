//! `forgeone boot` and `forgeone verify-quote`

use std::path::PathBuf;
use std::process::ExitCode;

use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{
    self, BootBuilder, BootContext, BootOutcome, BootPolicy, Digest, MeasurementStatus, QuoteCheck,
};
use forgeone::{PublicKey, SigningKey};

use crate::anchor::{boot_failure, load_public, load_signing, write_file};
use crate::util::{CmdResult, Failure};

/// Exit code of a boot that recovered a component from its last-known-good copy.
pub const EXIT_RECOVERED: u8 = 4;
/// Exit code of a boot that left a component out (degraded policy).
pub const EXIT_DEGRADED: u8 = 5;
/// Exit code of a boot that runs an older last-known-good copy than the
/// highest accepted version (only with --allow-recovery-downgrade).
pub const EXIT_DOWNGRADED: u8 = 6;

const BOOT_EXIT_CODES: &str = "\
Exit codes:
  0  verified: every component verified as listed
  1  compromised or refused: the anchor or manifest was refused, or a component
     failed under --policy fail-closed, or failed with no good copy under
     --policy recover (nothing runs)
  2  bad command line
  3  could not do the work: missing or unreadable input, state or audit log
  4  recovered: every component runs verified, some from their last-known-good copy
  5  degraded: a component was left out (--policy degraded)
  6  downgraded: a component runs from a last-known-good copy older than the
     highest accepted version (--allow-recovery-downgrade)";

/// Boot: verify the trust anchor, the boot manifest and every component,
/// recover from last-known-good copies, and print the measurements.
#[derive(Debug, clap::Args)]
#[command(after_help = BOOT_EXIT_CODES)]
pub struct Args {
    /// The trust anchor.
    #[arg(long, value_name = "FILE", env = "FORGEONE_ANCHOR")]
    anchor: PathBuf,
    /// The boot manifest.
    #[arg(long, value_name = "FILE")]
    manifest: PathBuf,
    /// State directory: pinned anchor, highest versions (rollback
    /// protection), last-known-good copies, try counters. Without it there
    /// is no pinning, rollback protection or recovery.
    #[arg(long, value_name = "DIR", env = "FORGEONE_BOOT_STATE")]
    state: Option<PathBuf>,
    /// What a component that fails does to the boot: fail-closed (alias
    /// strict: nothing runs), recover (run its last-known-good copy, else
    /// nothing runs) or degraded (run its last-known-good copy, else run the
    /// rest without it).
    #[arg(long, value_name = "POLICY", default_value = "fail-closed")]
    policy: BootPolicy,
    /// Accept an older anchor, manifest or component version (audited).
    #[arg(long)]
    allow_downgrade: bool,
    /// Let recovery fall back to a last-known-good copy older than the
    /// highest accepted version (audited as boot.component.downgraded; the
    /// boot is reported as downgraded, never as verified). By default such
    /// a copy is not used.
    #[arg(long)]
    allow_recovery_downgrade: bool,
    /// Failed starts in a row after which a new version is marked bad.
    #[arg(long, default_value_t = 3)]
    max_tries: u32,
    /// Largest component accepted (e.g. `256MiB`).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = forgeone::deployment::parse_size)]
    max_component_size: u64,
    /// Host private key: signs the boot quote and the audit log's checkpoints.
    #[arg(long, value_name = "KEY.pem", env = "FORGEONE_HOST_KEY")]
    host_key: Option<PathBuf>,
    /// Write every boot step to this audit log (needs the host key).
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Write the boot quote (the report signed by the host key) here.
    #[arg(long, value_name = "FILE")]
    quote: Option<PathBuf>,
    /// A verifier's challenge to put in the quote.
    #[arg(long, value_name = "TEXT")]
    nonce: Option<String>,
    /// Print the boot report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> CmdResult {
    let host_key = args.host_key.as_deref().map(load_signing).transpose()?;
    if args.quote.is_some() && host_key.is_none() {
        return Err(Failure::input(
            "--quote needs --host-key (or FORGEONE_HOST_KEY): the host key signs the quote",
        ));
    }
    let audit = match &args.audit_log {
        Some(path) => {
            let key = host_key.as_ref().ok_or_else(|| {
                Failure::input("--audit-log needs --host-key (or FORGEONE_HOST_KEY): it signs the log's checkpoints")
            })?;
            let key = SigningKey::from_pem(&key.to_pem()).map_err(Failure::input)?;
            Some(AuditLog::open(path, key, &AuditConfig::new()).map_err(Failure::input)?)
        }
        None => None,
    };
    let mut builder = BootBuilder::from_files(&args.anchor, &args.manifest);
    builder
        .policy(args.policy)
        .allow_downgrade(args.allow_downgrade)
        .allow_recovery_downgrade(args.allow_recovery_downgrade)
        .max_tries(args.max_tries)
        .max_component_size(args.max_component_size);
    if let Some(dir) = &args.state {
        builder.state_dir(dir);
    }
    if let Some(log) = &audit {
        builder.audit(log.clone());
    }
    if let Some(key) = host_key {
        builder.host_key(key);
    }
    if let Some(nonce) = &args.nonce {
        builder.quote_nonce(nonce);
    }
    if !args.quiet {
        builder.progress(|line| eprintln!("forgeone: {line}"));
    }
    let result = builder.run();
    if let Some(log) = &audit {
        log.close().map_err(Failure::input)?;
    }
    let ctx = result.map_err(boot_failure)?;
    if let (Some(path), Some(quote)) = (&args.quote, &ctx.quote) {
        write_file(path, &quote.to_json())?;
    }
    if args.json {
        let report = match &ctx.quote {
            Some(quote) => quote.report().clone(),
            None => ctx.report(None, args.nonce.as_deref()),
        };
        let mut value = serde_json::to_value(report).expect("JSON");
        value["recovered"] = serde_json::to_value(&ctx.recovered).expect("JSON");
        value["left_out"] = serde_json::to_value(&ctx.left_out).expect("JSON");
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
    } else {
        print_report(&ctx);
        if let Some(path) = &args.quote {
            println!("quote      {}", path.display());
        }
    }
    Ok(ExitCode::from(exit_code(ctx.outcome)))
}

/// The documented exit code of a boot outcome.
pub fn exit_code(outcome: BootOutcome) -> u8 {
    match outcome {
        BootOutcome::Verified => 0,
        BootOutcome::Recovered => EXIT_RECOVERED,
        BootOutcome::Degraded => EXIT_DEGRADED,
        BootOutcome::Downgraded => EXIT_DOWNGRADED,
        _ => 1,
    }
}

pub fn print_report(ctx: &BootContext) {
    let short = |hex: &str| {
        if hex.is_empty() {
            "-".to_owned()
        } else {
            hex.chars().take(12).collect()
        }
    };
    println!(
        "{:<16} {:<10} {:<12}  {:<12}  STATUS",
        "COMPONENT", "VERSION", "EXPECTED", "MEASURED"
    );
    for m in &ctx.boot_measurements {
        let status = match (m.kind, m.status) {
            (boot::MeasurementKind::Recovery, MeasurementStatus::Valid) => "recovered",
            (_, status) => status.as_str(),
        };
        println!(
            "{:<16} {:<10} {:<12}  {:<12}  {status}",
            m.component,
            m.version,
            short(&m.expected_hash),
            short(&m.hash)
        );
    }
    for m in &ctx.boot_measurements {
        if m.status != MeasurementStatus::Valid
            && let Some(reason) = &m.reason
        {
            println!("  {}: {reason}", m.component);
        }
    }
    println!("integrity  {}", ctx.integrity_status);
    println!("outcome    {}", ctx.outcome.as_str());
    for r in &ctx.recovered {
        println!(
            "recovered  {} -> last-known-good {}@{}",
            r.name,
            r.version,
            r.digest.short()
        );
    }
    for l in &ctx.left_out {
        println!("left out   {} {}", l.name, l.version);
    }
    println!("register   {}", ctx.register);
}

/// Check a boot quote: signed by the host key, its register consistent with
/// its measurements and, if given, equal to the expected register.
#[derive(Debug, clap::Args)]
pub struct QuoteArgs {
    /// The quote (from `forgeone boot --quote`).
    #[arg(value_name = "QUOTE")]
    quote: PathBuf,
    /// The host's public key (SPKI PEM).
    #[arg(long, value_name = "PUB.pem", env = "FORGEONE_HOST_PUB")]
    host_pub: PathBuf,
    /// The register the boot must have reached (64 hex).
    #[arg(long, value_name = "HEX", conflicts_with_all = ["anchor", "manifest"])]
    expected_register: Option<String>,
    /// Compute the expected register from this anchor (with --manifest).
    #[arg(long, value_name = "FILE", requires = "manifest")]
    anchor: Option<PathBuf>,
    /// Compute the expected register from this manifest (with --anchor).
    #[arg(long, value_name = "FILE", requires = "anchor")]
    manifest: Option<PathBuf>,
    /// The challenge the quote must carry.
    #[arg(long, value_name = "TEXT")]
    nonce: Option<String>,
    /// Refuse a quote whose integrity is not verified.
    #[arg(long)]
    require_verified: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn verify_quote(args: QuoteArgs) -> CmdResult {
    let host: PublicKey = load_public(&args.host_pub)?;
    let bytes = std::fs::read(&args.quote)
        .map_err(|e| Failure::input(format!("{}: {e}", args.quote.display())))?;
    let mut check = QuoteCheck::new();
    check.require_verified(args.require_verified);
    if let Some(hex) = &args.expected_register {
        let digest = Digest::from_hex(hex).ok_or_else(|| {
            Failure::input(format!(
                "--expected-register `{hex}` is not 64 lower-case hex characters"
            ))
        })?;
        check.expected_register(digest);
    }
    if let (Some(anchor), Some(manifest)) = (&args.anchor, &args.manifest) {
        let anchor = boot::TrustAnchor::from_file(anchor).map_err(boot_failure)?;
        let manifest = boot::BootManifest::from_file(manifest).map_err(boot_failure)?;
        manifest
            .verify(&anchor, chrono::Utc::now())
            .map_err(boot_failure)?;
        check.expected_register(boot::expected_register(&anchor, &manifest));
    }
    if let Some(nonce) = &args.nonce {
        check.nonce(nonce);
    }
    let report = boot::verify_quote(&bytes, &host, &check).map_err(boot_failure)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
    } else {
        println!(
            "quote verified: host key {}, boot {}, outcome {}, integrity {}",
            host.id(),
            report
                .boot_time
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            report.outcome.as_str(),
            report.integrity
        );
        println!("register   {}", report.register);
        for c in &report.components {
            println!(
                "component  {}@{} {}{}",
                c.name,
                c.version,
                c.digest,
                if c.recovered { " (recovered)" } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    //! The CLI verbs end to end, in process: parsed by the real `Cli`,
    //! dispatched as `main` does, exit codes as documented.

    use std::path::Path;
    use std::process::ExitCode;

    use clap::Parser as _;

    fn forgeone(args: &[&str]) -> ExitCode {
        let cli =
            crate::Cli::try_parse_from(std::iter::once("forgeone").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let result = crate::dispatch(cli.command);
        match result {
            Ok(code) => code,
            Err(failure) => ExitCode::from(failure.code),
        }
    }

    fn s(path: &Path) -> &str {
        path.to_str().unwrap()
    }

    #[test]
    fn keys_anchor_sign_verify_manifest_boot_tamper_recover_quote() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        for key in ["root", "root2", "release", "host"] {
            assert_eq!(
                forgeone(&["keygen", s(&p(&format!("{key}.pem")))]),
                ExitCode::SUCCESS
            );
        }
        let anchor = p("trust_anchor.json");
        assert_eq!(
            forgeone(&[
                "anchor",
                "init",
                "--root-key",
                s(&p("root.pub.pem")),
                "--release-key",
                s(&p("release.pub.pem")),
                "--sign-key",
                s(&p("root.pem")),
                "-o",
                s(&anchor),
            ]),
            ExitCode::SUCCESS
        );
        assert_eq!(forgeone(&["anchor", "show", s(&anchor)]), ExitCode::SUCCESS);

        // A component: a component header and a custom section.
        let mut wasm = b"\0asm\x0d\0\x01\0".to_vec();
        wasm.extend([0, 9, 4, b'n', b'o', b't', b'e', 1, 2, 3, 4]);
        std::fs::create_dir(p("release")).unwrap();
        let component = p("release/app.wasm");
        std::fs::write(&component, &wasm).unwrap();
        let key = p("release.pem");
        assert_eq!(
            forgeone(&[
                "sign",
                s(&component),
                "--key",
                s(&key),
                "--version",
                "1.0.0"
            ]),
            ExitCode::SUCCESS
        );
        assert!(p("release/app.wasm.sig.json").is_file());
        assert_eq!(
            forgeone(&["verify", s(&component), "--anchor", s(&anchor)]),
            ExitCode::SUCCESS
        );
        assert_eq!(
            forgeone(&[
                "verify",
                s(&component),
                "--anchor",
                s(&anchor),
                "--name",
                "other",
                "--json"
            ]),
            ExitCode::from(1)
        );

        let manifest = p("release/manifest.json");
        assert_eq!(
            forgeone(&[
                "manifest",
                "create",
                "--release",
                "r1",
                "--manifest-version",
                "1",
                "-o",
                s(&manifest),
                &format!("app@1.0.0={}", s(&component)),
            ]),
            ExitCode::SUCCESS
        );
        // Unsigned: refused (1); signed: verifies.
        assert_eq!(
            forgeone(&["manifest", "show", s(&manifest), "--anchor", s(&anchor)]),
            ExitCode::from(1)
        );
        assert_eq!(
            forgeone(&["manifest", "sign", s(&manifest), "--key", s(&key)]),
            ExitCode::SUCCESS
        );
        assert_eq!(
            forgeone(&["manifest", "show", s(&manifest), "--anchor", s(&anchor)]),
            ExitCode::SUCCESS
        );

        let state = p("state");
        let boot = |extra: &[&str]| {
            let mut args = vec![
                "boot",
                "-q",
                "--anchor",
                s(&anchor),
                "--manifest",
                s(&manifest),
            ];
            args.extend_from_slice(extra);
            forgeone(&args)
        };
        let host = p("host.pem");
        let quote = p("quote.json");
        let log = p("boot.log");
        assert_eq!(
            boot(&[
                "--state",
                s(&state),
                "--host-key",
                s(&host),
                "--audit-log",
                s(&log),
                "--quote",
                s(&quote)
            ]),
            ExitCode::SUCCESS
        );
        // (Checked through the library: `forgeone audit verify` is not ours.)
        let mut options = forgeone::audit::VerifyOptions::new();
        options.key(forgeone::PublicKey::from_file(p("host.pub.pem")).unwrap());
        let report = forgeone::audit::verify_file(&log, &options).unwrap();
        assert!(report.records >= 6, "{report:?}");
        assert_eq!(
            forgeone(&[
                "verify-quote",
                s(&quote),
                "--host-pub",
                s(&p("host.pub.pem")),
                "--anchor",
                s(&anchor),
                "--manifest",
                s(&manifest),
                "--require-verified",
            ]),
            ExitCode::SUCCESS
        );
        assert_eq!(
            forgeone(&[
                "verify-quote",
                s(&quote),
                "--host-pub",
                s(&p("root.pub.pem"))
            ]),
            ExitCode::from(1)
        );

        // Tamper: refused by verify, recovered by boot --policy recover (4);
        // without a good copy fail-closed (1) or degraded (5).
        wasm[10] ^= 1;
        std::fs::write(&component, &wasm).unwrap();
        assert_eq!(
            forgeone(&["verify", s(&component), "--anchor", s(&anchor)]),
            ExitCode::from(1)
        );
        assert_eq!(
            boot(&["--state", s(&state), "--policy", "recover"]),
            ExitCode::from(super::EXIT_RECOVERED)
        );
        // Fail-closed never falls back, even with a good copy at hand.
        assert_eq!(boot(&["--state", s(&state)]), ExitCode::from(1));
        assert_eq!(boot(&["--state", s(&p("fresh"))]), ExitCode::from(1));
        assert_eq!(
            boot(&["--state", s(&p("fresh2")), "--policy", "degraded", "--json"]),
            ExitCode::from(super::EXIT_DEGRADED)
        );
        // Missing input: 3.
        assert_eq!(
            forgeone(&[
                "boot",
                "--anchor",
                s(&p("nope.json")),
                "--manifest",
                s(&manifest)
            ]),
            ExitCode::from(3)
        );
        // --quote without a host key is an input error.
        assert_eq!(boot(&["--quote", s(&quote)]), ExitCode::from(3));

        // Rotation: the new root alone cannot authorise v2 (1); with the old root it can.
        let old_root_id = forgeone::SigningKey::from_file(p("root.pem"))
            .unwrap()
            .id()
            .to_string();
        let v2 = p("anchor-v2.json");
        let root2_pub = p("root2.pub.pem");
        let rotate = |signers: &[&str]| {
            let mut args = vec![
                "anchor",
                "rotate",
                "--anchor",
                s(&anchor),
                "--add-root",
                s(&root2_pub),
                "--remove",
                &old_root_id,
                "-o",
                s(&v2),
            ];
            for signer in signers {
                args.extend(["--sign-key", signer]);
            }
            forgeone(&args)
        };
        assert_eq!(rotate(&[s(&p("root2.pem"))]), ExitCode::from(1));
        assert_eq!(
            rotate(&[s(&p("root2.pem")), s(&p("root.pem"))]),
            ExitCode::SUCCESS
        );
        wasm[10] ^= 1;
        std::fs::write(&component, &wasm).unwrap();
        assert_eq!(
            forgeone(&[
                "boot",
                "-q",
                "--anchor",
                s(&v2),
                "--manifest",
                s(&manifest),
                "--state",
                s(&state)
            ]),
            ExitCode::SUCCESS
        );
        // And now v1 is a rollback.
        assert_eq!(boot(&["--state", s(&state)]), ExitCode::from(1));

        // Release 2 lists app 2.0.0, whose file is then damaged: its only
        // good copy is 1.0.0, older than the highest accepted version, so
        // recovery refuses it (1) unless a downgrade is allowed (6).
        let component2 = p("release/app2.wasm");
        let mut v2_bytes = wasm.clone();
        v2_bytes.push(0);
        std::fs::write(&component2, &v2_bytes).unwrap();
        let manifest2 = p("release/manifest2.json");
        assert_eq!(
            forgeone(&[
                "manifest",
                "create",
                "--release",
                "r2",
                "--manifest-version",
                "2",
                "--key",
                s(&key),
                "-o",
                s(&manifest2),
                &format!("app@2.0.0={}", s(&component2)),
            ]),
            ExitCode::SUCCESS
        );
        v2_bytes.push(0);
        std::fs::write(&component2, &v2_bytes).unwrap();
        let boot2 = |extra: &[&str]| {
            let mut args = vec![
                "boot",
                "-q",
                "--anchor",
                s(&v2),
                "--manifest",
                s(&manifest2),
                "--state",
                s(&state),
                "--policy",
                "recover",
            ];
            args.extend_from_slice(extra);
            forgeone(&args)
        };
        assert_eq!(boot2(&[]), ExitCode::from(1));
        assert_eq!(
            boot2(&["--allow-recovery-downgrade"]),
            ExitCode::from(super::EXIT_DOWNGRADED)
        );
    }
}

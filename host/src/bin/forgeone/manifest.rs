//! `forgeone manifest create|sign|show`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use forgeone::boot::{self, BootManifest, Envelope, ManifestDocument, TrustAnchor};

use crate::anchor::{boot_failure, load_signing, parse_expiry, write_file};
use crate::util::{CmdResult, Failure};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a boot manifest listing components (blake3 and size of each).
    ///
    /// Each COMPONENT is `PATH` (name: the file name without `.wasm`;
    /// version: the release) or `NAME@VERSION=PATH`. Paths must lie in the
    /// manifest's directory tree; they are stored relative to it.
    Create {
        /// The release the components belong to.
        #[arg(long)]
        release: String,
        /// The manifest version (increase it with every manifest).
        #[arg(long = "manifest-version", value_name = "N")]
        version: u64,
        /// Expiry: a duration from now or an RFC 3339 time.
        #[arg(long, value_name = "WHEN", default_value = "90days", value_parser = parse_expiry)]
        expires: chrono::DateTime<chrono::Utc>,
        /// Release private keys to sign with now (repeatable; or later with `manifest sign`).
        #[arg(long = "key", value_name = "KEY.pem")]
        keys: Vec<PathBuf>,
        /// Where to write the manifest.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// The components.
        #[arg(value_name = "COMPONENT", required = true)]
        components: Vec<String>,
    },
    /// Add release-key signatures to a manifest (rewritten in place).
    Sign {
        /// The manifest.
        #[arg(value_name = "MANIFEST")]
        manifest: PathBuf,
        /// A release private key. Repeatable.
        #[arg(long = "key", value_name = "KEY.pem", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Print a manifest; with `--anchor`, verify it and print the register a
    /// clean boot of it reaches (for `forgeone verify-quote --expected-register`).
    Show {
        /// The manifest.
        #[arg(value_name = "MANIFEST")]
        manifest: PathBuf,
        /// Verify against this anchor.
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Create {
            release,
            version,
            expires,
            keys,
            output,
            components,
        } => {
            let base = output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let base = std::fs::canonicalize(base)
                .map_err(|e| Failure::input(format!("{}: {e}", base.display())))?;
            let mut doc = ManifestDocument::new(&release, version, expires);
            let mut release_as_version = false;
            for spec in &components {
                let (name, component_version, path) = parse_component(spec, &release)?;
                release_as_version |= component_version == release && !spec.contains('@');
                let bytes = std::fs::read(&path)
                    .map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
                let absolute = std::fs::canonicalize(&path)
                    .map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
                let relative = absolute.strip_prefix(&base).map_err(|_| {
                    Failure::input(format!(
                        "{} is outside {}; component paths are relative to the manifest",
                        path.display(),
                        base.display()
                    ))
                })?;
                doc.add_component(name, component_version, relative.to_string_lossy(), &bytes);
            }
            // What the boot would refuse is refused now, before it is signed.
            doc.validate().map_err(|e| {
                let hint = if release_as_version && semver::Version::parse(&release).is_err() {
                    "; a component given as PATH takes the release as its version: give it as \
                     NAME@VERSION=PATH, or make --release a semantic version"
                } else {
                    ""
                };
                Failure::input(format!(
                    "refusing to create {}: {e}{hint}",
                    output.display()
                ))
            })?;
            let keys = keys
                .iter()
                .map(|p| load_signing(p))
                .collect::<Result<Vec<_>, _>>()?;
            let envelope = doc.sign(&keys.iter().collect::<Vec<_>>());
            write_file(&output, &envelope.to_json())?;
            let manifest = BootManifest::from_file(&output).map_err(boot_failure)?;
            print_manifest(&manifest);
            println!(
                "written    {} ({} signature(s))",
                output.display(),
                envelope.signatures().len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign { manifest, keys } => {
            let mut envelope =
                Envelope::from_file(&manifest, boot::MAX_MANIFEST_BYTES).map_err(boot_failure)?;
            for path in &keys {
                envelope.sign(&load_signing(path)?);
            }
            write_file(&manifest, &envelope.to_json())?;
            let ids: Vec<&str> = envelope
                .signatures()
                .iter()
                .map(|s| s.keyid.as_str())
                .collect();
            println!(
                "signed     {} (signatures by {})",
                manifest.display(),
                ids.iter()
                    .map(|id| forgeone::audit::escape_untrusted(id))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Show {
            manifest,
            anchor,
            json,
        } => {
            let manifest = BootManifest::from_file(&manifest).map_err(boot_failure)?;
            let verified = match &anchor {
                Some(path) => {
                    let anchor = TrustAnchor::from_file(path).map_err(boot_failure)?;
                    let result = manifest.verify(&anchor, chrono::Utc::now());
                    let register = boot::expected_register(&anchor, &manifest);
                    Some((result, register))
                }
                None => None,
            };
            if json {
                let mut value = serde_json::to_value(manifest.document()).expect("JSON");
                value["digest"] = serde_json::json!(manifest.digest());
                if let Some((result, register)) = &verified {
                    value["verified"] = serde_json::json!(result.is_ok());
                    value["expected_register"] = serde_json::json!(register);
                    match result {
                        Ok(signers) => value["signers"] = serde_json::json!(signers),
                        Err(e) => value["reason"] = serde_json::json!(e.to_string()),
                    }
                }
                println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
            } else {
                print_manifest(&manifest);
                if let Some((result, register)) = &verified {
                    match result {
                        Ok(signers) => {
                            let ids: Vec<String> =
                                signers.iter().map(ToString::to_string).collect();
                            println!("verified   by {}", ids.join(", "));
                            println!("expected register {register}");
                        }
                        Err(e) => println!("refused    {e}"),
                    }
                }
            }
            Ok(match verified {
                Some((Err(_), _)) => ExitCode::from(1),
                _ => ExitCode::SUCCESS,
            })
        }
    }
}

/// `PATH` or `NAME@VERSION=PATH`.
fn parse_component(spec: &str, release: &str) -> Result<(String, String, PathBuf), Failure> {
    if let Some((label, path)) = spec.split_once('=')
        && let Some((name, version)) = label.split_once('@')
    {
        return Ok((name.to_owned(), version.to_owned(), PathBuf::from(path)));
    }
    let path = PathBuf::from(spec);
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .ok_or_else(|| {
            Failure::input(format!(
                "`{spec}`: cannot derive a name; use NAME@VERSION=PATH"
            ))
        })?;
    Ok((name, release.to_owned(), path))
}

fn print_manifest(manifest: &BootManifest) {
    let doc = manifest.document();
    let esc = forgeone::audit::escape_untrusted;
    println!(
        "release    {} (manifest v{})",
        esc(&doc.release),
        doc.version
    );
    println!("digest     {}", manifest.digest());
    println!(
        "valid      {} .. {}",
        doc.issued_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        doc.expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    for c in &doc.components {
        println!(
            "component  {} {} {} {} bytes {}",
            esc(&c.name),
            esc(&c.version),
            c.blake3,
            c.size,
            esc(&c.path)
        );
    }
}

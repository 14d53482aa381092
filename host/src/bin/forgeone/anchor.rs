//! `forgeone anchor init|rotate|sign|show`, and helpers shared by the boot verbs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use forgeone::boot::{AnchorDocument, BootError, Envelope, Role, TrustAnchor};
use forgeone::{PublicKey, SigningKey};

use crate::util::{CmdResult, Failure};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a trust anchor (version 1) from root and release public keys.
    ///
    /// The anchor is self-signed by the `--sign-key` root keys; when fewer
    /// than the root threshold sign, collect the rest with `anchor sign`.
    Init {
        /// A root public key (SPKI PEM; a private key file also works). Repeat for several.
        #[arg(long = "root-key", value_name = "PUB.pem", required = true)]
        root_keys: Vec<PathBuf>,
        /// A release public key (signs manifests and components). Repeat for several.
        #[arg(long = "release-key", value_name = "PUB.pem", required = true)]
        release_keys: Vec<PathBuf>,
        /// A deploy public key: signs cluster deployments (`forgeone deploy
        /// --key`). Repeat for several. Without one, cluster hosts with this
        /// anchor refuse every deployment.
        #[arg(long = "deploy-key", value_name = "PUB.pem")]
        deploy_keys: Vec<PathBuf>,
        /// Root signatures required (on the anchor and on its rotations).
        #[arg(long, default_value_t = 1)]
        root_threshold: u64,
        /// Release signatures required (on manifests and component signatures).
        #[arg(long, default_value_t = 1)]
        release_threshold: u64,
        /// Expiry: a duration from now (`365days`) or an RFC 3339 time.
        #[arg(long, value_name = "WHEN", default_value = "365days", value_parser = parse_expiry)]
        expires: chrono::DateTime<chrono::Utc>,
        /// Free-form metadata `KEY=VALUE` (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
        metadata: Vec<(String, String)>,
        /// A root private key (PKCS#8 PEM) to sign with. Repeatable.
        #[arg(long = "sign-key", value_name = "KEY.pem")]
        sign_keys: Vec<PathBuf>,
        /// Where to write the anchor.
        #[arg(short, long, value_name = "FILE", default_value = "trust_anchor.json")]
        output: PathBuf,
    },
    /// Make the next version of an anchor: change keys or thresholds, and
    /// sign with a threshold of the current root keys and of the new ones.
    Rotate {
        /// The current anchor.
        #[arg(long, value_name = "FILE")]
        anchor: PathBuf,
        /// Add a root public key.
        #[arg(long = "add-root", value_name = "PUB.pem")]
        add_root: Vec<PathBuf>,
        /// Add a release public key.
        #[arg(long = "add-release", value_name = "PUB.pem")]
        add_release: Vec<PathBuf>,
        /// Remove a key by id.
        #[arg(long = "remove", value_name = "KEY_ID")]
        remove: Vec<String>,
        /// New root threshold (default: unchanged).
        #[arg(long)]
        root_threshold: Option<u64>,
        /// New release threshold (default: unchanged).
        #[arg(long)]
        release_threshold: Option<u64>,
        /// New expiry: a duration from now or an RFC 3339 time (default: unchanged).
        #[arg(long, value_name = "WHEN", value_parser = parse_expiry)]
        expires: Option<chrono::DateTime<chrono::Utc>>,
        /// A root private key, current or new, to sign with. Repeatable.
        #[arg(long = "sign-key", value_name = "KEY.pem")]
        sign_keys: Vec<PathBuf>,
        /// Where to write the new version.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Add signatures to an anchor envelope (for thresholds above one).
    Sign {
        /// The anchor file (rewritten in place).
        #[arg(value_name = "ANCHOR")]
        anchor: PathBuf,
        /// A private key to sign with. Repeatable.
        #[arg(long = "key", value_name = "KEY.pem", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Check an anchor and print its keys, thresholds and signers.
    Show {
        /// The anchor file.
        #[arg(value_name = "ANCHOR")]
        anchor: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Init {
            root_keys,
            release_keys,
            deploy_keys,
            root_threshold,
            release_threshold,
            expires,
            metadata,
            sign_keys,
            output,
        } => {
            let mut doc = AnchorDocument::new(expires);
            for path in &root_keys {
                doc.add_key(Role::Root, &load_public(path)?);
            }
            for path in &release_keys {
                doc.add_key(Role::Release, &load_public(path)?);
            }
            for path in &deploy_keys {
                doc.add_key(Role::Deploy, &load_public(path)?);
            }
            doc.thresholds.root = root_threshold;
            doc.thresholds.release = release_threshold;
            doc.metadata.extend(metadata);
            let mut envelope = doc.envelope();
            for path in &sign_keys {
                envelope.sign(&load_signing(path)?);
            }
            finish_anchor(&envelope, &output, None)
        }
        Command::Rotate {
            anchor,
            add_root,
            add_release,
            remove,
            root_threshold,
            release_threshold,
            expires,
            sign_keys,
            output,
        } => {
            let current = TrustAnchor::from_file(&anchor).map_err(boot_failure)?;
            let mut doc = current.document().clone();
            doc.version += 1;
            doc.issued_at = chrono::Utc::now();
            for id in &remove {
                let before = doc.keys.len();
                doc.keys.retain(|k| k.keyid != *id);
                if doc.keys.len() == before {
                    return Err(Failure::input(format!("anchor has no key {id}")));
                }
            }
            for path in &add_root {
                doc.add_key(Role::Root, &load_public(path)?);
            }
            for path in &add_release {
                doc.add_key(Role::Release, &load_public(path)?);
            }
            if let Some(t) = root_threshold {
                doc.thresholds.root = t;
            }
            if let Some(t) = release_threshold {
                doc.thresholds.release = t;
            }
            if let Some(e) = expires {
                doc.expires_at = e;
            }
            let mut envelope = doc.envelope();
            for path in &sign_keys {
                envelope.sign(&load_signing(path)?);
            }
            finish_anchor(&envelope, &output, Some(&current))
        }
        Command::Sign { anchor, keys } => {
            let mut envelope = Envelope::from_file(&anchor, forgeone::boot::MAX_ANCHOR_BYTES)
                .map_err(boot_failure)?;
            for path in &keys {
                let key = load_signing(path)?;
                envelope.sign(&key);
            }
            finish_anchor(&envelope, &anchor, None)
        }
        Command::Show { anchor, json } => {
            let anchor = TrustAnchor::from_file(&anchor).map_err(boot_failure)?;
            let now = chrono::Utc::now();
            let time = anchor.check_time(now);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "id": anchor.id(),
                        "version": anchor.version(),
                        "digest": anchor.digest(),
                        "issued_at": anchor.issued_at(),
                        "expires_at": anchor.expires_at(),
                        "thresholds": anchor.thresholds(),
                        "keys": anchor.public_keys().iter().map(|k| serde_json::json!({
                            "keyid": k.id(), "role": k.role(), "public_key": k.public_key().to_hex()
                        })).collect::<Vec<_>>(),
                        "signers": anchor.signers(),
                        "metadata": anchor.metadata(),
                        "valid_now": time.is_ok(),
                    }))
                    .expect("JSON")
                );
            } else {
                print_anchor(&anchor);
                if let Err(e) = &time {
                    println!("status     {e}");
                }
            }
            Ok(if time.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// Writes an anchor envelope, then reports whether it verifies (and, for a
/// rotation, whether the current anchor authorises it).
fn finish_anchor(envelope: &Envelope, output: &Path, previous: Option<&TrustAnchor>) -> CmdResult {
    write_file(output, &envelope.to_json())?;
    match TrustAnchor::from_bytes(&envelope.to_json()) {
        Ok(anchor) => {
            let rotation = previous.map(|p| p.verify_successor(&anchor));
            print_anchor(&anchor);
            println!("written    {}", output.display());
            match rotation {
                Some(Err(e)) => {
                    println!(
                        "incomplete {e}\n           add signatures with `forgeone anchor sign {} --key ROOT.pem`",
                        output.display()
                    );
                    Ok(ExitCode::from(1))
                }
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        Err(BootError::Threshold {
            required, found, ..
        }) => {
            println!(
                "written    {} (needs {} more root signature(s): `forgeone anchor sign {} --key ROOT.pem`)",
                output.display(),
                required - found,
                output.display()
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(boot_failure(e)),
    }
}

fn print_anchor(anchor: &TrustAnchor) {
    println!("anchor     {} v{}", anchor.id(), anchor.version());
    println!("digest     {}", anchor.digest());
    println!(
        "valid      {} .. {}",
        anchor
            .issued_at()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        anchor
            .expires_at()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let t = anchor.thresholds();
    println!(
        "thresholds root {} of {}, release {} of {}",
        t.root,
        anchor.keys_of(Role::Root).count(),
        t.release,
        anchor.keys_of(Role::Release).count()
    );
    let deploy = anchor.keys_of(Role::Deploy).count();
    if deploy > 0 {
        println!("           deploy {} of {deploy}", t.deploy);
    }
    for key in anchor.public_keys() {
        println!("key        {:<7} {}", key.role().as_str(), key.id());
    }
    let signers: Vec<String> = anchor.signers().iter().map(ToString::to_string).collect();
    println!("signed by  {}", signers.join(", "));
    for (k, v) in anchor.metadata() {
        println!(
            "meta       {}={}",
            forgeone::audit::escape_untrusted(k),
            forgeone::audit::escape_untrusted(v)
        );
    }
}

/// Maps a boot error to an exit code: 3 when the input could not be read
/// or used, 1 when it was checked and refused.
pub fn boot_failure(e: BootError) -> Failure {
    if e.is_operational() {
        Failure::input(e)
    } else {
        Failure::check(e)
    }
}

/// A public key from an SPKI PEM file, or the public half of a private key file.
pub fn load_public(path: &Path) -> Result<PublicKey, Failure> {
    match PublicKey::from_file(path) {
        Ok(key) => Ok(key),
        Err(public_error) => SigningKey::from_file(path)
            .map(|k| k.public().clone())
            .map_err(|_| Failure::input(public_error)),
    }
}

/// A private key file.
pub fn load_signing(path: &Path) -> Result<SigningKey, Failure> {
    SigningKey::from_file(path).map_err(Failure::input)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Failure::input(format!("{}: not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let io = |p: &Path, e: std::io::Error| Failure::input(format!("{}: {e}", p.display()));
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path, e)
    })
}

/// A point in the future: a duration from now (`90days`, `12h`) or an RFC
/// 3339 time. A time that is not in the future is refused: whatever it
/// dates would be refused as expired the moment it is used.
pub fn parse_expiry(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let now = chrono::Utc::now();
    let expiry = match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&chrono::Utc),
        Err(_) => {
            let duration = humantime::parse_duration(text).map_err(|_| {
                format!(
                    "`{text}` is neither a duration from now (90days, 12h) nor an RFC 3339 time"
                )
            })?;
            let duration = chrono::Duration::from_std(duration)
                .map_err(|_| format!("`{text}` is too far ahead"))?;
            now.checked_add_signed(duration)
                .ok_or_else(|| format!("`{text}` is too far ahead"))?
        }
    };
    if expiry <= now {
        return Err(format!(
            "`{text}` ({}) is not in the future; an expiry must be later than now",
            expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    Ok(expiry)
}

fn parse_meta(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

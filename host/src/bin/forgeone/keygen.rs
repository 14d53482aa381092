//! `forgeone keygen`

use std::path::PathBuf;
use std::process::ExitCode;

use forgeone::SigningKey;

use crate::util::{CmdResult, Failure};

/// Writes a new Ed25519 key pair and prints its key id.
///
/// The private key is written with mode 0600. Neither file is overwritten.
/// Keep private keys out of version control (the demo keeps its keys in the
/// git-ignored `.forgeone/` directory).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the private key (PKCS#8 PEM).
    #[arg(value_name = "PRIVATE.pem")]
    private: PathBuf,
    /// Where to write the public key (SPKI PEM). Default: the private key's
    /// path with `.pem` replaced by `.pub.pem`.
    #[arg(long, value_name = "PUBLIC.pem")]
    public: Option<PathBuf>,
    /// Print `{"key_id", "private", "public"}` as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> CmdResult {
    let public = args.public.unwrap_or_else(|| {
        let stem = args.private.to_string_lossy();
        PathBuf::from(match stem.strip_suffix(".pem") {
            Some(base) => format!("{base}.pub.pem"),
            None => format!("{stem}.pub.pem"),
        })
    });
    if let Some(dir) = args.private.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::input(format!("{}: {e}", dir.display())))?;
    }
    let key = SigningKey::generate();
    key.write_pair(&args.private, &public)
        .map_err(Failure::input)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"key_id": key.id(), "private": args.private, "public": public})
        );
    } else {
        println!("key id  {}", key.id());
        println!(
            "private {} (mode 0600; never commit it)",
            args.private.display()
        );
        println!("public  {}", public.display());
    }
    Ok(ExitCode::SUCCESS)
}

//! `forgeone verify`

use std::path::PathBuf;
use std::process::ExitCode;

use forgeone::boot::{BootError, ComponentCheck, TrustAnchor};

use crate::anchor::boot_failure;
use crate::util::CmdResult;

/// Verify a component against its signature under a trust anchor.
///
/// Prints `verified <name>@<version> <digest> by <key ids>`, or the precise
/// reason it is refused. Exit codes: 0 verified, 1 refused, 3 input
/// missing or unreadable.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component.
    #[arg(value_name = "COMPONENT.wasm")]
    component: PathBuf,
    /// The trust anchor.
    #[arg(long, value_name = "FILE", env = "FORGEONE_ANCHOR")]
    anchor: PathBuf,
    /// The signature. Default: COMPONENT.wasm.sig.json.
    #[arg(long, value_name = "FILE")]
    sig: Option<PathBuf>,
    /// Refuse a signature for another component name.
    #[arg(long)]
    name: Option<String>,
    /// Refuse a signature for another version.
    #[arg(long)]
    version: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> CmdResult {
    let anchor = TrustAnchor::from_file(&args.anchor).map_err(boot_failure)?;
    let mut check = ComponentCheck::new(&anchor);
    if let Some(sig) = &args.sig {
        check.signature_path(sig);
    }
    if let Some(name) = &args.name {
        check.expect_name(name);
    }
    if let Some(version) = &args.version {
        check.expect_version(version);
    }
    match check.verify_file(&args.component) {
        Ok(component) => {
            let signers: Vec<String> = component
                .signers()
                .iter()
                .map(ToString::to_string)
                .collect();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "verified": true,
                        "name": component.name(),
                        "version": component.version(),
                        "digest": component.digest(),
                        "size": component.bytes().len(),
                        "signers": signers,
                        "anchor": anchor.id(),
                    })
                );
            } else {
                println!(
                    "verified {}@{} {} by {}",
                    component.name(),
                    component.version(),
                    component.digest(),
                    signers.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if args.json => {
            println!(
                "{}",
                serde_json::json!({"verified": false, "code": e.code(), "reason": e.to_string()})
            );
            Err(boot_failure(e))
        }
        Err(e) => Err(refused(e)),
    }
}

fn refused(e: BootError) -> crate::util::Failure {
    let mut failure = boot_failure(e);
    if failure.code == 1 {
        failure.message = format!("refused: {}", failure.message);
    }
    failure
}

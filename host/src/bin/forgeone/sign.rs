//! `forgeone sign`

use std::path::PathBuf;
use std::process::ExitCode;

use forgeone::boot::{ComponentStatement, Digest};

use crate::anchor::{load_signing, parse_expiry, write_file};
use crate::util::{CmdResult, Failure};

/// Sign a component: writes a DSSE envelope over its statement (name,
/// version, size, blake3 of every byte, issue time, optional expiry) to
/// `COMPONENT.wasm.sig.json`. The component itself is not changed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component.
    #[arg(value_name = "COMPONENT.wasm")]
    component: PathBuf,
    /// A release private key (PKCS#8 PEM). Repeat to collect a threshold.
    #[arg(long = "key", value_name = "KEY.pem", required = true)]
    keys: Vec<PathBuf>,
    /// The component name. Default: the file name without `.wasm`.
    #[arg(long)]
    name: Option<String>,
    /// The component version (semantic version).
    #[arg(long, default_value = "0.1.0")]
    version: String,
    /// Expiry of the signature: a duration from now or an RFC 3339 time. Default: none.
    #[arg(long, value_name = "WHEN", value_parser = parse_expiry)]
    expires: Option<chrono::DateTime<chrono::Utc>>,
    /// Where to write the signature. Default: COMPONENT.wasm.sig.json.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> CmdResult {
    let bytes = std::fs::read(&args.component)
        .map_err(|e| Failure::input(format!("{}: {e}", args.component.display())))?;
    if bytes.get(..4) != Some(b"\0asm".as_slice()) {
        return Err(Failure::check(format!(
            "{}: not WebAssembly (no `\\0asm` header); refusing to sign it",
            args.component.display()
        )));
    }
    let name = match args.name {
        Some(name) => name,
        None => args
            .component
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| Failure::input("cannot derive a name; pass --name"))?,
    };
    semver::Version::parse(&args.version)
        .map_err(|e| Failure::input(format!("--version `{}`: {e}", args.version)))?;
    let statement = ComponentStatement::new(&name, &args.version, &bytes, args.expires);
    let keys = args
        .keys
        .iter()
        .map(|p| load_signing(p))
        .collect::<Result<Vec<_>, _>>()?;
    let envelope = statement.sign(&keys.iter().collect::<Vec<_>>());
    let output = args.output.unwrap_or_else(|| {
        let mut p = args.component.clone().into_os_string();
        p.push(".sig.json");
        PathBuf::from(p)
    });
    write_file(&output, &envelope.to_json())?;
    let ids: Vec<String> = keys.iter().map(|k| k.id().to_string()).collect();
    println!(
        "signed {name}@{} {} ({} bytes) by {} -> {}",
        args.version,
        Digest::of(&bytes),
        bytes.len(),
        ids.join(", "),
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

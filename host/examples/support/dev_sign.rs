//! Shared by the embedding examples: signing a plugin for a self-contained
//! run, as a release pipeline would (not an example of its own).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use forgeone::SigningKey;
use forgeone::boot::{AnchorDocument, ComponentStatement, Role};

/// What a release pipeline does, for a self-contained run: a development
/// root and release key, an anchor trusting them, and the plugin's signature
/// in `dir` (temporary; no key outlives the example).
pub fn sign_for_development(plugin: &Path, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let root = SigningKey::generate();
    let release = SigningKey::generate();
    let mut document = AnchorDocument::new(chrono::Utc::now() + chrono::Duration::days(1));
    document
        .add_key(Role::Root, root.public())
        .add_key(Role::Release, release.public());
    let mut envelope = document.envelope();
    envelope.sign(&root);
    let anchor_path = dir.join("trust_anchor.json");
    std::fs::write(&anchor_path, envelope.to_json())?;
    let bytes = std::fs::read(plugin).with_context(|| format!("reading {}", plugin.display()))?;
    // Named as `forgeone sign` names it by default: the file stem.
    let name = plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the plugin's file name is not UTF-8")?;
    let copy = dir.join(format!("{name}.wasm"));
    std::fs::write(&copy, &bytes)?;
    let statement = ComponentStatement::new(name, "0.1.0", &bytes, None);
    std::fs::write(
        dir.join(format!("{name}.wasm.sig.json")),
        statement.sign(&[&release]).to_json(),
    )?;
    Ok((copy, anchor_path))
}

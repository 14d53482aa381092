//! Builds every guest the tests use, once, into `OUT_DIR`:
//!
//! - each member of the `samples/` workspace, for `wasm32-wasip2` (release);
//! - each `tests/fixtures/*.wat` (adversarial guests written by hand), to binary.
//!
//! It then writes `guests.rs` with one path constant per guest
//! (`HELLO`, `CPU_HOG`, ...) and a `foreach_guest!` macro, and fails the
//! build if a guest is not referenced by any test under `tests/all/`: a guest
//! nobody runs is dead weight that hides regressions (the habit of wasmtime's
//! `crates/test-programs/artifacts/build.rs`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());

    let mut guests: Vec<(String, PathBuf)> = Vec::new();
    guests.extend(build_samples(&root, &out_dir));
    guests.extend(build_fixtures(&manifest_dir, &out_dir));
    guests.sort();

    check_every_guest_is_tested(&manifest_dir.join("all"), &guests);
    write_constants(&out_dir, &guests);
}

/// Builds the `samples/` workspace and returns `(name, path)` per binary.
fn build_samples(root: &Path, out_dir: &Path) -> Vec<(String, PathBuf)> {
    let samples = root.join("samples");
    for watched in [
        "samples/Cargo.toml",
        "samples/Cargo.lock",
        "guest-sdk",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let members = sample_members(&samples);
    for member in &members {
        println!(
            "cargo:rerun-if-changed={}",
            samples.join(member).join("Cargo.toml").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            samples.join(member).join("src").display()
        );
    }

    ensure_wasm_target();

    let target_dir = out_dir.join("guest-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(samples.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--workspace");
    // The outer build's flags are for the host; the guests get none of them.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd
        .output()
        .expect("failed to run cargo to build the sample guests");
    if !output.status.success() {
        panic!(
            "building the sample guests failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    members
        .iter()
        .map(|member| {
            let wasm = target_dir
                .join(TARGET)
                .join("release")
                .join(format!("{}.wasm", member.replace('-', "_")));
            let alt = target_dir
                .join(TARGET)
                .join("release")
                .join(format!("{member}.wasm"));
            let path = if wasm.exists() { wasm } else { alt };
            assert!(
                path.exists(),
                "sample `{member}` built no component at {}",
                path.display()
            );
            (member.clone(), path)
        })
        .collect()
}

/// The `members = [..]` of `samples/Cargo.toml`, read with a tiny parser
/// (a build script with a TOML dependency would rebuild for every test run
/// that touches the lock file; the list is one line we control).
fn sample_members(samples: &Path) -> Vec<String> {
    let manifest = fs::read_to_string(samples.join("Cargo.toml")).expect("read samples/Cargo.toml");
    let start = manifest
        .find("members")
        .expect("samples/Cargo.toml has no `members`");
    let open = start + manifest[start..].find('[').unwrap();
    let close = open + manifest[open..].find(']').unwrap();
    manifest[open + 1..close]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// Installs the wasm32-wasip2 target when rustup is present but the target
/// is not (rustup only adds `rust-toolchain.toml` targets when it installs a
/// toolchain, not when the toolchain was already there).
fn ensure_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.as_deref().is_some_and(Path::exists) {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup (once)");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    match status {
        Ok(s) if s.success() => {}
        _ => panic!(
            "the {TARGET} target is missing and `rustup target add {TARGET}` failed; \
             install it by hand and rebuild"
        ),
    }
}

/// Compiles `tests/fixtures/*.wat` to binary Wasm.
fn build_fixtures(manifest_dir: &Path, out_dir: &Path) -> Vec<(String, PathBuf)> {
    let dir = manifest_dir.join("fixtures");
    println!("cargo:rerun-if-changed={}", dir.display());
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let fixtures_out = out_dir.join("fixtures");
    fs::create_dir_all(&fixtures_out).unwrap();
    let mut guests = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wat") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let binary = wat::parse_file(&path)
            .unwrap_or_else(|e| panic!("fixture {} does not parse: {e}", path.display()));
        let out = fixtures_out.join(format!("{name}.wasm"));
        fs::write(&out, binary).unwrap();
        guests.push((name, out));
    }
    guests
}

fn const_name(guest: &str) -> String {
    guest.to_uppercase().replace('-', "_")
}

/// Fails the build when a guest's constant appears in no test source.
fn check_every_guest_is_tested(tests_dir: &Path, guests: &[(String, PathBuf)]) {
    println!("cargo:rerun-if-changed={}", tests_dir.display());
    let mut sources = String::new();
    collect_sources(tests_dir, &mut sources);
    let untested: Vec<String> = guests
        .iter()
        .map(|(name, _)| const_name(name))
        .filter(|c| !sources.contains(&format!("guests::{c}")))
        .collect();
    if !untested.is_empty() {
        panic!(
            "these guests have no test: {}. Use `guests::NAME` in a test under tests/all/ \
             (or remove the guest).",
            untested.join(", ")
        );
    }
}

fn collect_sources(dir: &Path, into: &mut String) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_sources(&path, into);
        } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
            into.push_str(&fs::read_to_string(&path).unwrap());
        }
    }
}

fn write_constants(out_dir: &Path, guests: &[(String, PathBuf)]) {
    let mut code = String::from("// Generated by tests/build.rs. One constant per guest.\n");
    for (name, path) in guests {
        writeln!(code, "/// Path of the built `{name}` guest.").unwrap();
        writeln!(
            code,
            "pub const {}: &str = {:?};",
            const_name(name),
            path.display().to_string()
        )
        .unwrap();
    }
    code.push_str("/// Every guest: `(name, path)`.\npub const ALL: &[(&str, &str)] = &[\n");
    for (name, _) in guests {
        writeln!(code, "    ({name:?}, {}),", const_name(name)).unwrap();
    }
    code.push_str("];\n");
    fs::write(out_dir.join("guests.rs"), code).unwrap();
}

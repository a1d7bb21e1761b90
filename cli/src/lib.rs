//! The `portlease` command: port leases for shells, scripts and CI jobs, over the
//! `portlease` library.
//!
//! This crate is the command alone: argument parsing (clap), logging, the command's
//! one error type with the exit code of each error (`error`), and one file per
//! subcommand beside this one; `sockets` (who
//! binds a port, for `check`) lives here too, as only the command needs it. Its entry
//! points are [`main`], which reads the process's own arguments, and [`run`], which
//! takes them (the Python package's console script calls it).

#![deny(missing_docs)]

mod alloc;
mod args;
mod check;
mod completions;
mod error;
mod exec;
mod gc;
mod hand;
mod info;
mod kin;
mod list;
mod logger;
mod man;
mod output;
mod release;
mod renew;
mod serve;
mod sockets;

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use error::Error;
use portlease::Allocator;

pub(crate) use error::exit;

/// The examples that end `--help` and the manual page.
const EXAMPLES: &str = "\
Examples:
  PORT=$(portlease alloc)                 a port leased for 300 s
  portlease hand \"$PORT\" --to $!          ... then to the server just started
  portlease exec -- python3 -m http.server {PORT}
  portlease list";

/// What `--help` shows after the options: the exit codes, then examples.
fn after_help() -> String {
    format!("{}\n\n{EXAMPLES}", error::EXIT_CODES)
}

/// Port leases that never collide, shared by every process on this host.
#[derive(Parser)]
#[command(name = "portlease", version, about, after_help = after_help(), allow_negative_numbers = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options of every subcommand.
#[derive(clap::Args)]
pub(crate) struct Global {
    /// The registry directory [default: $PORTLEASE_DIR, else a per-user dir no other user can create]
    // Not clap's `env`: clap would read an empty $PORTLEASE_DIR as a `--dir` without a
    // value, even beside a `--dir` given (see `empty_dir_env`).
    #[arg(long, global = true, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    dir: Option<PathBuf>,
    /// Seconds to wait for the registry lock
    #[arg(long, global = true, value_name = "SECS", default_value = "30", value_parser = args::parse_seconds, allow_hyphen_values = true)]
    lock_timeout: Duration,
    /// Say more (-v: what is done, -vv: debugging)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

impl Global {
    /// The allocator on the chosen directory.
    pub(crate) fn allocator(&self) -> Result<Allocator, Error> {
        let dir = self.dir.clone().unwrap_or_else(portlease::default_dir);
        Ok(Allocator::with_dir(dir)?.lock_timeout(self.lock_timeout))
    }

    /// An allocator that only looks, for the commands that only read: it creates
    /// nothing, and works on a directory the user may read but not write. `Err` holds
    /// the directory when it does not exist (yet): nothing is leased there, which is
    /// no error for a command that only looks.
    pub(crate) fn reader(&self) -> Result<Result<Allocator, PathBuf>, Error> {
        let dir = self.dir.clone().unwrap_or_else(portlease::default_dir);
        match Allocator::existing(dir) {
            Ok(allocator) => Ok(Ok(allocator.lock_timeout(self.lock_timeout))),
            Err(portlease::Error::NoRegistry { dir }) => Ok(Err(dir)),
            Err(e) => Err(e.into()),
        }
    }

    /// The leases in the registry, read without changing anything; none when the
    /// registry directory does not exist (yet), with a note saying so.
    pub(crate) fn leases(&self) -> Result<Vec<portlease::LeaseInfo>, Error> {
        match self.reader()? {
            Ok(reader) => Ok(reader.leases()?),
            Err(dir) => {
                log::info!(
                    "{} does not exist yet: nothing is leased there",
                    dir.display()
                );
                Ok(Vec::new())
            }
        }
    }

    pub(crate) fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }
}

#[derive(Subcommand)]
enum Command {
    Alloc(alloc::AllocArgs),
    Release(release::ReleaseArgs),
    Renew(renew::RenewArgs),
    List(list::ListArgs),
    Gc(gc::GcArgs),
    Check(check::CheckArgs),
    Exec(exec::ExecArgs),
    Info(info::InfoArgs),
    Serve(serve::ServeArgs),
    Hand(hand::HandArgs),
    Completions(completions::CompletionsArgs),
    Man(man::ManArgs),
}

/// Whether this build has `portlease serve`: Linux's alone (it reads each client's
/// pid and user with `SO_PEERCRED`); elsewhere it says so and fails.
pub const SERVE: bool = cfg!(linux_kernel);

/// Runs the command line on this process's arguments; returns the exit code, for
/// `fn main() -> ExitCode` (a code above 255 is reported as 255).
pub fn main() -> std::process::ExitCode {
    let code = run(std::env::args_os());
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

/// Runs the command line on `args` (the first is the program's name, as in
/// `std::env::args_os()`); returns the exit code. Errors are printed to stderr.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return report_usage_error(e, &args),
    };
    if let Some(message) = empty_dir_env(&cli) {
        let help = subcommand_named(&args).map_or("portlease --help".into(), |name| {
            format!("portlease {name} --help")
        });
        output::note(format_args!("error: {message} (see `{help}`)"));
        return exit::USAGE;
    }
    let default_level = match cli.command {
        Command::Serve(_) => log::LevelFilter::Info,

        _ => log::LevelFilter::Warn,
    };
    logger::init(default_level, cli.global.verbose);
    let result = match &cli.command {
        Command::Alloc(args) => alloc::run(&cli.global, args),
        Command::Release(args) => release::run(&cli.global, args),
        Command::Renew(args) => renew::run(&cli.global, args),
        Command::List(args) => list::run(&cli.global, args),
        Command::Gc(args) => gc::run(&cli.global, args),
        Command::Check(args) => check::run(&cli.global, args),
        Command::Exec(args) => exec::run(&cli.global, args),
        Command::Info(args) => info::run(&cli.global, args),
        Command::Serve(args) => serve::run(&cli.global, args),
        Command::Hand(args) => hand::run(&cli.global, args),
        Command::Completions(args) => completions::run(Cli::command(), args),
        Command::Man(args) => man::run(Cli::command(), args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if !matches!(e, Error::StdoutClosed(_)) {
                output::note(format_args!("error: {e}"));
            }
            e.code()
        }
    }
}

/// Help and version go to stdout as clap writes them; errors become one line, pointing
/// at the help of the subcommand `args` name.
fn report_usage_error(error: clap::Error, args: &[std::ffi::OsString]) -> i32 {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) || error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        let _ = error.print();
        return if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            exit::USAGE
        } else {
            0
        };
    }
    // clap's message runs over several lines, then shows usage: keep the message, on
    // one line.
    let text = error.render().to_string();
    let message = text.split("\n\nUsage:").next().unwrap_or(&text);
    let message = message
        .split("\n\nFor more information")
        .next()
        .unwrap_or(message);
    let message = message.strip_prefix("error: ").unwrap_or(message);
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let subcommand = subcommand_named(args);
    let message = slip(&error, subcommand.as_deref()).unwrap_or(message);
    let help = match subcommand {
        Some(name) => format!("portlease {name} --help"),
        None => "portlease --help".into(),
    };
    output::note(format_args!("error: {message} (see `{help}`)"));
    exit::USAGE
}

/// What to say, instead of clap's message, for a common slip that clap cannot know
/// the fix of: a command after `exec` without `--`, and a count after `alloc` without
/// `--count`.
fn slip(error: &clap::Error, subcommand: Option<&str>) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let invalid = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.as_str(),
        _ => "",
    };
    match (error.kind(), subcommand) {
        (ErrorKind::UnknownArgument, Some("exec")) if !invalid.starts_with('-') => Some(format!(
            "unexpected argument {invalid:?}: put -- before the command, as in \
             `portlease exec [OPTIONS] -- {invalid} ...`"
        )),
        (ErrorKind::UnknownArgument, Some("alloc")) => {
            let number: u16 = invalid.parse().ok()?;
            let prefer = if number > 1024 {
                format!(", or --prefer {number} to try that port first")
            } else {
                String::new()
            };
            Some(format!(
                "unexpected argument {invalid:?}: `alloc` takes no ports or counts as \
                 arguments; did you mean --count {number}{prefer}?"
            ))
        }
        _ => None,
    }
}

/// The slip of an empty `$PORTLEASE_DIR` where no `--dir` is given (which the library
/// would read as unset, silently using the default registry instead).
fn empty_dir_env(cli: &Cli) -> Option<String> {
    let empty = std::env::var_os(portlease::DIR_ENV).is_some_and(|dir| dir.is_empty());
    (empty && cli.global.dir.is_none()).then(|| {
        format!(
            "${} is set but empty: unset it (`unset {}`) for the default registry, or set \
             it to a directory",
            portlease::DIR_ENV,
            portlease::DIR_ENV
        )
    })
}

/// The subcommand the command line `args` names (its first word that is one), for
/// pointing at the right help.
fn subcommand_named(args: &[std::ffi::OsString]) -> Option<String> {
    let command = Cli::command();
    args.iter()
        .skip(1)
        .filter_map(|arg| arg.to_str().map(str::to_owned))
        .take_while(|arg| arg != "--")
        .find(|arg| command.find_subcommand(arg).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_offers_every_subcommand() {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|sub| sub.get_name().to_owned())
            .collect();
        assert_eq!(names, man::SUBCOMMANDS);
    }
}

//! `portlease completions`: shell completion scripts, from the same clap definitions
//! that parse the command line.

use clap::ValueHint;
use clap_complete::Shell;

use super::output::print;

/// Print a completion script for a shell.
///
/// Example: portlease completions bash > ~/.local/share/bash-completion/completions/portlease
#[derive(clap::Args, Debug)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    #[arg(value_name = "SHELL")]
    shell: Shell,
}

pub(crate) fn run(
    command: clap::Command,
    args: &CompletionsArgs,
) -> Result<i32, crate::error::Error> {
    let mut command = no_file_names(command);
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "portlease", &mut script);
    print(&String::from_utf8_lossy(&script))?;
    Ok(0)
}

/// `command` with each value that is neither a path nor one of fixed values (ports,
/// ranges, pids, seconds, labels) marked as free text, so that the scripts do not
/// offer file names for it; fixed values (`--proto tcp|udp|both`) are offered as
/// they are.
fn no_file_names(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let free_text = arg.get_action().takes_values()
                && !arg.is_last_set()
                && arg.get_value_hint() == ValueHint::Unknown
                && arg.get_possible_values().is_empty();
            if free_text {
                arg.value_hint(ValueHint::Other)
            } else {
                arg
            }
        })
        .mut_subcommands(no_file_names)
}

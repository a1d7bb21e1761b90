//! `portlease completions`: shell completion scripts, from the same clap definitions
//! that parse the command line.

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

pub(crate) fn run(mut command: clap::Command, args: &CompletionsArgs) -> anyhow::Result<i32> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "portlease", &mut script);
    print(&String::from_utf8_lossy(&script))?;
    Ok(0)
}

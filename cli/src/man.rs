//! `portlease man`: the manual page, from the same clap definitions that parse the
//! command line.

use anyhow::Context;

use super::output::print;

/// Print the manual page (roff), of portlease or of one subcommand.
///
/// Example: portlease man | man -l -; portlease man alloc > portlease-alloc.1
#[derive(clap::Args, Debug)]
pub(crate) struct ManArgs {
    /// A subcommand whose page to print [default: portlease's own]
    #[arg(value_name = "SUBCOMMAND")]
    subcommand: Option<String>,
}

pub(crate) fn run(command: clap::Command, args: &ManArgs) -> anyhow::Result<i32> {
    let command = match &args.subcommand {
        None => command,
        Some(name) => {
            let names: Vec<String> = command
                .get_subcommands()
                .map(|sub| sub.get_name().to_owned())
                .collect();
            let sub = command.find_subcommand(name).cloned().ok_or_else(|| {
                super::args::UsageError(format!(
                    "no subcommand {name:?}: name one of {}",
                    names.join(", ")
                ))
            })?;
            sub.name(format!("portlease-{name}"))
        }
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .context("cannot render the manual page")?;
    print(&String::from_utf8_lossy(&page))?;
    Ok(0)
}

//! `portlease man`: the manual page, from the same clap definitions that parse the
//! command line.

use super::error::Error;
use super::output::print;

/// Print the manual page (roff), of portlease or of one subcommand.
///
/// Example: portlease man | man -l -; portlease man alloc > portlease-alloc.1
#[derive(clap::Args, Debug)]
pub(crate) struct ManArgs {
    /// A subcommand whose page to print [default: portlease's own]
    #[arg(value_name = "SUBCOMMAND", value_parser = SUBCOMMANDS)]
    subcommand: Option<String>,
}

/// The subcommands `man` has a page of, offered by the completion scripts.
pub(crate) const SUBCOMMANDS: [&str; 12] = [
    "alloc",
    "release",
    "renew",
    "list",
    "gc",
    "check",
    "exec",
    "info",
    "serve",
    "hand",
    "completions",
    "man",
];

pub(crate) fn run(command: clap::Command, args: &ManArgs) -> Result<i32, crate::error::Error> {
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
    let examples = command.get_after_help().map(ToString::to_string);
    let has_subcommands = command.has_subcommands();
    let has_version = command.get_version().is_some();
    // The exit codes and examples get sections of their own, not clap's "EXTRA".
    let man = clap_mangen::Man::new(command.after_help(None::<&str>));
    let mut page = Vec::new();
    let cannot = |e| Error::failure(format_args!("cannot render the manual page: {e}"));
    man.render_title(&mut page).map_err(cannot)?;
    man.render_name_section(&mut page).map_err(cannot)?;
    man.render_synopsis_section(&mut page).map_err(cannot)?;
    man.render_description_section(&mut page).map_err(cannot)?;
    man.render_options_section(&mut page).map_err(cannot)?;
    if has_subcommands {
        man.render_subcommands_section(&mut page).map_err(cannot)?;
    }
    page.extend_from_slice(roff_section("EXIT STATUS", crate::error::EXIT_CODES).as_bytes());
    if let Some(examples) = examples
        && let Some((_, examples)) = examples.split_once("Examples:\n")
    {
        page.extend_from_slice(roff_section("EXAMPLES", examples).as_bytes());
    }
    if has_version {
        man.render_version_section(&mut page).map_err(cannot)?;
    }
    print(&String::from_utf8_lossy(&page))?;
    Ok(0)
}

/// A manual page section titled `title` holding `text` as it is laid out (roff's
/// no-fill mode), its first line (a heading) left out when it ends with ':'.
fn roff_section(title: &str, text: &str) -> String {
    let mut lines = text.lines().peekable();
    if lines.peek().is_some_and(|line| line.ends_with(':')) {
        lines.next();
    }
    let mut section = format!(".SH \"{title}\"\n.nf\n");
    for line in lines {
        // Backslashes are roff's escapes; a line starting with . or ' a request.
        let line = line.replace('\\', "\\e");
        if line.starts_with(['.', '\'']) {
            section.push_str("\\&");
        }
        section.push_str(&line);
        section.push('\n');
    }
    section.push_str(".fi\n");
    section
}

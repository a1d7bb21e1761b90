//! `portlease release`: end leases now.

use portlease::LeaseInfo;

use super::Global;
use super::args::{UsageError, parse_port, parse_token};
use super::error::Error;
use super::kin;
use super::output::{note, print, printable};

/// End leases: the given ports, every lease with a label or an owner pid, or exactly
/// the lease named by a token.
///
/// A lease held by a running process is ended only when that process is this
/// command's own kin: its shell (the parent) or something that shell started. Another
/// shell's running job keeps its lease: without --force the command fails (exit code
/// 6), naming the holder, and ends nothing. A lease owned by no process can be ended
/// by anyone. Releasing a port that is not leased is not an error (it says so
/// on stderr).
///
/// --token ends exactly the lease `alloc --json` printed the token of, and nothing
/// else, so a retried release cannot end a lease made since on the same port. A token
/// that names no lease (released already, or ended) fails with exit code 1; one that
/// is not a token at all, with 2.
///
/// Example: portlease release 20000 20001; portlease release --token "$TOKEN"
#[derive(clap::Args, Debug)]
pub(crate) struct ReleaseArgs {
    /// The ports to release
    #[arg(value_name = "PORT", value_parser = parse_port)]
    ports: Vec<u16>,
    /// Release every lease with this label
    #[arg(long, value_name = "TEXT", conflicts_with = "ports")]
    label: Option<String>,
    /// Release every lease owned by this process
    #[arg(long, value_name = "PID", conflicts_with_all = ["ports", "label"])]
    owner_pid: Option<u32>,
    /// Release exactly the lease with this token (printed by `alloc --json`)
    #[arg(long, value_name = "TOKEN", value_parser = parse_token, conflicts_with_all = ["ports", "label", "owner_pid"])]
    token: Option<String>,
    /// Release leases held by running processes outside this shell too
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(global: &Global, args: &ReleaseArgs) -> Result<i32, Error> {
    if let Some(token) = &args.token {
        let ports = global.allocator()?.release_by_token(token)?;
        if ports.is_empty() {
            return Err(Error::UnknownToken(token.clone()));
        }
        print(&released_lines(ports.iter().map(u16::to_string)))?;
        return Ok(0);
    }
    let matches: Box<dyn Fn(&LeaseInfo) -> bool> = match (&args.label, args.owner_pid) {
        (Some(label), _) => Box::new(move |info| info.label.as_deref() == Some(label)),
        (None, Some(pid)) => {
            Box::new(move |info| info.owned_by_process && info.pid == Some(pid.into()))
        }
        (None, None) if args.ports.is_empty() => {
            return Err(UsageError(
                "name the ports to release, or --label TEXT, --owner-pid PID or --token TOKEN"
                    .into(),
            )
            .into());
        }
        (None, None) => Box::new(|info| info.port.is_some_and(|p| args.ports.contains(&p))),
    };
    let released = global
        .allocator()?
        .release_where_permitted(matches, |holder| args.force || kin::is_kin(holder))
        .map_err(|e| kin::explain(e, "release"))?;
    for port in &args.ports {
        if !released.iter().any(|info| info.port == Some(*port)) {
            note(format_args!("port {port} was not leased"));
        }
    }
    if released.is_empty() && args.ports.is_empty() {
        note("no lease matched");
    }
    print(&released_lines(released.into_iter().map(|info| info.key)))?;
    Ok(0)
}

fn released_lines(keys: impl Iterator<Item = String>) -> String {
    keys.map(|key| format!("released {}\n", printable(&key)))
        .collect()
}

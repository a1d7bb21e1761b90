//! `portlease alloc`: lease ports that outlive the command.

use portlease::{DEFAULT_TTL, Owner};
use serde::Serialize;

use super::Global;
use super::args::LeaseOptions;
use super::output::print;

/// Lease ports and print them, one per line.
///
/// The command exits at once, so the lease outlives it: by default it is held for
/// its TTL (300 s) by no process; with --owner-pid, while that process lives (with
/// no TTL unless --ttl gives one). If the ports cannot be printed (the reader has
/// gone), they are released before the command fails.
///
/// Example: PORT=$(portlease alloc --range 20000-20999 --label web)
#[derive(clap::Args, Debug)]
pub(crate) struct AllocArgs {
    #[command(flatten)]
    lease: LeaseOptions,
    /// The process whose lease it is: it ends when that process does
    #[arg(long, value_name = "PID")]
    owner_pid: Option<u32>,
    /// Print a JSON document: {"ports": [..], "token": .., "dir": .., "owner_pid": .., "ttl_secs": .., "label": ..}; `release --token` ends exactly this lease
    #[arg(long)]
    json: bool,
}

/// What `alloc --json` prints.
#[derive(Serialize)]
struct Allocated<'a> {
    ports: &'a [u16],
    /// Names this lease alone, for `release --token`.
    token: &'a str,
    dir: &'a std::path::Path,
    owner_pid: Option<u32>,
    ttl_secs: Option<f64>,
    label: Option<&'a str>,
}

pub(crate) fn run(global: &Global, args: &AllocArgs) -> Result<i32, crate::error::Error> {
    let (owner, default_ttl) = match args.owner_pid {
        Some(pid) => (Owner::Process(pid), None),
        None => (Owner::Nobody, Some(DEFAULT_TTL)),
    };
    let request = args.lease.request(owner, default_ttl, "cli")?;
    let allocator = global.allocator()?;
    let lease = allocator.allocate(&request)?;
    let text = if args.json {
        let document = Allocated {
            ports: lease.ports(),
            token: lease.token(),
            dir: allocator.dir(),
            owner_pid: args.owner_pid,
            ttl_secs: request.effective_ttl().map(|t| t.as_secs_f64()),
            label: args.lease.label.as_deref(),
        };
        format!("{}\n", serde_json::to_string(&document)?)
    } else {
        lease
            .ports()
            .iter()
            .map(|port| format!("{port}\n"))
            .collect()
    };
    // Ports nobody was told of would sit leased for nothing: release them.
    if let Err(e) = print(&text) {
        if let Err(release) = lease.release() {
            log::warn!("could not release the ports it could not print: {release}");
        }
        return Err(e);
    }
    let _ = lease.keep();
    Ok(0)
}

//! `portlease alloc`: lease ports that outlive the command.

use portlease::{DEFAULT_TTL, Owner};
use serde::Serialize;

use super::Global;
use super::args::LeaseOptions;

/// Lease ports and print them, one per line.
///
/// The command exits at once, so the lease outlives it: by default it is held for
/// its TTL (300 s) by no process; with --owner-pid, while that process lives.
///
/// Example: PORT=$(portlease alloc --range 20000-20999 --label web)
#[derive(clap::Args, Debug)]
pub(crate) struct AllocArgs {
    #[command(flatten)]
    lease: LeaseOptions,
    /// The process whose lease it is: it ends when that process does
    #[arg(long, value_name = "PID")]
    owner_pid: Option<u32>,
    /// Print a JSON document: {"ports": [..], "dir": .., "owner_pid": .., "ttl_secs": .., "label": ..}
    #[arg(long)]
    json: bool,
}

/// What `alloc --json` prints.
#[derive(Serialize)]
struct Allocated<'a> {
    ports: &'a [u16],
    dir: &'a std::path::Path,
    owner_pid: Option<u32>,
    ttl_secs: Option<f64>,
    label: Option<&'a str>,
}

pub(crate) fn run(global: &Global, args: &AllocArgs) -> anyhow::Result<i32> {
    let (owner, default_ttl) = match args.owner_pid {
        Some(pid) => (Owner::Process(pid), None),
        None => (Owner::Nobody, Some(DEFAULT_TTL)),
    };
    let request = args.lease.request(owner, default_ttl, "cli");
    let allocator = global.allocator()?;
    let ports = allocator.allocate(&request)?.keep();
    if args.json {
        let ttl = args.lease.ttl.map_or(default_ttl, |ttl| ttl.0);
        let document = Allocated {
            ports: &ports,
            dir: allocator.dir(),
            owner_pid: args.owner_pid,
            ttl_secs: ttl.map(|t| t.as_secs_f64()),
            label: args.lease.label.as_deref(),
        };
        println!("{}", serde_json::to_string(&document)?);
    } else {
        for port in ports {
            println!("{port}");
        }
    }
    Ok(0)
}

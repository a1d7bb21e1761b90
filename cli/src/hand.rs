//! `portlease hand`: give existing leases to a running process.

use super::Global;
use super::args::parse_port;
use super::kin;
use super::output::print;

/// Give leases to a running process (say, a server started on a port leased before
/// it): from now on each lasts as long as that process runs, with no TTL. The process
/// is recorded by pid and start time, so a reused pid does not keep the lease alive.
///
/// A lease held by a running process outside this shell is handed on only with
/// --force (else exit code 6, naming the holder). All the ports are handed on, or none.
///
/// Example: PORT=$(portlease alloc); ./server --port "$PORT" & portlease hand "$PORT" --to $!
#[derive(clap::Args, Debug)]
pub(crate) struct HandArgs {
    /// The leased ports to hand on
    #[arg(value_name = "PORT", required = true, value_parser = parse_port)]
    ports: Vec<u16>,
    /// The running process that holds them from now on
    #[arg(long, value_name = "PID", required = true)]
    to: u32,
    /// Hand on leases held by running processes outside this shell too
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(global: &Global, args: &HandArgs) -> Result<i32, crate::error::Error> {
    global
        .allocator()?
        .hand_to(&args.ports, args.to, |holder| {
            args.force || kin::is_kin(holder)
        })
        .map_err(|e| kin::explain(e, "hand on"))?;
    let lines: String = args
        .ports
        .iter()
        .map(|port| format!("handed {port} to pid {}\n", args.to))
        .collect();
    print(&lines)?;
    Ok(0)
}

//! `portlease renew`: restart a lease's time.

use super::Global;
use super::args::{Ttl, parse_port, parse_ttl};

/// Restart the time of leases from now, with a new TTL or the one they had.
///
/// Example: portlease renew 20000 --ttl 600
#[derive(clap::Args, Debug)]
pub(crate) struct RenewArgs {
    /// The leased ports to renew
    #[arg(value_name = "PORT", required = true, value_parser = parse_port)]
    ports: Vec<u16>,
    /// The new lifetime in seconds [default: the lease's own]
    #[arg(long, value_name = "SECS", value_parser = parse_ttl, allow_hyphen_values = true)]
    ttl: Option<Ttl>,
}

pub(crate) fn run(global: &Global, args: &RenewArgs) -> Result<i32, crate::error::Error> {
    let ttl = match args.ttl {
        Some(Ttl(None)) => {
            return Err(super::args::UsageError(
                "renew takes a TTL in seconds; to tie a lease to a process, allocate it with --owner-pid".into(),
            )
            .into());
        }
        Some(Ttl(Some(ttl))) => Some(ttl),
        None => None,
    };
    global.allocator()?.renew_all(&args.ports, ttl)?;
    let lines: String = args
        .ports
        .iter()
        .map(|port| format!("renewed {port}\n"))
        .collect();
    super::output::print(&lines)?;
    Ok(0)
}

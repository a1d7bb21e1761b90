//! `portlease release`: end leases now.

use portlease::LeaseInfo;

use super::Global;
use super::args::{UsageError, parse_port};

/// End leases: the given ports, or every lease with a label or an owner pid.
///
/// Releasing a port that is not leased is not an error (it says so on stderr).
///
/// Example: portlease release 20000 20001; portlease release --label web
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
}

pub(crate) fn run(global: &Global, args: &ReleaseArgs) -> anyhow::Result<i32> {
    let matches: Box<dyn Fn(&LeaseInfo) -> bool> = match (&args.label, args.owner_pid) {
        (Some(label), _) => Box::new(move |info| info.label.as_deref() == Some(label)),
        (None, Some(pid)) => {
            Box::new(move |info| info.owned_by_process && info.pid == Some(pid.into()))
        }
        (None, None) if args.ports.is_empty() => {
            return Err(UsageError(
                "name the ports to release, or --label TEXT, or --owner-pid PID".into(),
            )
            .into());
        }
        (None, None) => Box::new(|info| info.port.is_some_and(|p| args.ports.contains(&p))),
    };
    let released = global.allocator()?.release_where(matches)?;
    for info in &released {
        println!("released {}", info.key);
    }
    for port in &args.ports {
        if !released.iter().any(|info| info.port == Some(*port)) {
            eprintln!("portlease: port {port} was not leased");
        }
    }
    if released.is_empty() && args.ports.is_empty() {
        eprintln!("portlease: no lease matched");
    }
    Ok(0)
}

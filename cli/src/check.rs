//! `portlease check`: is a port free, leased, or bound, and by whom?

use crate::sockets::{BoundSocket, sockets_on_port};
use portlease::probe::is_port_free;
use portlease::{LeaseInfo, Protocol};
use serde::Serialize;

use super::args::parse_port;
use super::output::print;
use super::{Global, exit};

/// For each port: free to bind, leased (to whom), or bound by a process (which pid
/// and command, where permissions allow). Exits 0 when every port is free, 5 if not.
/// Only reads: creates nothing, finds no leases where the registry directory does not
/// exist yet, and works on one you may read but not write.
///
/// `--json` prints an array of {"port", "free", "bindable", "lease" (as in `list
/// --json`, or null), "sockets": [{"protocol", "address", "state", "pid", "command"}]}.
///
/// Example: portlease check 8080 || echo "8080 is busy"
#[derive(clap::Args, Debug)]
pub(crate) struct CheckArgs {
    /// The ports to check
    #[arg(value_name = "PORT", required = true, value_parser = parse_port)]
    ports: Vec<u16>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// What `check` found out about one port.
#[derive(Serialize)]
struct PortState {
    port: u16,
    /// Neither leased nor bound.
    free: bool,
    /// Whether TCP and UDP can both be bound on every address.
    bindable: bool,
    lease: Option<LeaseInfo>,
    sockets: Vec<BoundSocket>,
}

pub(crate) fn run(global: &Global, args: &CheckArgs) -> Result<i32, crate::error::Error> {
    let leases = global.leases()?;
    let mut states = Vec::new();
    for &port in &args.ports {
        let bindable = is_port_free(port, Protocol::Both, None)?;
        let lease = leases
            .iter()
            .find(|info| info.port == Some(port) && !info.stale)
            .cloned();
        let sockets = sockets_on_port(port);
        states.push(PortState {
            port,
            free: bindable && lease.is_none() && sockets.is_empty(),
            bindable,
            lease,
            sockets,
        });
    }
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&states)?)
    } else {
        states
            .iter()
            .map(|state| format!("{}\n", describe(state)))
            .collect()
    };
    print(&text)?;
    Ok(if states.iter().all(|s| s.free) {
        0
    } else {
        exit::NOT_FREE
    })
}

fn describe(state: &PortState) -> String {
    let mut parts = Vec::new();
    if let Some(lease) = &state.lease {
        let owner = match (lease.pid, lease.owned_by_process) {
            (Some(pid), true) => format!("pid {pid}"),
            (Some(pid), false) if lease.kind == portlease::EntryKind::Seed => {
                format!("pid {pid} (seed)")
            }
            _ => "no process".into(),
        };
        let label = lease
            .label
            .as_deref()
            .map(|l| format!(", label {l:?}"))
            .unwrap_or_default();
        parts.push(format!("leased to {owner}{label}"));
    }
    for socket in &state.sockets {
        if socket.state == "TIME_WAIT" {
            // No process owns it: the kernel keeps a closed connection's port a while.
            parts.push(format!(
                "{} TIME_WAIT {}: a closed connection the kernel holds for up to 60 s",
                socket.protocol, socket.address
            ));
            continue;
        }
        let holder = match (socket.pid, &socket.command) {
            (Some(pid), Some(command)) => format!("pid {pid} ({command})"),
            (Some(pid), None) => format!("pid {pid}"),
            _ => "a process not visible to you".into(),
        };
        parts.push(format!(
            "{} {} {} by {holder}",
            socket.protocol, socket.state, socket.address
        ));
    }
    if parts.is_empty() && !state.bindable {
        parts.push("cannot be bound".into());
    }
    if parts.is_empty() {
        format!("{} free", state.port)
    } else {
        format!("{} {}", state.port, parts.join("; "))
    }
}

//! Can this port be bound right now? The check that catches processes which do not
//! use the registry.
//!
//! Sockets are bound without `SO_REUSEADDR`, so a port in `TIME_WAIT` counts as taken
//! (std's `TcpListener` would set it, hence socket2).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

use rustix::io::Errno;
use socket2::{Domain, Socket, Type};

use crate::error::{Error, Result};
use crate::request::Protocol;

/// Whether `port` can be bound for `protocol`.
///
/// With no `host`, the port is checked on the wildcard addresses `0.0.0.0` and `[::]`
/// (IPv6 only), which fail if anything on any local address holds the port. With a
/// `host`, on that address alone, plus `::1` when it is an IPv4 loopback address (the
/// seed's semantics). An address family the host lacks (no IPv6) is skipped.
///
/// # Errors
/// [`Error::InvalidRequest`] when `host` is not an address of this machine.
pub fn is_port_free(port: u16, protocol: Protocol, host: Option<IpAddr>) -> Result<bool> {
    let addresses: &[(IpAddr, bool)] = match host {
        None => &[
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), false),
            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), false),
        ],
        Some(ip @ IpAddr::V4(v4)) if v4.is_loopback() => {
            &[(ip, true), (IpAddr::V6(Ipv6Addr::LOCALHOST), false)]
        }
        Some(ip) => &[(ip, true)],
    };
    for &(ip, asked_for) in addresses {
        for (wanted, kind) in [
            (protocol.tcp(), Type::STREAM),
            (protocol.udp(), Type::DGRAM),
        ] {
            if !wanted {
                continue;
            }
            match try_bind(SocketAddr::new(ip, port), kind) {
                Ok(()) => {}
                Err(e) if is_taken(&e) => return Ok(false),
                Err(e) if asked_for && Errno::from_io_error(&e) == Some(Errno::ADDRNOTAVAIL) => {
                    return Err(Error::invalid(format!(
                        "host {ip} is not an address of this machine; use one of its own \
                         addresses, or none to check every address"
                    )));
                }
                // A family or address this host lacks: nothing can hold the port there.
                Err(e) => log::debug!("skipping the check of {ip} port {port}: {e}"),
            }
        }
    }
    Ok(true)
}

fn try_bind(addr: SocketAddr, kind: Type) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), kind, None)?;
    if addr.is_ipv6() {
        // Without this, [::] would also cover 0.0.0.0, checked on its own already.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())
}

fn is_taken(error: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(error),
        Some(Errno::ADDRINUSE | Errno::ACCESS)
    )
}

/// The kernel's ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`), from
/// which it picks the local ports of outgoing connections; `None` where unknown.
pub fn ephemeral_port_range() -> Option<RangeInclusive<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = text.split_ascii_whitespace().map(str::parse::<u16>);
    Some(bounds.next()?.ok()?..=bounds.next()?.ok()?)
}

//! The functions of Rust's `portpicker` crate, so that a test suite switches with one
//! line (`use portlease as portpicker;`) and gets ports no other process is handed.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::allocator::Allocator;
use crate::lease::Lease;
use crate::probe::is_port_free;
use crate::request::{Protocol, Request};

/// A port number, as the `portpicker` crate names it.
pub type Port = u16;

/// The leases [`pick_unused_port`] made, by port, with the process that made them: a
/// forked child finds its parent's here, and must not end them.
struct Picked {
    maker: u32,
    leases: HashMap<Port, Lease>,
}

fn picked() -> &'static Mutex<Picked> {
    static PICKED: OnceLock<Mutex<Picked>> = OnceLock::new();
    PICKED.get_or_init(|| {
        Mutex::new(Picked {
            maker: std::process::id(),
            leases: HashMap::new(),
        })
    })
}

fn shared_allocator() -> Option<&'static Allocator> {
    static ALLOCATOR: OnceLock<Option<Allocator>> = OnceLock::new();
    ALLOCATOR
        .get_or_init(|| {
            Allocator::new()
                .map_err(|e| log::warn!("pick_unused_port: {e}"))
                .ok()
        })
        .as_ref()
}

/// A port free for TCP and UDP, leased in the default registry to the calling process
/// until it exits or gives the port back with [`return_port`]: no other process that
/// asks portlease (or its portserver, or the seed) is handed it meanwhile. `None` when
/// no port of the default ranges ([`default_ranges`](crate::default_ranges)) is free,
/// or the registry cannot be used (the reason is logged).
///
/// The lease is held for the process, not for a value: unlike
/// [`Allocator::allocate`], nothing ends it when the port number goes out of scope.
pub fn pick_unused_port() -> Option<Port> {
    let request = Request::new().protocol(Protocol::Both);
    let lease = shared_allocator()?
        .allocate(&request)
        .map_err(|e| log::warn!("pick_unused_port: {e}"))
        .ok()?;
    let port = lease.port();
    let mut picked = picked().lock().unwrap_or_else(PoisonError::into_inner);
    let me = std::process::id();
    if picked.maker != me {
        // A forked child: its parent's leases are not its own to end.
        for (_, lease) in picked.leases.drain() {
            let _ = lease.keep();
        }
        picked.maker = me;
    }
    picked.leases.insert(port, lease);
    Some(port)
}

/// Ends the lease of a port this process got from [`pick_unused_port`]; any other port
/// is left alone. Returns whether a lease was ended.
pub fn return_port(port: Port) -> bool {
    let mut picked = picked().lock().unwrap_or_else(PoisonError::into_inner);
    if picked.maker != std::process::id() {
        return false;
    }
    let Some(lease) = picked.leases.remove(&port) else {
        return false;
    };
    drop(picked);
    match lease.release() {
        Ok(()) => true,
        Err(e) => {
            log::warn!("return_port({port}): {e}");
            false
        }
    }
}

/// Whether `port` can be bound now for TCP and UDP, on every local address.
pub fn is_free(port: Port) -> bool {
    is_free_tcp(port) && is_free_udp(port)
}

/// Whether `port` can be bound now for TCP, on every local address.
pub fn is_free_tcp(port: Port) -> bool {
    port != 0 && is_port_free(port, Protocol::Tcp, None).unwrap_or(false)
}

/// Whether `port` can be bound now for UDP, on every local address.
pub fn is_free_udp(port: Port) -> bool {
    port != 0 && is_port_free(port, Protocol::Udp, None).unwrap_or(false)
}

//! The seed's two functions, for code porting from it.

use std::net::IpAddr;
use std::sync::OnceLock;

use crate::allocator::Allocator;
use crate::error::{Error, Result};
use crate::request::Request;

fn shared_allocator() -> Result<&'static Allocator> {
    static ALLOCATOR: OnceLock<Allocator> = OnceLock::new();
    if let Some(allocator) = ALLOCATOR.get() {
        return Ok(allocator);
    }
    let allocator = Allocator::new()?;
    Ok(ALLOCATOR.get_or_init(|| allocator))
}

/// Leases one port, as the seed's `allocate_port` does: `preferred` first, else one
/// of `range_start .. range_start + range_size`, checked on `host` (or on every
/// address when `None`). The lease is the calling process's, for 300 s, in the default
/// directory; end it with [`release_port`].
///
/// # Errors
/// As [`Allocator::allocate`]; a range past 65535 is an invalid request.
pub fn allocate_port(
    preferred: Option<u16>,
    range_start: u16,
    range_size: u16,
    host: Option<IpAddr>,
) -> Result<u16> {
    let last = range_start
        .checked_add(range_size.saturating_sub(1))
        .filter(|_| range_size > 0)
        .ok_or_else(|| {
            Error::invalid(format!(
                "range of {range_size} ports from {range_start} is empty or runs past 65535"
            ))
        })?;
    // The seed's leases last 300 s; this one does too, as its callers expect.
    let mut request = Request::new()
        .range(range_start..=last)
        .ttl(Some(crate::request::DEFAULT_TTL));
    if let Some(port) = preferred {
        request = request.prefer(port);
    }
    if let Some(host) = host {
        request = request.host(host);
    }
    Ok(shared_allocator()?.allocate(&request)?.keep()[0])
}

/// Ends the lease on `port` in the default directory, as the seed's `release_port`
/// does; a port that is not leased is no error.
///
/// # Errors
/// As [`Allocator::release`].
pub fn release_port(port: u16) -> Result<()> {
    shared_allocator()?.release(port).map(drop)
}

//! The seed's two functions, for code porting from it.

use std::net::IpAddr;
use std::sync::OnceLock;

use crate::allocator::Allocator;
use crate::error::{Error, Result};
use crate::parse::{SeedRange, SeedRefusal};
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
/// address when `None`). The range is read as the seed reads it ([`SeedRange`]): an
/// empty one tries `preferred` alone, and one that runs past 65535 is tried up to
/// 65535. The lease is the calling process's, for 300 s, in the default directory; end
/// it with [`release_port`].
///
/// # Errors
/// As [`Allocator::allocate`]; port 0, or a range that runs past 65535 and holds no
/// free port, is an invalid request (where the seed's `bind()` raised).
pub fn allocate_port(
    preferred: Option<u16>,
    range_start: u16,
    range_size: u16,
    host: Option<IpAddr>,
) -> Result<u16> {
    let range = SeedRange::new(range_start.into(), range_size.into());
    let preferred = range.check(preferred.map(i128::from)).map_err(refused)?;
    let ports = range
        .searched(preferred)
        .ok_or_else(|| refused(range.empty()))?;
    // The seed's leases last 300 s; this one does too, as its callers expect.
    let mut request = Request::new()
        .range(ports)
        .ttl(Some(crate::request::DEFAULT_TTL));
    if let Some(port) = preferred {
        request = request.prefer(port);
    }
    if let Some(host) = host {
        request = request.host(host);
    }
    match shared_allocator()?.allocate(&request) {
        Ok(lease) => Ok(lease.keep()[0]),
        Err(exhausted @ Error::Exhausted { .. }) => {
            match range.exhausted(&exhausted, String::new()) {
                // Past the ports: where the seed's bind() raised.
                SeedRefusal::OutsidePorts(message) => Err(Error::invalid(message)),
                _ => Err(exhausted),
            }
        }
        Err(other) => Err(other),
    }
}

/// A seed allocation's refusal as the library's error: exhaustion as
/// [`Error::Exhausted`], numbers the seed could not bind as an invalid request.
fn refused(refusal: SeedRefusal) -> Error {
    match refusal {
        SeedRefusal::Exhausted { ranges, .. } => Error::Exhausted {
            wanted: "port".into(),
            ranges,
        },
        other => Error::invalid(other.to_string()),
    }
}

/// Ends the lease on `port` in the default directory, as the seed's `release_port`
/// does; a port that is not leased is no error.
///
/// # Errors
/// As [`Allocator::release`].
pub fn release_port(port: u16) -> Result<()> {
    shared_allocator()?.release(port).map(drop)
}

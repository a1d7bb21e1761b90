//! `Lease`: the guard a caller holds while it uses its ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::allocator::Allocator;
use crate::error::{Error, Result};
use crate::process::ProcessId;
use crate::request::Request;

/// Ports leased to the caller; the lease ends when the guard is dropped.
///
/// Dropping releases the ports (errors are logged); [`release`](Lease::release) does
/// the same and reports errors; [`keep`](Lease::keep) leaves the lease in the registry
/// to end by its owner or TTL. A guard only ever releases its own lease: if the lease
/// expired and the port went to somebody else, their lease is left alone.
#[derive(Debug)]
#[must_use = "dropping a Lease releases its ports at once"]
pub struct Lease {
    allocator: Allocator,
    ports: Vec<u16>,
    token: String,
    host: Option<IpAddr>,
    /// False once released or kept: nothing left to do on drop.
    held: bool,
}

impl Lease {
    pub(crate) fn new(
        allocator: Allocator,
        ports: Vec<u16>,
        token: String,
        request: &Request,
    ) -> Lease {
        Lease {
            allocator,
            ports,
            token,
            host: request.host,
            held: true,
        }
    }

    /// The leased port (the first, when several were asked for).
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// Every leased port, in the order they were chosen (ascending for a block).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The token that names this lease in the registry: [`Allocator::release_by_token`]
    /// ends exactly this lease, and nothing else, however often it is retried.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Ends the lease now.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when some port is leased to somebody else by now (this
    /// lease expired and the port was handed out again); the others are released all
    /// the same. Lock and I/O errors.
    pub fn release(mut self) -> Result<()> {
        self.held = false;
        self.allocator.release_token(&self.ports, &self.token)
    }

    /// Leaves the lease in the registry after the guard is gone; it ends when its
    /// owner exits or its TTL passes, or by [`Allocator::release`]. Returns the ports.
    pub fn keep(mut self) -> Vec<u16> {
        self.held = false;
        std::mem::take(&mut self.ports)
    }

    /// Starts the lease's time again from now, with `ttl` as its new lifetime, or the
    /// lifetime it had (`None`).
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the lease already ended; lock and I/O errors.
    pub fn renew(&self, ttl: Option<Duration>) -> Result<()> {
        self.allocator
            .renew_matching(&self.ports, Some(&self.token), ttl)
    }

    /// Hands the lease to another running process (say, a child spawned after the
    /// ports were chosen): from now on it ends when that process does.
    ///
    /// # Errors
    /// [`Error::NoSuchProcess`], [`Error::LeaseLost`]; lock and I/O errors.
    pub fn transfer_to(&self, pid: u32) -> Result<()> {
        let owner = ProcessId::of_running(pid).ok_or(Error::NoSuchProcess { pid })?;
        self.allocator
            .update_leases(&self.ports, Some(&self.token), |lease, _| {
                lease.pid = owner.pid;
                lease.owner = Some(owner);
            })
    }

    /// Binds a TCP listener to the leased port and ends the lease: from then on the
    /// bound socket itself keeps the port, so an in-process server has no race at all.
    /// It listens on the request's host, or on 127.0.0.1.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a lease of several ports, [`Error::Bind`].
    pub fn into_listener(self) -> Result<TcpListener> {
        let socket = self.bind_single(Type::STREAM)?;
        socket.listen(1024).map_err(|source| Error::Bind {
            addr: self.address(),
            source,
        })?;
        self.end_after_bind();
        Ok(socket.into())
    }

    /// Binds a UDP socket to the leased port and ends the lease, as
    /// [`into_listener`](Lease::into_listener) does for TCP.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a lease of several ports, [`Error::Bind`].
    pub fn into_udp_socket(self) -> Result<UdpSocket> {
        let socket = self.bind_single(Type::DGRAM)?;
        self.end_after_bind();
        Ok(socket.into())
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::new(
            self.host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            self.port(),
        )
    }

    fn bind_single(&self, kind: Type) -> Result<Socket> {
        if self.ports.len() != 1 {
            return Err(Error::invalid(format!(
                "this lease holds {} ports; bind each with the standard library instead",
                self.ports.len()
            )));
        }
        let addr = self.address();
        let bind = || -> std::io::Result<Socket> {
            let socket = Socket::new(Domain::for_address(addr), kind, None)?;
            // As std's listeners do: a server restarting on this port must not wait
            // for TIME_WAIT to pass. The probe already checked it without.
            socket.set_reuse_address(true)?;
            socket.bind(&addr.into())?;
            Ok(socket)
        };
        bind().map_err(|source| Error::Bind { addr, source })
    }

    fn end_after_bind(mut self) {
        self.held = false;
        if let Err(e) = self.allocator.release_token(&self.ports, &self.token) {
            log::warn!(
                "port {} is bound, but its lease could not be ended: {e}",
                self.port()
            );
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.held
            && let Err(e) = self.allocator.release_token(&self.ports, &self.token)
        {
            log::warn!("could not release the lease on {:?}: {e}", self.ports);
        }
    }
}

//! `Lease`: the guard a caller holds while it uses its ports.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::panic::{RefUnwindSafe, UnwindSafe};
#[cfg(feature = "tokio")]
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::error::{Error, Result};
use crate::record::Tenure;
use crate::request::Request;

/// What a lease needs of the allocator that made it: to end, renew and hand over its
/// own entries in the registry. The allocator is the one implementation; a `Lease`
/// holds it through this trait so that this module does not depend on the allocator
/// above it. The supertraits keep `Lease` `Send`, `Sync` and unwind-safe, as it was.
pub(crate) trait LeaseKeeper: fmt::Debug + Send + Sync + UnwindSafe + RefUnwindSafe {
    /// The registry directory, for messages.
    #[cfg(feature = "tokio")]
    fn dir(&self) -> &Path;

    /// Ends the leases on `ports` held under `token`; a port leased to another lease
    /// meanwhile is left alone and reported as [`Error::LeaseLost`].
    fn release_under_token(&self, ports: &[u16], token: &str) -> Result<()>;

    /// Renews the live leases on `ports` held under `token`, with `ttl` as their new
    /// lifetime, or the one they had.
    fn renew_matching(
        &self,
        ports: &[u16],
        token: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<()>;

    /// Hands the live leases on `ports` held under `token` to the running process
    /// `pid`, their TTL cleared, as [`Allocator::hand_to`](crate::Allocator::hand_to)
    /// does; returns what each held before. Fails with [`Error::LeaseLost`] if any is
    /// gone.
    fn hand_to(&self, ports: &[u16], token: &str, pid: u32) -> Result<Vec<Tenure>>;

    /// Puts back on the leases held under `token` what they held before a hand-over
    /// (`before`), even where the process they were handed to has ended since, in
    /// one transaction; fails with [`Error::LeaseLost`] if any entry is gone.
    fn restore(&self, token: &str, before: &[Tenure]) -> Result<()>;
}

/// Ports leased to the caller; the lease ends when the guard is dropped.
///
/// Dropping releases the ports (errors are logged); [`release`](Lease::release) does
/// the same and reports errors; [`keep`](Lease::keep) leaves the lease in the registry
/// to end by its owner or TTL. A guard only ever releases its own lease: if the lease
/// expired and the port went to somebody else, their lease is left alone.
///
/// # Dropping blocks
/// Releasing is a registry transaction, so dropping a `Lease` (like
/// [`release`](Lease::release), [`renew`](Lease::renew) and the `into_*` methods) waits
/// on the calling thread for the registry lock: microseconds as a rule, but up to the
/// allocator's [lock timeout](crate::Allocator::lock_timeout) (30 s by default) while another
/// process holds the lock. In an async runtime that stalls a worker thread and every
/// task on it. To release without blocking the caller, hand the lease to a thread
/// that may block: a `Lease` is [`Send`], so it can move to a thread of its own or a
/// runtime's blocking pool (with the `tokio` feature, `release_async` does that);
/// or [`keep`](Lease::keep) it and let its owner or TTL end it.
///
/// ```
/// # fn main() -> portlease::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let allocator = portlease::Allocator::with_dir(dir.path())?;
/// let lease = allocator.allocate(&portlease::Request::new().range(39200..=39299))?;
/// // ... the server is done with the port; end the lease off this thread:
/// let released = std::thread::spawn(move || lease.release());
/// # released.join().unwrap()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "dropping a Lease releases its ports at once"]
pub struct Lease {
    allocator: Box<dyn LeaseKeeper>,
    ports: Vec<u16>,
    token: String,
    host: Option<IpAddr>,
    /// False once released or kept: nothing left to do on drop.
    held: bool,
}

impl Lease {
    pub(crate) fn new(
        allocator: Box<dyn LeaseKeeper>,
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
    ///
    /// The port is leased only while the `Lease` lives: keep the `Lease`, not just
    /// the number. `allocator.allocate(&request)?.port()` compiles, but the `Lease` is
    /// a temporary dropped at the end of that statement, which ends the lease at once.
    /// Bind it first (`let lease = allocator.allocate(&request)?;`), or use
    /// [`keep`](Lease::keep) for ports that outlive it, or
    /// [`pick_unused_port`](crate::pick_unused_port) for a port held until the
    /// process exits.
    ///
    /// ```
    /// # fn main() -> portlease::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let allocator = portlease::Allocator::with_dir(dir.path())?;
    /// # let request = portlease::Request::new().range(38290..=38299);
    /// let lease = allocator.allocate(&request)?; // held until `lease` is dropped
    /// let port = lease.port();
    /// # assert!(allocator.leases()?.iter().any(|l| l.port == Some(port)));
    /// # Ok(()) }
    /// ```
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// Every leased port, in the order they were chosen (ascending for a block).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The token that names this lease in the registry:
    /// [`Allocator::release_by_token`](crate::Allocator::release_by_token) ends exactly
    /// this lease, and nothing else, however often it is retried.
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
        self.allocator.release_under_token(&self.ports, &self.token)
    }

    /// Leaves the lease in the registry after the guard is gone; it ends when its
    /// owner exits or its TTL passes, or by [`Allocator::release`](crate::Allocator::release). Returns the ports.
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
    /// ports were chosen), recorded by pid and start time, as
    /// [`Allocator::hand_to`](crate::Allocator::hand_to) does: any TTL is cleared, so
    /// from now on the lease lasts exactly as long as that process runs (it cannot
    /// expire while the process has yet to bind its port). The guard still releases
    /// it when dropped; [`keep`](Lease::keep) it to leave the lease to that process.
    ///
    /// # Errors
    /// [`Error::NoSuchProcess`], [`Error::LeaseLost`] when the lease already ended;
    /// lock and I/O errors.
    pub fn hand_to(&self, pid: u32) -> Result<()> {
        self.hand_to_child(pid).map(drop)
    }

    /// [`hand_to`](Lease::hand_to), returning what each port held before, for
    /// [`take_back`](Lease::take_back).
    pub(crate) fn hand_to_child(&self, pid: u32) -> Result<Vec<Tenure>> {
        self.allocator.hand_to(&self.ports, &self.token, pid)
    }

    /// Undoes a [`hand_to_child`](Lease::hand_to_child) that came to nothing: the
    /// lease's owner and TTL are again those it had before (`before`).
    pub(crate) fn take_back(&self, before: &[Tenure]) -> Result<()> {
        self.allocator.restore(&self.token, before)
    }

    /// Binds a TCP listener to the leased port and ends the lease: from then on the
    /// bound socket itself keeps the port, so an in-process server has no race at all.
    /// It listens on the request's host, or on 127.0.0.1.
    ///
    /// The listener is in blocking mode, as std's are: `accept` waits for a
    /// connection. An async runtime needs it non-blocking (call
    /// [`set_nonblocking(true)`](TcpListener::set_nonblocking) before handing it over,
    /// or, with the `tokio` feature, use `into_tokio_listener`, which does).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a lease of several ports, [`Error::Bind`].
    pub fn into_listener(self) -> Result<TcpListener> {
        self.listen(false)
    }

    /// Binds a UDP socket to the leased port and ends the lease, as
    /// [`into_listener`](Lease::into_listener) does for TCP. The socket is in blocking
    /// mode.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a lease of several ports, [`Error::Bind`].
    pub fn into_udp_socket(self) -> Result<UdpSocket> {
        self.bind_udp(false)
    }

    fn listen(self, nonblocking: bool) -> Result<TcpListener> {
        let socket = self.bind_single(Type::STREAM, nonblocking)?;
        socket.listen(1024).map_err(|source| Error::Bind {
            addr: self.address(),
            source,
        })?;
        self.end_after_bind();
        Ok(socket.into())
    }

    fn bind_udp(self, nonblocking: bool) -> Result<UdpSocket> {
        let socket = self.bind_single(Type::DGRAM, nonblocking)?;
        self.end_after_bind();
        Ok(socket.into())
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::new(self.host_or_localhost(), self.port())
    }

    /// The host the lease's sockets are bound on: the request's, or 127.0.0.1.
    pub(crate) fn host_or_localhost(&self) -> IpAddr {
        self.host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    fn bind_single(&self, kind: Type, nonblocking: bool) -> Result<Socket> {
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
            socket.set_nonblocking(nonblocking)?;
            socket.bind(&addr.into())?;
            Ok(socket)
        };
        bind().map_err(|source| Error::Bind { addr, source })
    }

    fn end_after_bind(mut self) {
        self.held = false;
        if let Err(e) = self.allocator.release_under_token(&self.ports, &self.token) {
            log::warn!(
                "port {} is bound, but its lease could not be ended: {e}",
                self.port()
            );
        }
    }
}

/// With the `tokio` feature: sockets registered with Tokio's reactor, and a release
/// that leaves the calling task's thread free.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl Lease {
    /// Binds a TCP listener to the leased port, as
    /// [`into_listener`](Lease::into_listener) does, in non-blocking mode and
    /// registered with the current Tokio runtime.
    ///
    /// Ending the lease is a registry transaction on the calling thread, as
    /// [`Allocator::allocate`](crate::Allocator::allocate) before it was: both wait for the registry lock (see
    /// [Dropping blocks](Lease#dropping-blocks)); where that may stall a runtime, run
    /// them with `tokio::task::spawn_blocking`.
    ///
    /// ```
    /// # fn main() -> portlease::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let allocator = portlease::Allocator::with_dir(dir.path())?;
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    /// runtime.block_on(async {
    ///     let lease = allocator.allocate(&portlease::Request::new().range(39300..=39399))?;
    ///     let listener = lease.into_tokio_listener()?;
    ///     let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await;
    ///     let (_server_side, _) = listener.accept().await.unwrap();
    ///     Ok(())
    /// })
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a lease of several ports, or when called outside
    /// a Tokio runtime (where Tokio itself would panic); [`Error::Bind`] when the
    /// socket cannot be bound or registered with the runtime. The lease ends either way.
    pub fn into_tokio_listener(self) -> Result<tokio::net::TcpListener> {
        let addr = self.address();
        in_tokio_runtime("into_tokio_listener")?;
        tokio::net::TcpListener::from_std(self.listen(true)?)
            .map_err(|source| Error::Bind { addr, source })
    }

    /// Binds a UDP socket to the leased port, as
    /// [`into_udp_socket`](Lease::into_udp_socket) does, in non-blocking mode and
    /// registered with the current Tokio runtime.
    ///
    /// # Errors
    /// As [`into_tokio_listener`](Lease::into_tokio_listener).
    pub fn into_tokio_udp_socket(self) -> Result<tokio::net::UdpSocket> {
        let addr = self.address();
        in_tokio_runtime("into_tokio_udp_socket")?;
        tokio::net::UdpSocket::from_std(self.bind_udp(true)?)
            .map_err(|source| Error::Bind { addr, source })
    }

    /// Ends the lease now, as [`release`](Lease::release) does, on Tokio's blocking
    /// pool: the task waits for the registry lock, its thread does not.
    ///
    /// Polled outside a Tokio runtime, it releases on the calling thread.
    ///
    /// # Errors
    /// As [`release`](Lease::release), and an I/O error when the runtime shut down
    /// before the release ran (the lease is then released as the runtime drops it).
    pub async fn release_async(self) -> Result<()> {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.release();
        }
        let dir = self.allocator.dir().to_path_buf();
        tokio::task::spawn_blocking(move || self.release())
            .await
            .unwrap_or_else(|join| {
                Err(Error::io(
                    "the release of a lease did not run (the Tokio runtime is shutting down) in",
                    dir,
                    std::io::Error::other(join.to_string()),
                ))
            })
    }
}

/// Tokio's `from_std` panics outside a runtime: say so instead.
#[cfg(feature = "tokio")]
fn in_tokio_runtime(method: &str) -> Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::invalid(format!(
            "Lease::{method} was called outside a Tokio runtime; call it from a task \
             (e.g. under #[tokio::main]), or use the blocking method instead"
        ))),
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.held
            && let Err(e) = self.allocator.release_under_token(&self.ports, &self.token)
        {
            log::warn!("could not release the lease on {:?}: {e}", self.ports);
        }
    }
}

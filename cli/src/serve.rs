//! `portlease serve`: a portserver for portpicker's clients, on the same registry.
//!
//! The protocol is portpicker's: a Unix stream socket (`@name` is Linux's abstract
//! namespace); the client sends its pid and a newline; the server answers a port and a
//! newline, or closes the connection without a word, and the client then guesses on
//! its own. Every port handed out is a lease owned by the client's process.

use std::io::{ErrorKind, Read, Write};
use std::ops::RangeInclusive;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use portlease::{Allocator, Error, Owner, ProcessId, Protocol, Request};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::Global;
use super::args::{UsageError, parse_range};

/// The longest request taken: a pid and a newline fit with room to spare.
const MAX_REQUEST: usize = 20;

/// Serve ports to portpicker clients (PORTSERVER_ADDRESS) from the shared registry.
///
/// Each port handed out is leased to the client's process (pid and start time), so it
/// goes back to the pool when that process ends, and no portlease user gets it while
/// it lives. SIGINT and SIGTERM stop the server (a path socket is removed).
///
/// Example: portlease serve & export PORTSERVER_ADDRESS=@unittest-portserver
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// The socket: @NAME in the abstract namespace, or a filesystem path
    #[arg(long, value_name = "ADDR", default_value = "@unittest-portserver")]
    address: String,
    /// The ports to hand out: START-END[,START-END...]
    #[arg(long, value_name = "RANGES", default_value = "15000-24999", value_parser = parse_pool)]
    pool: Pool,
    /// The most leases one client process may hold from the server at once
    #[arg(long, value_name = "N", default_value = "64")]
    max_per_pid: usize,
    /// The most connections served at once; more are closed at once
    #[arg(long, value_name = "N", default_value = "256")]
    max_connections: usize,
    /// Seconds a client has to send its whole request
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = super::args::parse_seconds)]
    request_timeout: Duration,
}

/// The `--pool` ranges.
#[derive(Debug, Clone)]
struct Pool(Vec<RangeInclusive<u16>>);

fn parse_pool(text: &str) -> Result<Pool, String> {
    text.split(',')
        .map(parse_range)
        .collect::<Result<_, _>>()
        .map(Pool)
}

/// Everything a connection handler needs.
struct Server {
    allocator: Allocator,
    request: Request,
    request_timeout: Duration,
}

pub(crate) fn run(global: &Global, args: &ServeArgs) -> anyhow::Result<i32> {
    if args.max_per_pid == 0 || args.max_connections == 0 || args.request_timeout.is_zero() {
        let message = "--max-per-pid, --max-connections and --request-timeout must be above 0";
        return Err(UsageError(message.into()).into());
    }
    let mut request = Request::new()
        .protocol(Protocol::Both)
        .ttl(None)
        .source("serve")
        .max_per_owner(args.max_per_pid);
    for range in &args.pool.0 {
        request = request.range(range.clone());
    }
    let server = Arc::new(Server {
        allocator: global.allocator()?,
        request,
        request_timeout: args.request_timeout,
    });
    let (listener, path) = bind(&args.address)?;
    stop_on_signals(path.clone())?;
    log::info!(
        "serving ports {} from {} on {}",
        server.request.describe_ranges(),
        server.allocator.dir().display(),
        args.address
    );
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("accept failed: {e}");
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= args.max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            log::info!(
                "refused a connection: {} connections are open already",
                args.max_connections
            );
            continue;
        }
        let (server, open) = (Arc::clone(&server), Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("portlease-client".into())
            .spawn(move || {
                server.answer(stream);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            log::warn!("cannot start a thread for a client: {e}");
        }
    }
    Ok(0)
}

impl Server {
    /// Serves one client: a port and a newline, or silence with a logged reason.
    fn answer(&self, mut stream: UnixStream) {
        let pid = match read_pid(&mut stream, self.request_timeout) {
            Ok(pid) => pid,
            Err(reason) => {
                log::info!("refused a request: {reason}");
                return;
            }
        };
        let request = self.request.clone().owner(Owner::Process(pid));
        match self.allocator.allocate(&request) {
            Ok(lease) => {
                let port = lease.keep()[0];
                if let Err(e) = stream.write_all(format!("{port}\n").as_bytes()) {
                    // The client is gone; its lease ends with it.
                    log::info!("granted port {port} to pid {pid}, but could not tell it: {e}");
                } else {
                    log::info!("granted port {port} to pid {pid}");
                }
            }
            Err(Error::NoSuchProcess { .. }) => log::info!("refused pid {pid}: no such process"),
            Err(e) => log::info!("refused pid {pid}: {e}"),
        }
    }
}

/// Reads `PID\n` within the deadline and checks the pid; the error is the reason to
/// refuse, for the log.
fn read_pid(stream: &mut UnixStream, timeout: Duration) -> Result<u32, String> {
    let deadline = Instant::now() + timeout;
    let too_slow = || format!("no whole request within {:.1}s", timeout.as_secs_f64());
    let mut buf = Vec::with_capacity(MAX_REQUEST + 1);
    let mut chunk = [0u8; MAX_REQUEST + 1];
    while !buf.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(too_slow());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(too_slow());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
        if buf.len() > MAX_REQUEST {
            return Err(format!("request longer than {MAX_REQUEST} bytes"));
        }
    }
    let text = std::str::from_utf8(&buf).map_err(|_| "request is not text".to_string())?;
    let pid: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("request {text:?} is not a pid"))?;
    match pid {
        ..=0 => Err(format!("pid {pid} is not a process")),
        1 => Err("pid 1: the client was reparented to init, so its lease would never end".into()),
        _ => {
            let pid = u32::try_from(pid).map_err(|_| format!("pid {pid} is out of range"))?;
            ProcessId::of_running(pid)
                .map(|p| p.pid)
                .ok_or_else(|| format!("pid {pid}: no such process"))
        }
    }
}

/// Binds the server socket; returns it and, for a path socket, its path.
fn bind(address: &str) -> anyhow::Result<(UnixListener, Option<PathBuf>)> {
    if let Some(name) = address.strip_prefix('@') {
        let addr = SocketAddr::from_abstract_name(name.as_bytes())
            .with_context(|| format!("{address:?} is not a usable abstract socket name"))?;
        let listener = UnixListener::bind_addr(&addr).map_err(|e| match e.kind() {
            ErrorKind::AddrInUse => anyhow::anyhow!(
                "another server already listens on {address}; stop it, or choose another --address"
            ),
            _ => anyhow::anyhow!("cannot listen on {address}: {e}"),
        })?;
        return Ok((listener, None));
    }
    let path = PathBuf::from(address);
    prepare_socket_path(&path)?;
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .context("cannot create a Unix socket")?;
    socket
        .bind(&socket2::SockAddr::unix(&path)?)
        .with_context(|| format!("cannot bind {}", path.display()))?;
    // Only its owner may connect; set before it listens, so nobody could yet.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    socket
        .listen(128)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    Ok((socket.into(), Some(path)))
}

/// Makes room for a path socket: creates its directory (0700) if missing, replaces a
/// socket left by a crashed server, and refuses to steal a live one or to remove
/// anything that is not a socket.
fn prepare_socket_path(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        anyhow::bail!(
            "{} exists and is not a socket; remove it or choose another --address",
            path.display()
        );
    }
    match UnixStream::connect(path) {
        Ok(_) => anyhow::bail!(
            "a server is already listening on {}; stop it, or choose another --address",
            path.display()
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            log::info!(
                "replacing the stale socket {} left by a server that is gone",
                path.display()
            );
            std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot tell whether {} is in use: {e}",
            path.display()
        )),
    }
}

/// Stops the server on SIGINT or SIGTERM, removing its path socket. The leases it
/// gave stay with their clients.
fn stop_on_signals(path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot listen for signals")?;
    std::thread::Builder::new()
        .name("portlease-stop".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                if let Some(path) = &path {
                    let _ = std::fs::remove_file(path);
                }
                log::info!("stopping on signal {signal}");
                std::process::exit(0);
            }
        })
        .context("cannot start the signal handler")?;
    Ok(())
}

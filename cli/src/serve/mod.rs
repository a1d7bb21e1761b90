//! `portlease serve`: a portserver for portpicker's clients, on the same registry.
//!
//! The protocol is portpicker's: a Unix stream socket (`@name` is Linux's abstract
//! namespace); the client sends its pid and a newline; the server answers a port and a
//! newline, or closes the connection without a word, and the client then guesses on
//! its own. Every port handed out is a lease owned by the client's process.
//!
//! One thread (`event_loop`) accepts and reads every connection without blocking and
//! checks each complete request (`peer`: the client's credentials and the pid it
//! names), then hands it to another (`worker`), which serves everything handed over
//! since its last transaction in one registry transaction (`grant`); a third tells
//! the clients. `room` decides which connection goes when one user holds too many or
//! the table is full, `listen` finds or makes the socket, `stats` counts for SIGUSR1.

// Linux's alone: the server reads each client's pid and uid with `SO_PEERCRED`.
#[cfg(linux_kernel)]
mod event_loop;
#[cfg(linux_kernel)]
mod grant;
#[cfg(linux_kernel)]
mod listen;
#[cfg(linux_kernel)]
mod peer;
#[cfg(linux_kernel)]
mod room;
#[cfg(linux_kernel)]
mod stats;
#[cfg(linux_kernel)]
mod worker;

use std::ops::RangeInclusive;
use std::time::Duration;

use portlease::{Protocol, Request};

use super::Global;
use super::args::{UsageError, parse_range};
use super::error::Error;

/// Serve ports to portpicker clients (PORTSERVER_ADDRESS) from the shared registry.
///
/// A drop-in for portpicker's portserver.py: it takes that server's flags
/// (--portserver_address, --portserver_unix_socket_address, --portserver_static_pool,
/// --verbose, --debug) with the same defaults, and logs the same statistics on
/// SIGUSR1. Each port handed out is leased to the client's process (pid and start
/// time), so it goes back to the pool when that process ends, and no portlease user
/// gets it while it lives. A client may ask only for its own user's processes (root
/// for any), never for a kernel thread or the server. SIGINT and SIGTERM stop the
/// server once the transaction in progress is done (a path socket is removed). Under
/// systemd socket activation (LISTEN_FDS) it serves the socket it is passed.
///
/// On a host shared with other users, serve on a socket path, not an abstract name:
/// an abstract name (@NAME) has no owner and no permissions, so whoever binds it first,
/// any local user, answers every client that asks it, and this server then cannot
/// start. A path is made 0600, in a directory created 0700 if missing, so only this
/// user's clients reach it. One user's many or silent connections cannot shut out
/// another's: see --max-connections-per-uid.
///
/// Example: portlease serve & export PORTSERVER_ADDRESS=@unittest-portserver
///
/// Shared host: portlease serve --address "$XDG_RUNTIME_DIR/portlease/portserver.sock" &
/// export PORTSERVER_ADDRESS="$XDG_RUNTIME_DIR/portlease/portserver.sock"
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// The socket: @NAME in the abstract namespace (first come, any user: for a host
    /// of one user), or a filesystem path (made 0600; a missing directory is made 0700)
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "@unittest-portserver",
        visible_alias = "portserver_address",
        alias = "portserver_unix_socket_address"
    )]
    address: String,
    /// The ports to hand out: START-END[,START-END...] [default: $PORTLEASE_RANGE, else
    /// 15000-24999, portpicker's server's pool]
    #[arg(
        long,
        value_name = "RANGES",
        value_parser = parse_pool,
        visible_alias = "portserver_static_pool"
    )]
    pool: Option<Pool>,
    /// The most leases one client process may hold from the server at once [default:
    /// no limit, as portpicker's server: a refused client guesses a port on its own]
    #[arg(long, value_name = "N")]
    max_per_pid: Option<usize>,
    /// The most leases the processes of one user (the asking client's uid) may hold
    /// from the server at once, for a pool shared between users [default: no limit]
    #[arg(long, value_name = "N")]
    max_per_uid: Option<usize>,
    /// The most connections being read at once. When all are open, a newcomer takes
    /// the place of the oldest idle connection of the user holding the most, or is
    /// closed if its own user would hold the most
    #[arg(long, value_name = "N", default_value = "256")]
    max_connections: usize,
    /// The most of those connections one user (uid) may hold; its newcomer beyond
    /// that takes the place of its own oldest idle connection, so one user's silent
    /// connections never shut out another's [default: half of --max-connections]
    #[arg(long, value_name = "N")]
    max_connections_per_uid: Option<usize>,
    /// Seconds a client has to send its whole request
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = super::args::parse_seconds)]
    request_timeout: Duration,
    /// Log debugging messages too (as -vv)
    #[arg(long)]
    debug: bool,
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

/// Limits and timeouts the loop applies.
#[cfg_attr(
    not(linux_kernel),
    expect(dead_code, reason = "checked, but there is no loop to apply them")
)]
pub(super) struct Limits {
    max_connections: usize,
    max_connections_per_uid: usize,
    request_timeout: Duration,
}

/// Elsewhere than Linux there is no `serve`: it cannot learn who a client is. Its
/// arguments are still checked, as on Linux.
#[cfg(not(linux_kernel))]
pub(crate) fn run(_: &Global, args: &ServeArgs) -> Result<i32, Error> {
    let _checked = settings(args)?;
    Err(Error::failure(
        "portlease serve needs Linux: it learns each client's pid and user from the \
         kernel (SO_PEERCRED); here, lease ports with `portlease alloc`, `portlease exec` \
         or the library",
    ))
}

/// What the arguments ask of the server: the request each grant makes, and the loop's
/// limits; a usage error for a limit of 0 or a bad pool.
fn settings(args: &ServeArgs) -> Result<(Request, Limits), Error> {
    let zero = [
        args.max_per_pid,
        args.max_per_uid,
        args.max_connections_per_uid,
    ]
    .contains(&Some(0));
    if zero || args.max_connections == 0 || args.request_timeout.is_zero() {
        let message = "--max-per-pid, --max-per-uid, --max-connections, \
                       --max-connections-per-uid and --request-timeout must be above 0";
        return Err(UsageError(message.into()).into());
    }
    let mut request = Request::new()
        .protocol(Protocol::Both)
        .ttl(None)
        .source("serve");
    if let Some(limit) = args.max_per_pid {
        request = request.max_per_owner(limit);
    }
    // Without --pool, the default ranges, as every front end's; checked here, so
    // that a bad $PORTLEASE_RANGE stops the server before it listens.
    let pool = match &args.pool {
        Some(pool) => pool.0.clone(),
        None => portlease::default_ranges()?,
    };
    for range in pool {
        request = request.range(range);
    }
    let limits = Limits {
        max_connections: args.max_connections,
        max_connections_per_uid: args
            .max_connections_per_uid
            .unwrap_or(args.max_connections.div_ceil(2)),
        request_timeout: args.request_timeout,
    };
    Ok((request, limits))
}

#[cfg(linux_kernel)]
pub(crate) fn run(global: &Global, args: &ServeArgs) -> Result<i32, Error> {
    if args.debug {
        log::set_max_level(log::max_level().max(log::LevelFilter::Debug));
    }
    let (request, limits) = settings(args)?;
    let allocator = global.allocator()?;
    let granter = grant::Granter::new(allocator, request, args.max_per_uid);
    let socket = listen::open(&args.address).map_err(Error::failure)?;
    let signals = event_loop::Signals::register().map_err(Error::failure)?;
    log::info!(
        "serving ports {} from {} on {}",
        granter.pool_description(),
        granter.dir().display(),
        socket.describe()
    );
    let stopped_by =
        event_loop::serve(&socket, granter, &limits, &signals).map_err(Error::failure)?;
    socket.remove_path();
    log::info!("stopping on signal {stopped_by}");
    Ok(0)
}

//! The accepting thread's loop: accept and read every connection without blocking,
//! check each complete request and hand it to the serving thread (`worker`); stop on
//! SIGINT or SIGTERM (the serving thread finishes what it was handed), ask for the
//! statistics on SIGUSR1.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use portlease::ProcessId;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::SocketFlags;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

use super::Limits;
use super::grant::{Asked, Granter, Refusal};
use super::listen::Socket;
use super::peer::{self, Peer};
use super::room::{self, Admission, Crowding, Seat};
use super::stats::ConnectionStats;
use super::worker::{self, Work};

/// The longest request taken: a pid and a newline fit with room to spare
/// (portpicker's server takes 20 characters too).
const MAX_REQUEST: usize = 20;
/// A request without a newline is taken as whole once the client has sent nothing
/// more for this long (portpicker's server takes whatever its first read returns).
const PAUSE_ENDS_REQUEST: Duration = Duration::from_millis(10);
/// How long accepting pauses when it fails for want of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// The most connections accepted in one turn of the loop, so reading keeps up.
const ACCEPT_PER_TURN: usize = 64;
/// How often, at most, the log says again that one user's connections are closed to
/// make room (each closing is logged at debug level).
const CROWDING_REPORT_EVERY: Duration = Duration::from_secs(60);

/// The signals the loop heeds, and a socket that wakes it from `poll` when one comes.
pub(super) struct Signals {
    stop: Arc<AtomicBool>,
    stopped_by: Arc<AtomicUsize>,
    dump: Arc<AtomicBool>,
    wake: UnixStream,
}

impl Signals {
    /// SIGINT and SIGTERM stop the loop after the transaction in progress (a second
    /// one exits at once); SIGUSR1 logs the statistics.
    pub(super) fn register() -> anyhow::Result<Signals> {
        let cannot = |e: std::io::Error| anyhow!("cannot listen for signals: {e}");
        let (wake, waker) = UnixStream::pair().map_err(cannot)?;
        wake.set_nonblocking(true).map_err(cannot)?;
        waker.set_nonblocking(true).map_err(cannot)?;
        let signals = Signals {
            stop: Arc::default(),
            stopped_by: Arc::default(),
            dump: Arc::default(),
            wake,
        };
        use signal_hook::{flag, low_level::pipe};
        for signal in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as the previous signal left it.
            flag::register_conditional_shutdown(signal, 1, Arc::clone(&signals.stop))
                .map_err(cannot)?;
            let number = usize::try_from(signal).map_err(|e| cannot(std::io::Error::other(e)))?;
            flag::register_usize(signal, Arc::clone(&signals.stopped_by), number)
                .map_err(cannot)?;
            flag::register(signal, Arc::clone(&signals.stop)).map_err(cannot)?;
            pipe::register(signal, waker.try_clone().map_err(cannot)?).map_err(cannot)?;
        }
        flag::register(SIGUSR1, Arc::clone(&signals.dump)).map_err(cannot)?;
        pipe::register(SIGUSR1, waker).map_err(cannot)?;
        Ok(signals)
    }

    /// Empties the wake-up socket.
    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// A client connection and what it has sent so far.
struct Connection {
    stream: UnixStream,
    peer: Peer,
    request: Vec<u8>,
    opened: Instant,
    last_byte: Option<Instant>,
    /// The client shut its side, or the request ended in a newline.
    ended: bool,
    /// A read failed: the reason, for the log.
    failed: Option<String>,
}

/// What to do with a connection now.
enum Next {
    Wait,
    Serve,
    Refuse(String),
}

impl Connection {
    /// A connection just accepted from `peer`, nothing read yet.
    fn accepted(stream: UnixStream, peer: Peer) -> Connection {
        Connection {
            stream,
            peer,
            request: Vec::new(),
            opened: Instant::now(),
            last_byte: None,
            ended: false,
            failed: None,
        }
    }

    /// Reads whatever the client has sent, without blocking.
    fn read(&mut self) {
        let mut chunk = [0u8; MAX_REQUEST + 1];
        while !self.ended && self.failed.is_none() && self.request.len() <= MAX_REQUEST {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.ended = true,
                Ok(n) => {
                    self.request.extend_from_slice(&chunk[..n]);
                    self.last_byte = Some(Instant::now());
                    if let Some(newline) = self.request.iter().position(|&b| b == b'\n') {
                        self.request.truncate(newline + 1);
                        self.ended = true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => self.failed = Some(format!("reading the request failed: {e}")),
            }
        }
    }

    fn next(&self, now: Instant, timeout: Duration) -> Next {
        if let Some(reason) = &self.failed {
            return Next::Refuse(reason.clone());
        }
        if self.request.len() > MAX_REQUEST && !self.ended {
            return Next::Refuse(format!("request longer than {MAX_REQUEST} bytes"));
        }
        if self.ended
            || self
                .last_byte
                .is_some_and(|t| now >= t + PAUSE_ENDS_REQUEST)
        {
            return Next::Serve;
        }
        if now >= self.timed_out_at(timeout) {
            return Next::Refuse(format!(
                "no whole request within {:.1}s",
                timeout.as_secs_f64()
            ));
        }
        Next::Wait
    }

    /// When the client's time to send its request ends; a timeout too long for the
    /// clock (`--request-timeout 1e19`) is a century, as good as never.
    fn timed_out_at(&self, timeout: Duration) -> Instant {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        self.opened
            .checked_add(timeout.min(CENTURY))
            .unwrap_or(self.opened)
    }

    /// When `next` may change without the client sending anything.
    fn deadline(&self, timeout: Duration) -> Instant {
        let timed_out = self.timed_out_at(timeout);
        self.last_byte
            .map_or(timed_out, |t| timed_out.min(t + PAUSE_ENDS_REQUEST))
    }
}

/// Failed accepts: pauses and logs once per burst.
#[derive(Default)]
struct AcceptState {
    paused_until: Option<Instant>,
    /// Failed accepts in the current burst; `None` when accepting works.
    failing: Option<u64>,
    /// Per uid whose connections were closed to make room: when the log last said
    /// so, and how many were closed since.
    crowded: HashMap<u32, (Instant, u64)>,
}

/// Serves until SIGINT or SIGTERM; returns the signal's number once the requests
/// handed over are served.
pub(super) fn serve(
    socket: &Socket,
    granter: Granter,
    limits: &Limits,
    signals: &Signals,
) -> anyhow::Result<usize> {
    let (work, serving) = worker::spawn(granter)?;
    let result = accept_and_read(socket, &work, limits, signals);
    drop(work);
    if serving.join().is_err() {
        log::error!("the serving thread failed");
    }
    result
}

/// The accepting thread's loop: hands every complete request to the serving thread.
fn accept_and_read(
    socket: &Socket,
    work: &std::sync::mpsc::Sender<Work>,
    limits: &Limits,
    signals: &Signals,
) -> anyhow::Result<usize> {
    let mut connections: Vec<Connection> = Vec::new();
    let mut accepting = AcceptState::default();
    let mut stats = ConnectionStats::default();
    loop {
        if signals.dump.swap(false, Ordering::SeqCst) {
            stats.open = connections.len();
            let _ = work.send(Work::Dump(stats));
        }
        if signals.stop.load(Ordering::SeqCst) {
            return Ok(signals.stopped_by.load(Ordering::SeqCst));
        }
        let now = Instant::now();
        let listening = accepting.paused_until.is_none_or(|until| now >= until);
        let mut deadline = accepting.paused_until.filter(|_| !listening);
        for connection in &connections {
            let at = connection.deadline(limits.request_timeout);
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        }
        let readable = wait(signals, socket, listening, &connections, deadline, now)?;
        signals.drain();
        // Read first, so that what is idle is known when newcomers need room.
        for (index, connection) in connections.iter_mut().enumerate() {
            if readable.connections.get(index) == Some(&true) {
                connection.read();
            }
        }
        hand_over(&mut connections, work, limits);
        if readable.listener {
            accepting.paused_until = None;
            if accept(socket, &mut connections, &mut accepting, &mut stats, limits) > 0 {
                hand_over(&mut connections, work, limits);
            }
        }
    }
}

/// What `poll` found readable.
struct Readable {
    listener: bool,
    connections: Vec<bool>,
}

/// Waits until the listener, a connection or the wake-up socket is readable, or the
/// deadline passes.
fn wait(
    signals: &Signals,
    socket: &Socket,
    listening: bool,
    connections: &[Connection],
    deadline: Option<Instant>,
    now: Instant,
) -> anyhow::Result<Readable> {
    let mut fds = Vec::with_capacity(connections.len() + 2);
    fds.push(PollFd::new(&signals.wake, PollFlags::IN));
    fds.push(PollFd::new(
        &socket.listener,
        if listening {
            PollFlags::IN
        } else {
            PollFlags::empty()
        },
    ));
    fds.extend(
        connections
            .iter()
            .map(|c| PollFd::new(&c.stream, PollFlags::IN)),
    );
    let timeout = deadline.map(|d| {
        Timespec::try_from(d.saturating_duration_since(now)).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        })
    });
    match rustix::event::poll(&mut fds, timeout.as_ref()) {
        Ok(_) | Err(Errno::INTR) => {}
        Err(e) => return Err(anyhow!("waiting for clients (poll) failed: {e}")),
    }
    let ready = |fd: &PollFd<'_>| !fd.revents().is_empty();
    Ok(Readable {
        listener: listening && ready(&fds[1]),
        connections: fds[2..].iter().map(ready).collect(),
    })
}

/// Accepts waiting connections, reading each at once, and makes room for them
/// (`room`); returns how many were accepted.
fn accept(
    socket: &Socket,
    connections: &mut Vec<Connection>,
    accepting: &mut AcceptState,
    stats: &mut ConnectionStats,
    limits: &Limits,
) -> usize {
    let mut accepted = 0;
    for _ in 0..ACCEPT_PER_TURN {
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        match rustix::net::accept_with(&socket.listener, flags) {
            Ok(fd) => {
                if let Some(failed) = accepting.failing.take() {
                    log::info!("accepting connections again, after {failed} failed accept(s)");
                }
                stats.accepted += 1;
                accepted += 1;
                let stream = UnixStream::from(fd);
                let peer = match Peer::of(&stream) {
                    Ok(peer) => peer,
                    Err(e) => {
                        log::warn!("closed a connection whose credentials cannot be read: {e}");
                        continue;
                    }
                };
                let mut connection = Connection::accepted(stream, peer);
                connection.read();
                seat(connection, connections, accepting, stats, limits);
            }
            Err(Errno::AGAIN) => break,
            Err(Errno::INTR | Errno::CONNABORTED) => {}
            Err(e) => {
                stats.accept_errors += 1;
                if accepting.failing.is_none() {
                    let why = if matches!(e, Errno::MFILE | Errno::NFILE) {
                        "out of file descriptors; raise the limit (`ulimit -n`) or lower \
                         --max-connections"
                    } else {
                        "accept failed"
                    };
                    log::warn!(
                        "cannot accept connections ({why}): {e}; {} open; retrying every {} ms, \
                         and saying so once until it works again",
                        connections.len(),
                        ACCEPT_BACKOFF.as_millis()
                    );
                }
                *accepting.failing.get_or_insert(0) += 1;
                accepting.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                break;
            }
        }
    }
    accepted
}

/// Gives a newcomer its place in the table, closing another connection to make room
/// or the newcomer itself (`room`), and logs why.
fn seat(
    newcomer: Connection,
    connections: &mut Vec<Connection>,
    accepting: &mut AcceptState,
    stats: &mut ConnectionStats,
    limits: &Limits,
) {
    let as_seat = |c: &Connection| Seat {
        uid: c.peer.uid,
        idle: c.request.is_empty() && !c.ended && c.failed.is_none(),
        opened: c.opened,
    };
    let admission = room::admit(
        connections,
        as_seat,
        newcomer.peer.uid,
        limits.max_connections,
        limits.max_connections_per_uid,
    );
    match admission {
        Admission::Take => connections.push(newcomer),
        Admission::Refuse => {
            stats.over_limit += 1;
            log::info!(
                "closed a connection from uid {} (pid {}): all {} connections are open \
                 (--max-connections), and no other user holds more of them than this one would",
                newcomer.peer.uid,
                newcomer.peer.pid,
                limits.max_connections
            );
        }
        Admission::Replace {
            index,
            uid,
            held,
            why,
        } => {
            let closed = connections.remove(index);
            connections.push(newcomer);
            stats.evicted += 1;
            let open_for = closed.opened.elapsed().as_secs_f64();
            if closed.request.is_empty() {
                log::debug!(
                    "closed an idle connection of uid {uid} (pid {}, open {open_for:.2}s) to \
                     make room for a newer one",
                    closed.peer.pid
                );
            } else {
                // A request cut short: a refusal, logged as the others are.
                log::info!(
                    "refused a request from uid {uid} (pid {}): its connection was closed after \
                     {open_for:.2}s, {} bytes sent, to make room for a newer one (its user holds \
                     the most connections)",
                    closed.peer.pid,
                    closed.request.len()
                );
            }
            report_crowding(accepting, uid, held, why, limits);
        }
    }
}

/// Says, at most once a minute per user, that its connections are closed to make room.
fn report_crowding(
    accepting: &mut AcceptState,
    uid: u32,
    held: usize,
    why: Crowding,
    limits: &Limits,
) {
    let now = Instant::now();
    let count = match accepting.crowded.get_mut(&uid) {
        None => {
            accepting.crowded.insert(uid, (now, 0));
            String::new()
        }
        Some((last, since)) => {
            *since += 1;
            if now.duration_since(*last) < CROWDING_REPORT_EVERY {
                return;
            }
            let count = format!(
                " ({since} closed in the last {}s)",
                now.duration_since(*last).as_secs()
            );
            (*last, *since) = (now, 0);
            count
        }
    };
    let cause = match why {
        Crowding::OwnShare => format!(
            "the most one user may (--max-connections-per-uid {})",
            limits.max_connections_per_uid
        ),
        Crowding::TableFull => format!(
            "the most of all users, and all {} are open (--max-connections)",
            limits.max_connections
        ),
    };
    log::warn!(
        "uid {uid} holds {held} connection(s), {cause}: closing its oldest idle connections to \
         make room for new ones{count}; other users' connections are kept; saying so at most \
         once a minute"
    );
}

/// Checks every complete request (here, while the serving thread is in a
/// transaction) and hands it, or its refusal, to the serving thread; keeps the
/// connections still being written.
fn hand_over(
    connections: &mut Vec<Connection>,
    work: &std::sync::mpsc::Sender<Work>,
    limits: &Limits,
) {
    let now = Instant::now();
    let mut waiting = Vec::with_capacity(connections.len());
    for connection in connections.drain(..) {
        let handed = match connection.next(now, limits.request_timeout) {
            Next::Wait => {
                waiting.push(connection);
                continue;
            }
            Next::Refuse(reason) => Work::Refuse(connection.peer, reason, Refusal::BadRequest),
            Next::Serve => {
                let peer = connection.peer;
                match peer::parse_pid(&connection.request) {
                    Err(reason) => Work::Refuse(peer, reason, Refusal::BadRequest),
                    Ok(pid) => match peer::check(peer, pid) {
                        Err(reason) => Work::Refuse(peer, reason, Refusal::NotPermitted),
                        // Looked up here, off the transactions' thread.
                        Ok(pid) => match ProcessId::of_running(pid) {
                            Some(owner) => Work::Serve(Asked { peer, owner }, connection.stream),
                            None => Work::Refuse(
                                peer,
                                format!("pid {pid}: no such process"),
                                Refusal::NotPermitted,
                            ),
                        },
                    },
                }
            }
        };
        // Only fails once the serving thread is gone, and then nothing is served.
        let _ = work.send(handed);
    }
    *connections = waiting;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection from a socket pair, as the loop keeps it; the client end too.
    fn connected(sent: &[u8]) -> (Connection, UnixStream) {
        let (server, mut client) = UnixStream::pair().expect("a socket pair");
        server.set_nonblocking(true).expect("non-blocking");
        std::io::Write::write_all(&mut client, sent).expect("send");
        let mut connection = Connection::accepted(server, Peer { uid: 0, pid: 1 });
        connection.read();
        (connection, client)
    }

    const TIMEOUT: Duration = Duration::from_secs(2);

    #[test]
    fn a_newline_ends_a_request_at_once() {
        let (connection, _client) = connected(b"42\n");
        assert!(matches!(
            connection.next(Instant::now(), TIMEOUT),
            Next::Serve
        ));
        assert_eq!(connection.request, b"42\n");
    }

    #[test]
    fn a_request_without_a_newline_ends_when_the_client_pauses_or_closes() {
        let (connection, _client) = connected(b"42");
        let sent = connection.last_byte.expect("bytes came");
        assert!(matches!(connection.next(sent, TIMEOUT), Next::Wait));
        let later = sent + PAUSE_ENDS_REQUEST;
        assert!(matches!(connection.next(later, TIMEOUT), Next::Serve));
        assert_eq!(connection.deadline(TIMEOUT), later);

        let (mut connection, client) = connected(b"42");
        drop(client);
        connection.read();
        assert!(matches!(
            connection.next(Instant::now(), TIMEOUT),
            Next::Serve
        ));
    }

    #[test]
    fn a_timeout_too_long_for_the_clock_is_a_far_deadline() {
        let (connection, _client) = connected(b"");
        assert!(matches!(
            connection.next(connection.opened, Duration::MAX),
            Next::Wait
        ));
        assert!(connection.deadline(Duration::MAX) > connection.opened + TIMEOUT);
    }

    #[test]
    fn silent_and_endless_requests_are_refused() {
        let (connection, _client) = connected(b"");
        assert!(matches!(
            connection.next(connection.opened, TIMEOUT),
            Next::Wait
        ));
        let late = connection.opened + TIMEOUT;
        assert!(
            matches!(connection.next(late, TIMEOUT), Next::Refuse(r) if r.contains("no whole request"))
        );

        let (connection, _client) = connected(&[b'1'; 40]);
        assert!(
            matches!(connection.next(Instant::now(), TIMEOUT), Next::Refuse(r) if r.contains("longer than 20"))
        );
    }
}

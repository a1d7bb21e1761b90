//! Spawning a command that owns its lease from before its program runs.
//!
//! # The hand-over
//! Spawning a child and then handing it the lease ([`Lease::hand_to`]) leaves a
//! moment in which the child's program runs while the lease is still the parent's: if
//! the parent is killed then, the lease ends with it and the port goes out again while
//! the program uses it. [`Lease::spawn`] closes that moment with a gate:
//!
//! 1. Two pipes are made: the gate (parent to child) and the report (child to parent).
//! 2. The child is forked. Before it runs the program (in `pre_exec`) it closes its copy
//!    of the gate's writing end, writes its pid to the report, and waits on the gate.
//! 3. The parent, on a thread of its own (std's `spawn` returns only once the program
//!    runs), reads the pid, records the child (pid and start time) as the owner of the
//!    lease, and only then writes the "go" byte on the gate.
//! 4. The child reads "go" and runs the program.
//!
//! If the parent dies anywhere before step 3 is done, the gate's last writing end
//! closes: the child reads end-of-file, not "go", and exits at once with code
//! [`PARENT_GONE_EXIT`], without running the program. The lease was the dead parent's
//! (or the dead child's): it ends, and no program runs on its port. If the hand-over
//! fails (the lease was lost meanwhile, say), the parent closes the gate too, reaps the
//! child and reports the error. So at no moment does the program run on a port that is
//! leased to no living process.
//!
//! Another thread of the parent that forks meanwhile without exec'ing keeps a copy of
//! the gate's writing end (it is close-on-exec, not close-on-fork): while that copy
//! lives, a child whose parent died waits for it instead of exiting at once.
//!
//! # Passing sockets
//! [`Lease::spawn_listening`] binds each leased port, passes the sockets as
//! descriptors 3, 4, ... and sets `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`, as
//! systemd's socket activation does. `LISTEN_PID` is the child's own pid, known only in
//! the child, where no allocation is safe: so the program's argument and environment
//! arrays are built before the fork, with room for the pid's digits, and the child
//! writes the digits in place and calls `execve` itself. Only async-signal-safe calls
//! run between fork and exec.

use std::ffi::{OsStr, OsString, c_char};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Socket, Type};

use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::record::Tenure;
use crate::request::Protocol;
use crate::test_hooks;

/// The exit code of a spawned child whose parent died (or gave up) before handing it
/// its lease: the child ends with it without running its program.
pub const PARENT_GONE_EXIT: i32 = 125;

/// The byte the parent writes on the gate once the lease is the child's.
const GO: u8 = b'G';

/// The most digits a pid has (Linux: at most 2^22; u32 in general).
const PID_DIGITS: usize = 10;

impl Lease {
    /// Spawns `command` with this lease handed to it before its program runs: from
    /// the moment the program starts, the lease is the child's (pid and start time),
    /// as [`hand_to`](Lease::hand_to) makes it: any TTL is cleared, and it lasts
    /// exactly as long as the child.
    ///
    /// If the calling process dies before the hand-over is recorded, the child exits
    /// with [`PARENT_GONE_EXIT`] without running the program, so no program ever runs
    /// on a port leased to no living process (see the module docs in the source,
    /// `src/spawn.rs`). The guard stays with the caller: drop or
    /// [`release`](Lease::release) it once the child has ended (its lease ends with
    /// the child anyway), or [`keep`](Lease::keep) it.
    ///
    /// The command runs through `pre_exec`, so std forks instead of using
    /// `posix_spawn`; spawning the same `Command` again later spawns it plainly.
    ///
    /// ```no_run
    /// # fn main() -> portlease::Result<()> {
    /// let allocator = portlease::Allocator::new()?;
    /// let lease = allocator.allocate(&portlease::Request::new())?;
    /// let mut server = lease.spawn(std::process::Command::new("./server").arg(lease.port().to_string()))?;
    /// let _ = server.wait();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Spawn`] when the command cannot be run (its error kind says why:
    /// `NotFound`, `PermissionDenied`, ...); the hand-over's errors
    /// ([`Error::LeaseLost`], lock and I/O errors), after which no program ran.
    pub fn spawn(&self, command: &mut Command) -> Result<Child> {
        spawn_handed(self, command, None)
    }

    /// Binds a socket to each leased port and spawns `command` with them, as
    /// [`spawn`](Lease::spawn) does: the sockets are its descriptors 3, 4, ..., in the
    /// order of [`ports`](Lease::ports), with `LISTEN_FDS` (their count), `LISTEN_PID`
    /// (the child's own pid) and `LISTEN_FDNAMES` (`names` joined by `:`, or `port0`,
    /// `port1`, ... when `names` is empty) in its environment, as systemd's socket
    /// activation passes them.
    ///
    /// `protocol` [`Tcp`](Protocol::Tcp) gives listening sockets (backlog 1024),
    /// [`Udp`](Protocol::Udp) bound datagram sockets; they are bound on the request's
    /// host, or 127.0.0.1. The lease is handed to the child as well; while the child
    /// holds the sockets, the ports are its, whether it uses them or not. No other
    /// descriptor of the caller reaches the child, as std's are close-on-exec.
    ///
    /// The child's environment is built before the fork from this process's and the
    /// variables set or removed on `command`; `Command::env_clear` and `arg0` are not
    /// seen (std does not tell them): remove variables one by one instead.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for [`Protocol::Both`] or a count of names that is
    /// not the count of ports; [`Error::Bind`]; those of [`spawn`](Lease::spawn).
    pub fn spawn_listening(
        &self,
        command: &mut Command,
        protocol: Protocol,
        names: &[&str],
    ) -> Result<Child> {
        let names =
            crate::parse::socket_names(self.ports().len(), names).map_err(Error::invalid)?;
        let sockets = self.bind_all(protocol)?;
        spawn_handed(self, command, Some(Passing { sockets, names }))
    }

    /// Binds one socket to each leased port, in the order of [`ports`](Lease::ports),
    /// on the request's host or 127.0.0.1: listening (backlog 1024) for
    /// [`Protocol::Tcp`], bound for [`Protocol::Udp`]. The lease stays as it is (for
    /// a child to be handed both); the sockets are close-on-exec.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for [`Protocol::Both`], [`Error::Bind`].
    pub fn bind_all(&self, protocol: Protocol) -> Result<Vec<OwnedFd>> {
        let kind = match protocol {
            Protocol::Tcp => Type::STREAM,
            Protocol::Udp => Type::DGRAM,
            Protocol::Both => {
                return Err(Error::invalid(
                    "a command is passed TCP or UDP sockets, not both: lease with tcp or udp",
                ));
            }
        };
        let host = self.host_or_localhost();
        self.ports()
            .iter()
            .map(|&port| {
                let addr = SocketAddr::new(host, port);
                bind(addr, kind, protocol == Protocol::Tcp)
                    .map_err(|source| Error::Bind { addr, source })
            })
            .collect()
    }
}

/// One socket bound (and listening, when `listen`) on `addr`, close-on-exec.
fn bind(addr: SocketAddr, kind: Type, listen: bool) -> io::Result<OwnedFd> {
    let socket = Socket::new(Domain::for_address(addr), kind, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    if listen {
        socket.listen(1024)?;
    }
    Ok(socket.into())
}

/// Sockets to pass to the child, with their names.
struct Passing {
    sockets: Vec<OwnedFd>,
    names: Vec<String>,
}

/// Spawns `command` with `lease` handed to the child before its program runs (and,
/// with `passing`, the sockets passed to it).
fn spawn_handed(lease: &Lease, command: &mut Command, passing: Option<Passing>) -> Result<Child> {
    let program = command.get_program().to_string_lossy().into_owned();
    let spawn_error = |source: io::Error| Error::Spawn {
        program: program.clone(),
        source,
    };
    // Most commands that cannot run are told before the fork, with the lease untouched.
    runnable(command).map_err(spawn_error)?;
    let (gate_read, gate_write) = pipe().map_err(spawn_error)?;
    let (report_read, report_write) = pipe().map_err(spawn_error)?;
    let exec = match &passing {
        Some(passing) => Some(Execve::build(command, passing).map_err(spawn_error)?),
        None => None,
    };
    let armed = Arc::new(AtomicBool::new(true));
    let child_side = ChildSide {
        armed: Arc::clone(&armed),
        gate_read: gate_read.as_raw_fd(),
        gate_write: gate_write.as_raw_fd(),
        report_read: report_read.as_raw_fd(),
        report_write: report_write.as_raw_fd(),
        sockets: passing
            .as_ref()
            .map(|p| p.sockets.iter().map(AsRawFd::as_raw_fd).collect())
            .unwrap_or_default(),
        exec,
    };
    let mut child_side = Some(child_side);
    // SAFETY: the closure calls only async-signal-safe functions (close, read, write,
    // getpid, fcntl, dup2, execve, _exit) and allocates nothing: everything it needs
    // was built before the fork. See `ChildSide::before_exec`.
    unsafe {
        command.pre_exec(move || match child_side.as_mut() {
            Some(side) => side.before_exec(),
            None => Ok(()),
        });
    }

    let mut report_read = std::fs::File::from(report_read);
    let (spawned, handed) = std::thread::scope(|scope| {
        let hand_to = std::thread::Builder::new()
            .name("portlease-hand-over".into())
            .spawn_scoped(scope, || hand_to_child(lease, &mut report_read, gate_write));
        let hand_to = match hand_to {
            Ok(thread) => thread,
            Err(e) => return (Err(e), None),
        };
        let spawned = command.spawn();
        // Only the child's copy of the report's writing end may keep it open now: a
        // child that never reached `pre_exec` leaves the hand-over thread end-of-file.
        drop(report_write);
        (spawned, Some(hand_to.join()))
    });
    armed.store(false, Ordering::Relaxed);
    drop(gate_read);
    let handed = match handed {
        Some(Ok(handed)) => handed,
        Some(Err(_)) => Err(Error::invalid("the hand-over thread panicked")),
        None => Ok(None),
    };
    // What the lease held before it was handed to the child, if it was.
    let before = match &handed {
        Ok(Some(before)) => Some(before.clone()),
        _ => None,
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(source) => {
            take_back(lease, before.as_deref());
            handed?;
            return Err(spawn_error(source));
        }
    };
    // Whatever the child still reports (its own exec's error) comes before the end of
    // the pipe, which its exec or exit closes.
    let mut errno = [0u8; 4];
    let failed_exec = read_full(&mut report_read, &mut errno).unwrap_or(false);
    let outcome = match handed {
        Err(e) => Err(e),
        Ok(None) => Err(spawn_error(io::Error::other(
            "the child ended before it could be handed its lease",
        ))),
        Ok(Some(_)) if failed_exec => Err(spawn_error(io::Error::from_raw_os_error(
            i32::from_ne_bytes(errno),
        ))),
        Ok(Some(_)) => Ok(()),
    };
    match outcome {
        Ok(()) => Ok(child),
        Err(e) => {
            // The child did not run the program: it exited, or exits at once.
            let _ = child.wait();
            take_back(lease, before.as_deref());
            Err(e)
        }
    }
}

/// Makes the lease what it was before it was handed to a child that never ran its
/// program (and has ended): else it would end with that child. Its owner (as a rule
/// the caller) and its TTL are put back as they were (`before`), so the failed spawn
/// neither shortens nor lengthens it.
fn take_back(lease: &Lease, before: Option<&[Tenure]>) {
    if let Some(before) = before
        && let Err(e) = lease.take_back(before)
    {
        log::debug!(
            "the lease on {:?} ended with a child that did not run: {e}",
            lease.ports()
        );
    }
}

/// The parent's side: reads the child's pid, hands it the lease (its TTL cleared, as
/// [`Lease::hand_to`] does), opens the gate. Returns what the lease held before, once
/// the gate is opened (`None`: the child ended before it asked).
fn hand_to_child(
    lease: &Lease,
    report: &mut std::fs::File,
    gate: OwnedFd,
) -> Result<Option<Vec<Tenure>>> {
    let mut pid = [0u8; 4];
    match read_full(report, &mut pid) {
        Ok(true) => {}
        _ => return Ok(None),
    }
    let pid = u32::from_ne_bytes(pid);
    test_hooks::stop_here("forked");
    let before = lease.hand_to_child(pid)?;
    test_hooks::stop_here("handed");
    let mut gate = std::fs::File::from(gate);
    gate.write_all(&[GO]).map_err(|source| Error::Spawn {
        program: format!("pid {pid}"),
        source,
    })?;
    test_hooks::stop_here("started");
    Ok(Some(before))
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` at end-of-file before them.
fn read_full(from: &mut std::fs::File, buf: &mut [u8]) -> io::Result<bool> {
    match from.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The calling thread's `errno`: reading it allocates nothing, so the forked child
/// may.
fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A close-on-exec pipe: (reading end, writing end).
#[cfg(linux_kernel)]
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec pipe: (reading end, writing end). Without `pipe2` (macOS), the flag
/// is set after: a fork by another thread in between may leak the pipe's ends into
/// that child's program, which then holds them open.
#[cfg(not(linux_kernel))]
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe succeeded: both descriptors are open and ours alone.
    let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for end in [&ends.0, &ends.1] {
        rustix::io::fcntl_setfd(end, rustix::io::FdFlags::CLOEXEC)?;
    }
    Ok(ends)
}

/// What the child does between fork and exec; built before the fork.
struct ChildSide {
    /// Cleared once the spawn is over: a later spawn of the same `Command` runs the
    /// closure, which then does nothing (these descriptors are closed by then).
    armed: Arc<AtomicBool>,
    gate_read: RawFd,
    gate_write: RawFd,
    report_read: RawFd,
    report_write: RawFd,
    sockets: Vec<RawFd>,
    exec: Option<Execve>,
}

impl ChildSide {
    /// Runs in the forked child: only async-signal-safe calls, no allocation.
    fn before_exec(&mut self) -> io::Result<()> {
        if !self.armed.load(Ordering::Relaxed) {
            return Ok(());
        }
        // SAFETY: each call below is async-signal-safe, on descriptors this child
        // inherited and buffers that live in its copy of the memory.
        unsafe {
            libc::close(self.gate_write);
            libc::close(self.report_read);
            let pid = libc::getpid().unsigned_abs();
            let bytes = pid.to_ne_bytes();
            if libc::write(self.report_write, bytes.as_ptr().cast(), bytes.len()) != 4 {
                libc::_exit(PARENT_GONE_EXIT);
            }
            let mut byte = 0u8;
            loop {
                let n = libc::read(self.gate_read, (&raw mut byte).cast(), 1);
                if n == 1 && byte == GO {
                    break;
                }
                if n < 0 && last_errno() == libc::EINTR {
                    continue;
                }
                // End-of-file: the parent died, or gave up, before the hand-over.
                libc::_exit(PARENT_GONE_EXIT);
            }
            libc::close(self.gate_read);
            let Some(exec) = self.exec.as_mut() else {
                // std runs the program; the report closes with its exec.
                return Ok(());
            };
            let errno = exec.run(&self.sockets, self.report_write, pid);
            let bytes = errno.to_ne_bytes();
            libc::write(exec.report_fd, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
    }
}

/// A program's argument and environment arrays, built before the fork, and the
/// paths to try, for the child to `execve` itself with `LISTEN_PID` filled in.
struct Execve {
    /// The paths to try, in order, each NUL-terminated.
    candidates: Vec<Vec<u8>>,
    argv: Vec<Vec<u8>>,
    envp: Vec<Vec<u8>>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    /// Where in `envp` the digits of `LISTEN_PID` go.
    listen_pid: *mut u8,
    /// The report's writing end, once moved clear of the passed descriptors.
    report_fd: RawFd,
    /// Room for the sockets' copies above the target range, one per socket, made
    /// before the fork (the child allocates nothing).
    moved: Vec<RawFd>,
}

// SAFETY: the raw pointers point into the struct's own heap buffers, which it owns and
// never resizes after `build`; it is used by one thread (the forked child) at a time.
unsafe impl Send for Execve {}
// SAFETY: as for Send: nothing is shared mutably but through `&mut self`.
unsafe impl Sync for Execve {}

impl Execve {
    fn build(command: &Command, passing: &Passing) -> io::Result<Execve> {
        let nul_free = |what: &str, bytes: &[u8]| {
            if bytes.contains(&0) {
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{what} holds a NUL byte"),
                ))
            } else {
                Ok(())
            }
        };
        let program = command.get_program();
        let mut argv = Vec::new();
        for arg in std::iter::once(program).chain(command.get_args()) {
            nul_free("an argument", arg.as_bytes())?;
            argv.push([arg.as_bytes(), b"\0"].concat());
        }
        let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !k.as_bytes().starts_with(b"LISTEN_"))
            .collect();
        for (key, value) in command.get_envs() {
            vars.retain(|(k, _)| k != key);
            if let Some(value) = value {
                vars.push((key.to_owned(), value.to_owned()));
            }
        }
        let path = vars
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone());
        vars.retain(|(k, _)| !k.as_bytes().starts_with(b"LISTEN_"));
        vars.push((
            "LISTEN_FDS".into(),
            passing.sockets.len().to_string().into(),
        ));
        vars.push(("LISTEN_FDNAMES".into(), passing.names.join(":").into()));
        let mut envp = Vec::new();
        for (key, value) in vars {
            nul_free("an environment variable", key.as_bytes())?;
            nul_free("an environment variable", value.as_bytes())?;
            envp.push([key.as_bytes(), b"=", value.as_bytes(), b"\0"].concat());
        }
        let mut pid_entry = b"LISTEN_PID=".to_vec();
        pid_entry.extend([0u8; PID_DIGITS + 1]);
        envp.push(pid_entry);
        let candidates = candidates(program, path.as_deref());
        let mut exec = Execve {
            candidates,
            argv,
            envp,
            argv_ptrs: Vec::new(),
            envp_ptrs: Vec::new(),
            listen_pid: std::ptr::null_mut(),
            report_fd: -1,
            moved: vec![-1; passing.sockets.len()],
        };
        exec.argv_ptrs = exec.argv.iter().map(|a| a.as_ptr().cast()).collect();
        exec.argv_ptrs.push(std::ptr::null());
        let last = exec.envp.len() - 1;
        // SAFETY: the entry is "LISTEN_PID=" and PID_DIGITS + 1 bytes: the digits start
        // within it.
        exec.listen_pid = unsafe { exec.envp[last].as_mut_ptr().add(b"LISTEN_PID=".len()) };
        exec.envp_ptrs = exec.envp.iter().map(|e| e.as_ptr().cast()).collect();
        exec.envp_ptrs.push(std::ptr::null());
        nul_free("the program's name", program.as_bytes())?;
        Ok(exec)
    }

    /// In the child: moves the report clear, puts the sockets at 3, 4, ..., writes
    /// `pid` into `LISTEN_PID` and execs. Returns the errno when no exec succeeded.
    ///
    /// # Safety
    /// Only in the forked child, before exec: it replaces descriptors 3, 4, ...
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        reason = "a handful of sockets; no conversion that could fail may run here"
    )]
    unsafe fn run(&mut self, sockets: &[RawFd], report: RawFd, pid: u32) -> i32 {
        let first = 3;
        let clear = first + sockets.len() as RawFd;
        // SAFETY: async-signal-safe calls on this child's descriptors; the pid's digits
        // fit in the PID_DIGITS bytes kept for them, followed by a NUL kept too.
        unsafe {
            self.report_fd = libc::fcntl(report, libc::F_DUPFD_CLOEXEC, clear);
            if self.report_fd < 0 {
                return last_errno();
            }
            libc::close(report);
            // First every socket above the target range, then each to its place: no
            // target overwrites a socket not yet placed. dup2 leaves the copy open
            // across exec.
            let moved = &mut self.moved;
            for (i, &fd) in sockets.iter().enumerate() {
                moved[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, clear);
                if moved[i] < 0 {
                    return last_errno();
                }
            }
            for (i, &fd) in moved.iter().enumerate() {
                if libc::dup2(fd, first + i as RawFd) < 0 {
                    return last_errno();
                }
                libc::close(fd);
            }
            let mut digits = [0u8; PID_DIGITS];
            let mut n = 0;
            let mut rest = pid;
            loop {
                digits[n] = b'0' + (rest % 10) as u8;
                n += 1;
                rest /= 10;
                if rest == 0 {
                    break;
                }
            }
            for i in 0..n {
                self.listen_pid.add(i).write(digits[n - 1 - i]);
            }
            self.listen_pid.add(n).write(0);
            let mut errno = libc::ENOENT;
            for path in &self.candidates {
                libc::execve(
                    path.as_ptr().cast(),
                    self.argv_ptrs.as_ptr(),
                    self.envp_ptrs.as_ptr(),
                );
                match last_errno() {
                    libc::ENOENT | libc::ENOTDIR => {}
                    libc::EACCES => errno = libc::EACCES,
                    other => return other,
                }
            }
            errno
        }
    }
}

/// The paths `execvp` would try for `program`: itself when it names a path, else
/// each directory of `path` (or the usual ones) joined with it; NUL-terminated.
fn candidates(program: &OsStr, path: Option<&OsStr>) -> Vec<Vec<u8>> {
    let name = program.as_bytes();
    if name.contains(&b'/') {
        return vec![[name, b"\0"].concat()];
    }
    let path = path.map_or_else(
        || b"/usr/local/bin:/usr/bin:/bin".to_vec(),
        |p| p.as_bytes().to_vec(),
    );
    path.split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { &b"."[..] } else { dir };
            [dir, b"/", name, b"\0"].concat()
        })
        .collect()
}

/// Whether `command`'s program can be found and run, as `execvp` would look for it:
/// `NotFound` or `PermissionDenied` if not. (Checked again by the exec itself.)
fn runnable(command: &Command) -> io::Result<()> {
    let program = command.get_program();
    let path = command
        .get_envs()
        .find(|(k, _)| *k == "PATH")
        .map_or_else(|| std::env::var_os("PATH"), |(_, v)| v.map(OsStr::to_owned));
    let mut denied = false;
    for candidate in candidates(program, path.as_deref()) {
        let candidate = std::path::PathBuf::from(OsStr::from_bytes(
            candidate.strip_suffix(b"\0").unwrap_or(&candidate),
        ));
        let candidate = match command.get_current_dir() {
            Some(dir) if candidate.is_relative() => dir.join(candidate),
            _ => candidate,
        };
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() => {
                match rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK) {
                    Ok(()) => return Ok(()),
                    Err(_) => denied = true,
                }
            }
            Ok(_) => denied = true,
            Err(_) => {}
        }
    }
    Err(if denied {
        io::Error::from(io::ErrorKind::PermissionDenied)
    } else {
        io::Error::from(io::ErrorKind::NotFound)
    })
}

/// The variables `spawn_listening` sets, as a child sees them: for tests.
#[cfg(test)]
fn env_of(exec: &Execve) -> Vec<String> {
    exec.envp
        .iter()
        .map(|e| String::from_utf8_lossy(e.split(|&b| b == 0).next().unwrap_or(&[])).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_without_a_slash_is_looked_for_on_the_path() {
        assert_eq!(
            candidates(OsStr::new("sh"), Some(OsStr::new("/a::/b"))),
            [&b"/a/sh\0"[..], b"./sh\0", b"/b/sh\0"]
        );
        assert_eq!(candidates(OsStr::new("./x"), None), [b"./x\0"]);
    }

    #[test]
    fn the_environment_keeps_the_commands_variables_and_sets_listen_ones() {
        let mut command = Command::new("true");
        command
            .env("PORTLEASE_SPAWN_TEST", "1")
            .env("LISTEN_FDS", "9");
        let passing = Passing {
            sockets: Vec::new(),
            names: vec!["a".into(), "b".into()],
        };
        let exec = Execve::build(&command, &passing).expect("built");
        let env = env_of(&exec);
        assert!(env.contains(&"PORTLEASE_SPAWN_TEST=1".to_owned()));
        assert!(env.contains(&"LISTEN_FDS=0".to_owned()));
        assert!(env.contains(&"LISTEN_FDNAMES=a:b".to_owned()));
        assert_eq!(
            env.iter().filter(|e| e.starts_with("LISTEN_FDS=")).count(),
            1
        );
    }
}

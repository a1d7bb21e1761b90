//! `portlease serve`: portpicker's real client and raw sockets against a running server.
//!
//! Ports: blocks 113-124, 30 and 33-35 only. Block 113 and 114 are cut into slices of 10 (see
//! `slice`), one per test; blocks 115-122 (800 ports) are the 8 × 100 clients' pool;
//! block 123 is the SIGUSR1 storm's pool, and block 124's first port the empty address's.

#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "pids and ports the test itself started or leased fit the C types"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portlease::{Allocator, Error, LeaseInfo, Request};

use crate::helpers::{Reaped, Run, binary, has_serve, portlease_in, ports, required, run_within};

/// Ports `offset..offset + count` of block `block`: tests share blocks 113 and 114 by
/// slices that do not overlap.
fn slice(block: u16, offset: u16, count: u16) -> std::ops::RangeInclusive<u16> {
    let start = *ports(block).start() + offset;
    assert!(
        start + count - 1 <= *ports(block).end(),
        "a slice past its block"
    );
    start..=start + count - 1
}

/// A range as the command line writes it: "START-END".
fn arg(range: &std::ops::RangeInclusive<u16>) -> String {
    format!("{}-{}", range.start(), range.end())
}

/// A running `portlease serve`, its log collected; stopped with SIGTERM on drop.
pub(crate) struct Server {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a server and waits until it says it serves.
    pub(crate) fn start(dir: &Path, address: &str, pool: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--address", address, "--pool", pool];
        args.extend_from_slice(extra);
        Server::start_with(dir, &args)
    }

    /// Starts `portlease --dir DIR serve ARGS...` and waits until it says it serves.
    fn start_with(dir: &Path, args: &[&str]) -> Server {
        let mut command = Command::new(binary());
        command.args(["--dir"]).arg(dir).arg("serve").args(args);
        Server::spawn(command)
    }

    /// Spawns a prepared server command and waits until it says it serves.
    fn spawn(mut command: Command) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("portlease serve runs");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        for line in lines.by_ref() {
            let line = line.expect("a log line");
            let ready = line.contains("serving ports");
            log.lock().expect("log").push(line);
            if ready {
                break;
            }
        }
        // Keep reading, so the server never blocks on a full pipe.
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        Server { child, log }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// The log, once it holds `needle` (the server logs after it answers), or after a
    /// bounded wait.
    pub(crate) fn log_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.contains(needle) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the server.
    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: signals our own child process, which has not been waited for.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGTERM; returns the exit code.
    fn stop(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.child.wait().expect("the server ends").code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An abstract address no other test or run uses.
pub(crate) fn abstract_address(test: &str) -> String {
    format!("@portlease-test-{}-{test}", std::process::id())
}

pub(crate) fn connect(address: &str) -> UnixStream {
    match address.strip_prefix('@') {
        Some(name) => {
            let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract name");
            UnixStream::connect_addr(&addr).expect("connect")
        }
        None => UnixStream::connect(address).expect("connect"),
    }
}

/// Sends `request` as a client would; returns the whole answer.
fn ask(address: &str, request: &[u8]) -> String {
    let mut stream = connect(address);
    // A bound on a server that never answers (a failure, not a hang), not a speed check.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("a read timeout");
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    // A refusal may close the connection with a reset; that is an empty answer too.
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

pub(crate) const PICKER: &str = r#"
import os, sys, portpicker
ports = [portpicker.pick_unused_port() for _ in range(3)]
print(os.getpid(), *ports, flush=True)
sys.stdin.readline()
"#;

pub(crate) fn portpicker_available() -> bool {
    let found = Command::new(crate::helpers::python())
        .args(["-c", "import portpicker"])
        .status();
    crate::helpers::required(
        matches!(found, Ok(status) if status.success()),
        "the portpicker Python package",
        "pip install portpicker (.ci/run installs it)",
    )
}

#[test]
fn portpicker_clients_get_unique_leased_ports_until_they_exit() {
    if !has_serve() {
        return;
    }
    if !portpicker_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(113, 0, 18);
    let pool_arg = arg(&pool);
    let address = abstract_address("picker");
    let server = Server::start(dir.path(), &address, &pool_arg, &[]);

    let mut pickers = spawn_clients(PICKER, &address, 6);
    let mut granted = Vec::new();
    for numbers in first_lines(&mut pickers) {
        for &port in &numbers[1..] {
            granted.push((port as u16, numbers[0]));
        }
    }
    let mut ports: Vec<u16> = granted.iter().map(|g| g.0).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 18, "every port unique: {granted:?}");

    let leases: Vec<LeaseInfo> = Run::new(dir.path()).args(["list", "--json"]).run().json();
    for (port, pid) in &granted {
        let lease = leases
            .iter()
            .find(|l| l.port == Some(*port))
            .expect("every port is a lease");
        assert_eq!(
            lease.pid,
            Some(i64::from(*pid)),
            "owned by the client that asked"
        );
        assert_eq!(lease.source.as_deref(), Some("serve"));
    }
    // The pool is drained: neither the server nor the library hands them out again.
    assert_eq!(
        ask(&address, format!("{}\n", std::process::id()).as_bytes()),
        ""
    );
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    assert!(matches!(
        allocator.allocate(&Request::new().range(pool.clone())),
        Err(Error::Exhausted { .. })
    ));

    for mut picker in pickers {
        drop(picker.stdin.take());
        picker.wait().expect("python ends");
    }
    let answer = ask(&address, format!("{}\n", std::process::id()).as_bytes());
    let port: u16 = answer
        .trim()
        .parse()
        .expect("a port once the clients are gone");
    assert!(pool.contains(&port));
    let log = server.log_with(&format!("granted port {port}"));
    assert!(
        log.contains("granted port") && log.contains("refused a request"),
        "{log}"
    );
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn bad_requests_are_refused_in_silence_and_logged_with_the_reason() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(113, 20, 10);
    let address = abstract_address("refusals");
    let server = Server::start(dir.path(), &address, &arg(&pool), &[]);
    let cases: [(&[u8], &str); 6] = [
        (b"0\n", "pid 0 is not a process"),
        (b"-5\n", "pid -5 is not a process"),
        (b"1\n", "reparented to init"),
        (b"abc\n", "is not a pid"),
        (b"123456789012345678901234\n", "longer than 20 bytes"),
        (b"999999999\n", "no such process"),
    ];
    for (request, _) in cases {
        assert_eq!(
            ask(&address, request),
            "",
            "{:?} is refused",
            String::from_utf8_lossy(request)
        );
    }
    let me = std::process::id();
    let port: u16 = ask(&address, format!("{me}\n").as_bytes())
        .trim()
        .parse()
        .expect("a port for a live pid");
    assert!(pool.contains(&port));
    let log = server.log_with(&format!("granted port {port} to pid {me}"));
    for (_, reason) in cases {
        assert!(log.contains(reason), "{reason:?} not logged:\n{log}");
    }
    assert!(
        log.contains(&format!("granted port {port} to pid {me}")),
        "{log}"
    );
}

#[test]
fn a_silent_client_does_not_hold_up_the_others() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(113, 30, 10);
    let address = abstract_address("silent");
    let pool_arg = arg(&pool);
    let _server = Server::start(
        dir.path(),
        &address,
        &pool_arg,
        &["--request-timeout", "60"],
    );
    let mut silent = connect(&address);
    let mut second = connect(&address);

    let port = ask(&address, format!("{}\n", std::process::id()).as_bytes());
    assert!(pool.contains(&port.trim().parse().expect("a port")));
    // The two silent clients are still waited on: the answer did not wait for them.
    for stream in [&mut silent, &mut second] {
        stream.set_nonblocking(true).expect("nonblocking");
        let error = stream
            .read(&mut [0u8; 8])
            .expect_err("no answer yet, nor a close");
        assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
    }
}

#[test]
fn a_path_socket_is_private_stale_ones_replaced_live_ones_kept() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(113, 40, 10);
    let pool_arg = arg(&pool);
    let socket_dir = dir.path().join("run");
    let path = socket_dir.join("portserver.sock");
    let address = path.to_str().expect("a UTF-8 path").to_owned();

    // Left by a crashed server: the socket file is there, nobody listens.
    std::fs::create_dir(&socket_dir).expect("mkdir");
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    drop(UnixListener::bind(&path).expect("a stale socket"));
    let server = Server::start(dir.path(), &address, &pool_arg, &[]);
    let mode = std::fs::metadata(&path)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let port = ask(&address, format!("{}\n", std::process::id()).as_bytes());
    assert!(pool.contains(&port.trim().parse().expect("a port")));

    // A second server must not steal the live socket.
    let second = Run::new(dir.path())
        .args(["serve", "--address", &address, "--pool", &pool_arg])
        .run();
    let stderr = second.fails(1, "already listening");
    let holder = format!("pid {} (", server.child.id());
    assert!(stderr.contains(&holder), "{holder:?} not in {stderr}");
    assert_eq!(server.stop(), Some(0));
    assert!(!path.exists(), "removed on SIGTERM");

    // A missing directory is created private.
    let fresh = dir.path().join("new/dir/ps.sock");
    let server = Server::start(dir.path(), fresh.to_str().expect("UTF-8"), &pool_arg, &[]);
    let mode = std::fs::metadata(fresh.parent().expect("a parent"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(server.stop(), Some(0));

    let taken = abstract_address("taken");
    let _first = Server::start(dir.path(), &taken, &pool_arg, &[]);
    let run = Run::new(dir.path())
        .args(["serve", "--address", &taken, "--pool", &pool_arg])
        .run();
    run.fails(1, "is taken: pid");
}

#[test]
fn one_pid_cannot_drain_the_pool() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let address = abstract_address("limit");
    let pool_arg = arg(&slice(113, 50, 10));
    let server = Server::start(dir.path(), &address, &pool_arg, &["--max-per-pid", "2"]);
    let me = format!("{}\n", std::process::id());
    let answers: Vec<String> = (0..3).map(|_| ask(&address, me.as_bytes())).collect();
    assert!(answers[0].trim().parse::<u16>().is_ok() && answers[1].trim().parse::<u16>().is_ok());
    assert_eq!(answers[2], "", "the third is refused");
    let log = server.log_with("already holds 2 leases");
    assert!(log.contains("already holds 2 leases"), "{log}");
    Run::new(dir.path())
        .args(["serve", "--max-per-pid", "0"])
        .run()
        .fails(2, "must be above 0");
    Run::new(dir.path())
        .args(["serve", "--pool", "9-2"])
        .run()
        .fails(2, "runs backwards");
}

/// Asks for `pid` with a newline, as portpicker's client does.
pub(crate) fn ask_for(address: &str, pid: u32) -> String {
    ask(address, format!("{pid}\n").as_bytes())
}

/// The port in an answer, or a panic naming the answer and the log.
fn port_of(answer: &str, server: &Server) -> u16 {
    answer
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("a port, not {answer:?}; log:\n{}", server.log()))
}

#[test]
fn portpickers_own_flags_start_the_server() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(113, 60, 10);
    let address = abstract_address("flags");
    // Exactly as scripts start portpicker's portserver.py.
    let server = Server::start_with(
        dir.path(),
        &[
            &format!("--portserver_static_pool={}", arg(&pool)),
            &format!("--portserver_address={address}"),
            "--verbose",
        ],
    );
    let port = port_of(&ask_for(&address, std::process::id()), &server);
    assert!(pool.contains(&port));
    assert_eq!(server.stop(), Some(0));

    // The older spelling of the address, a path, and --debug.
    let path = dir.path().join("ps.sock");
    let path = path.to_str().expect("a UTF-8 path");
    let server = Server::start_with(
        dir.path(),
        &[
            "--portserver_unix_socket_address",
            path,
            "--portserver_static_pool",
            &arg(&pool),
            "--debug",
        ],
    );
    let port = port_of(&ask_for(path, std::process::id()), &server);
    assert!(pool.contains(&port));
    assert_eq!(server.stop(), Some(0));

    // The defaults are portpicker's.
    let help = Run::new(dir.path())
        .args(["serve", "--help"])
        .run()
        .success();
    for default in [
        "@unittest-portserver",
        "15000-24999",
        "portserver_static_pool",
    ] {
        assert!(help.contains(default), "{default} not in:\n{help}");
    }
}

#[test]
fn sigusr1_logs_portpickers_statistics_and_the_server_goes_on() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(113, 70, 10);
    let address = abstract_address("usr1");
    let server = Server::start(dir.path(), &address, &arg(&pool), &[]);
    port_of(&ask_for(&address, std::process::id()), &server);
    assert_eq!(ask(&address, b"not a pid\n"), "");
    assert_eq!(ask(&address, b"999999999\n"), "");
    server.log_with("999999999");

    server.signal(libc::SIGUSR1);
    let log = server.log_with("total-allocations");
    for stat in [
        "client-request-errors 1",
        "denied-allocations 1",
        "num-ports-managed 10",
        "num-ports-checked-for-last-request 1",
        "total-allocations 1",
        "leases-held 1",
    ] {
        assert!(log.contains(stat), "{stat:?} not logged:\n{log}");
    }
    // Still serving.
    let port = port_of(&ask_for(&address, std::process::id()), &server);
    assert!(pool.contains(&port));
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn a_sigusr1_storm_does_not_hold_up_the_requests() {
    if !has_serve() {
        return;
    }
    // Each SIGUSR1 asks for the statistics; a storm of them must not keep the server
    // from serving (nor fill its memory with statistics to log).
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = ports(123);
    let address = abstract_address("usr1-storm");
    let server = Server::start(dir.path(), &address, &arg(&pool), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = Arc::clone(&stop);
        let pid = server.child.id() as i32;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: signals our own child, which is reaped only after this thread ends.
                unsafe { libc::kill(pid, libc::SIGUSR1) };
            }
        })
    };
    // Up to the first request left unanswered (each waits 30 s at most).
    let mut answers = Vec::new();
    while answers.len() < 20 && answers.last().is_none_or(|a: &String| !a.is_empty()) {
        answers.push(ask(
            &address,
            format!("{}\n", std::process::id()).as_bytes(),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    storm.join().expect("the storm ends");
    for answer in &answers {
        let port: u16 = answer
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("every request is answered during the storm: {answers:?}"));
        assert!(pool.contains(&port), "{port} is from the pool");
    }
}

/// Runs this test binary as `nobody` (uid 65534) with `setpriv`, as the client
/// `serve::client_of_another_user`, from a copy in a temp dir (returned, to be kept
/// while it runs); `None` when this is not root or setpriv is missing.
fn as_nobody(address: &str, claim: u32) -> Option<(Child, tempfile::TempDir)> {
    nobody_runs(
        "serve::client_of_another_user",
        &[
            ("PORTLEASE_CLIENT_ADDRESS", address.to_owned()),
            ("PORTLEASE_CLIENT_CLAIM", claim.to_string()),
        ],
    )
}

/// Runs the ignored test `test` of this binary as `nobody` (uid 65534) with
/// `setpriv`, from a copy in a temp dir (returned, to be kept while it runs), with
/// `env` set and stdin and stdout piped; `None` when this is not root or setpriv is
/// missing.
pub(crate) fn nobody_runs(
    test: &str,
    env: &[(&str, String)],
) -> Option<(Child, tempfile::TempDir)> {
    if !rustix::process::geteuid().is_root() {
        crate::helpers::required(
            false,
            "root, to run a client as another user",
            "run the tests as root, as CI does",
        );
        return None;
    }
    // A copy where `nobody` may run it: the build tree may sit in a private home.
    let place = tempfile::tempdir().expect("a temp dir");
    std::fs::set_permissions(place.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = place.path().join("client");
    std::fs::copy(std::env::current_exe().expect("this test binary"), &copy).expect("a copy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    match child {
        Ok(child) => Some((child, place)),
        Err(e) => {
            let what = format!("setpriv ({e})");
            crate::helpers::required(false, &what, "apt-get install util-linux");
            None
        }
    }
}

#[test]
#[ignore = "a client process that `a_client_gets_ports_only_for_its_own_processes` starts"]
fn client_of_another_user() {
    if !has_serve() {
        return;
    }
    let (Ok(address), Ok(claim)) = (
        std::env::var("PORTLEASE_CLIENT_ADDRESS"),
        std::env::var("PORTLEASE_CLIENT_CLAIM"),
    ) else {
        return;
    };
    let me = std::process::id();
    let own = ask_for(&address, me);
    let other = ask_for(&address, claim.parse().expect("a pid"));
    println!("ANSWERS {me} {:?} {:?}", own.trim(), other.trim());
    // Stay alive (and so a process of this user) until the test lets go.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn a_client_gets_ports_only_for_its_own_processes() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(113, 80, 10);
    let address = abstract_address("peer");
    let server = Server::start(dir.path(), &address, &arg(&pool), &[]);
    let root_pid = std::process::id();
    let Some((mut nobody, _copy)) = as_nobody(&address, root_pid) else {
        return;
    };
    // libtest may print "test serve::... " before it, on the same line.
    let line = BufReader::new(nobody.stdout.as_mut().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.split_once("ANSWERS ").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_default();
    let answers: Vec<&str> = std::iter::once("ANSWERS")
        .chain(line.trim().split(' '))
        .collect();
    assert_eq!(answers[0], "ANSWERS", "{line}");
    let nobody_pid: u32 = answers[1].parse().expect("the client's pid");
    // Its own pid: granted. Root's process: refused.
    let own: u16 = answers[2]
        .trim_matches('"')
        .parse()
        .unwrap_or_else(|_| panic!("a port for its own pid: {line}\n{}", server.log()));
    assert!(pool.contains(&own));
    assert_eq!(answers[3], "\"\"", "another user's pid is refused: {line}");
    let log = server.log_with(&format!("pid {root_pid} belongs to uid 0"));
    assert!(
        log.contains(&format!(
            "refused a request from uid 65534 (pid {nobody_pid}): pid {root_pid} belongs to uid 0"
        )),
        "{log}"
    );

    // Root may ask for anyone's process, but not for a kernel thread's or the server's.
    let for_nobody = port_of(&ask_for(&address, nobody_pid), &server);
    assert!(pool.contains(&for_nobody));
    let server_pid = server.child.id();
    assert_eq!(ask_for(&address, server_pid), "");
    let log = server.log_with(&format!("pid {server_pid} is this server"));
    assert!(
        log.contains(&format!("pid {server_pid} is this server")),
        "{log}"
    );
    match crate::helpers::kernel_thread() {
        Some(kthread) => {
            assert_eq!(ask_for(&address, kthread), "");
            let log = server.log_with(&format!("pid {kthread} is a kernel thread"));
            assert!(
                log.contains(&format!("pid {kthread} is a kernel thread")),
                "{log}"
            );
        }
        None => eprintln!("no kernel thread visible here: that case is not checked"),
    }
    let leases: Vec<LeaseInfo> = Run::new(dir.path()).args(["list", "--json"]).run().json();
    let owners: Vec<(Option<u16>, Option<i64>)> = leases.iter().map(|l| (l.port, l.pid)).collect();
    assert_eq!(leases.len(), 2, "{owners:?}");
    for port in [own, for_nobody] {
        assert!(
            owners.contains(&(Some(port), Some(i64::from(nobody_pid)))),
            "{owners:?}"
        );
    }
    drop(nobody.stdin.take());
    nobody.wait().expect("the client ends");
}

#[test]
fn a_socket_passed_by_systemd_is_served() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(113, 90, 10);
    let address = abstract_address("activated");
    let name = address.strip_prefix('@').expect("abstract");
    let listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).expect("a name"))
            .expect("a listening socket");
    // As systemd does: the socket is descriptor 3, LISTEN_FDS=1, LISTEN_PID the
    // server's own pid (set by the shell that then becomes the server).
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""])
        .arg(binary())
        .arg("--dir")
        .arg(dir.path())
        .args(["serve", "--pool", &arg(&pool)]);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    // SAFETY: dup2 and fcntl are async-signal-safe; they run in the child between
    // fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            // dup2 onto itself would leave close-on-exec set: clear it instead.
            let done = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if done == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::spawn(command);
    drop(listener);
    let port = port_of(&ask_for(&address, std::process::id()), &server);
    assert!(pool.contains(&port));
    assert!(
        server.log().contains("passed by systemd"),
        "{}",
        server.log()
    );
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn out_of_descriptors_the_server_backs_off_and_recovers() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(114, 0, 10);
    let address = abstract_address("emfile");
    let mut command = Command::new("prlimit");
    command
        .args(["--nofile=24:24", "--"])
        .arg(binary())
        .arg("--dir")
        .arg(dir.path())
        .args(["serve", "--address", &address, "--pool", &arg(&pool)])
        .args(["--request-timeout", "600"]);
    let server = Server::spawn(command);
    // Far more idle connections than the server has descriptors: they wait in the
    // listen queue while it cannot accept.
    let idle: Vec<UnixStream> = (0..40).map(|_| connect(&address)).collect();
    let log = server.log_with("out of file descriptors");
    assert!(log.contains("out of file descriptors"), "{log}");
    // Give a spinning loop the time to log its thousands of lines.
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(idle);
    // Every idle connection closed: the server serves again.
    let port = port_of(&ask_for(&address, std::process::id()), &server);
    assert!(pool.contains(&port));
    let log = server.log();
    let complaints = log.matches("out of file descriptors").count();
    assert!(
        complaints <= 5,
        "{complaints} complaints, not one per burst:\n{log}"
    );
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn sigterm_finishes_the_transaction_in_progress() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(114, 10, 10);
    let address = abstract_address("sigterm");
    let server = Server::start(
        dir.path(),
        &address,
        &arg(&pool),
        &["--lock-timeout", "60", "-vv"],
    );
    // Hold the registry lock, so the server's transaction waits in the middle.
    let lock = std::fs::File::open(dir.path().join(portlease::LOCK_FILE))
        .or_else(|_| std::fs::File::create(dir.path().join(portlease::LOCK_FILE)))
        .expect("the lock file");
    assert_eq!(
        // SAFETY: flock on a descriptor this test owns.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) },
        0
    );
    let client_address = address.clone();
    let client = std::thread::spawn(move || ask_for(&client_address, std::process::id()));
    server.log_with("serving 1 request");
    server.signal(libc::SIGTERM);
    // Time for a server that stops at once to be gone before its transaction can end.
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(lock);
    let answer = client.join().expect("the client");
    let port = port_of(&answer, &server);
    assert!(pool.contains(&port));
    let mut server = server;
    let code = server.child.wait().expect("the server ends").code();
    assert_eq!(code, Some(0), "{}", server.log());
    let leases: Vec<LeaseInfo> = Run::new(dir.path()).args(["list", "--json"]).run().json();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].port, Some(port));
}

#[test]
fn a_request_without_a_newline_is_answered_at_once() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(114, 20, 10);
    let address = abstract_address("nonewline");
    let server = Server::start(
        dir.path(),
        &address,
        &arg(&pool),
        &["--request-timeout", "600"],
    );
    // Ended by EOF (write side shut), and on a connection left open.
    let mut ended = connect(&address);
    ended
        .write_all(std::process::id().to_string().as_bytes())
        .expect("send");
    ended.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut open = connect(&address);
    open.write_all(std::process::id().to_string().as_bytes())
        .expect("send");
    for mut stream in [ended, open] {
        // A bound on a hang, not a speed check: the old server waited 600 s here.
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("an answer");
        assert!(pool.contains(&port_of(&answer, &server)));
    }
}

#[test]
fn errors_keep_their_cause() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("file");
    std::fs::write(&file, "").expect("a file");
    let address = file.join("ps.sock");
    Run::new(dir.path())
        .args(["serve", "--pool", &arg(&slice(114, 30, 10)), "--address"])
        .arg_path(&address)
        .run()
        .fails(1, "Not a directory");
}

#[test]
fn an_empty_address_is_refused_saying_so() {
    if !has_serve() {
        return;
    }
    // An empty path binds nothing the user named (Linux picks an abstract address of
    // its own); the error used to be "cannot restrict  to its owner".
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = format!("{}-{}", ports(124).start(), ports(124).start());
    let args = ["serve", "--address", "", "--pool", &range];
    let outcome = run_within(portlease_in(dir.path(), &args), Duration::from_secs(60));
    assert_ne!(outcome.code(), 0, "refused: {}", outcome.stderr());
    assert!(
        outcome.stderr().contains("--address is empty"),
        "says what was wrong: {}",
        outcome.stderr()
    );
}

#[test]
fn an_exhausted_pool_is_a_warning_with_its_state() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(114, 40, 3);
    let address = abstract_address("drained");
    let server = Server::start(dir.path(), &address, &arg(&pool), &[]);
    for _ in 0..3 {
        port_of(&ask_for(&address, std::process::id()), &server);
    }
    assert_eq!(ask_for(&address, std::process::id()), "");
    let log = server.log_with("pool exhausted");
    let warning = log
        .lines()
        .find(|l| l.contains("pool exhausted"))
        .unwrap_or_default();
    assert!(warning.starts_with("portlease: warning: "), "{log}");
    let me = std::process::id();
    assert!(
        warning.contains("3 ports") && warning.contains(&format!("3 held by pid {me}")),
        "{warning}"
    );
}

#[test]
fn one_user_cannot_drain_the_pool_when_limited() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(114, 50, 10);
    let address = abstract_address("peruid");
    let server = Server::start(dir.path(), &address, &arg(&pool), &["--max-per-uid", "2"]);
    // Three processes of this user, one port each: the third is over the limit.
    let mut sleepers: Vec<Child> = (0..3)
        .map(|_| {
            Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("sleep runs")
        })
        .collect();
    let answers: Vec<String> = sleepers.iter().map(|s| ask_for(&address, s.id())).collect();
    assert!(pool.contains(&port_of(&answers[0], &server)));
    assert!(pool.contains(&port_of(&answers[1], &server)));
    assert_eq!(answers[2], "", "over the limit");
    let log = server.log_with("--max-per-uid 2");
    assert!(
        log.contains("holds 2 ports from this server (--max-per-uid 2)"),
        "{log}"
    );
    // When a holder ends, its port no longer counts.
    sleepers[0].kill().expect("kill");
    sleepers[0].wait().expect("reaped");
    assert!(pool.contains(&port_of(&ask_for(&address, sleepers[2].id()), &server)));
    for mut sleeper in sleepers {
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
}

const EIGHTY: &str = r#"
import os, sys, portpicker
ports = [portpicker.pick_unused_port() for _ in range(100)]
print(os.getpid(), *ports, flush=True)
sys.stdin.readline()
"#;

#[test]
fn eight_portpicker_clients_never_fall_back_to_guessing() {
    if !has_serve() {
        return;
    }
    if !portpicker_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = *ports(115).start()..=*ports(122).end();
    let address = abstract_address("eight");
    let server = Server::start(dir.path(), &address, &arg(&pool), &[]);
    let mut clients = spawn_clients(EIGHTY, &address, 8);
    let mut granted = Vec::new();
    for numbers in first_lines(&mut clients) {
        assert_eq!(numbers.len(), 101, "{numbers:?}");
        granted.extend(numbers[1..].iter().map(|&port| (port as u16, numbers[0])));
    }
    let leases: Vec<LeaseInfo> = Run::new(dir.path()).args(["list", "--json"]).run().json();
    let mut unique: Vec<u16> = granted.iter().map(|g| g.0).collect();
    unique.sort_unstable();
    unique.dedup();
    // portpicker's client guesses on its own when refused: a guessed port is either a
    // duplicate, outside the pool, or not leased to the client by the server.
    assert_eq!(unique.len(), 800, "800 distinct ports");
    for (port, pid) in &granted {
        let lease = leases.iter().find(|l| l.port == Some(*port));
        let lease = lease.unwrap_or_else(|| panic!("port {port} was guessed, not leased"));
        assert_eq!(lease.pid, Some(i64::from(*pid)), "port {port}");
        assert_eq!(lease.source.as_deref(), Some("serve"));
    }
    for mut client in clients {
        drop(client.stdin.take());
        let output = client.wait_with_output().expect("python ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.to_lowercase();
        assert!(
            !stderr.contains("portserver"),
            "the client fell back: {stderr}"
        );
    }
    drop(server);
}

/// Whether `unshare` may make a PID namespace here; says why not when it may not.
fn pid_namespaces_available() -> bool {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status();
    crate::helpers::required(
        matches!(probe, Ok(status) if status.success()),
        "PID namespaces (unshare --pid --fork --mount-proc)",
        "run the tests as root, as CI does",
    )
}

#[test]
fn a_client_the_server_cannot_see_is_refused_with_the_reason() {
    if !has_serve() {
        return;
    }
    if !pid_namespaces_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(30, 0, 10);
    let address = abstract_address("unseen");
    // The server in a PID namespace of its own: this test's process is outside it,
    // so the kernel gives the server pid 0 for it (SO_PEERCRED).
    let mut command = crate::helpers::in_new_pid_namespace();
    command.arg(binary()).arg("--dir").arg(dir.path()).args([
        "serve",
        "--address",
        &address,
        "--pool",
        &arg(&pool),
    ]);
    let server = Server::spawn(command);
    assert_eq!(ask_for(&address, std::process::id()), "");
    // Refused with the reason, not the error of reading pid 0 ("Success (os error 0)").
    let log = server.log_with("cannot see");
    let refusal = log
        .lines()
        .find(|line| line.contains("cannot see"))
        .unwrap_or_default();
    assert!(
        refusal.contains("refused a request")
            && refusal.contains("a PID namespace this server cannot see"),
        "{log}"
    );
    let leases: Vec<LeaseInfo> = Run::new(dir.path()).args(["list", "--json"]).run().json();
    assert!(leases.is_empty(), "{leases:?}");
}

/// A portpicker client that forks a child, asks for the child's pid and then for
/// its own (pids of its own PID namespace), prints its pid, the child's and both
/// answers, and waits for a line on stdin.
const NAMESPACED_PICKER: &str = r#"
import os, sys, time, portpicker
child = os.fork()
if child == 0:
    time.sleep(600)
    os._exit(0)
other = portpicker.get_port_from_port_server(sys.argv[1], pid=child)
mine = portpicker.get_port_from_port_server(sys.argv[1])
print(os.getpid(), child, other, mine, flush=True)
sys.stdin.readline()
os.kill(child, 9)
"#;

/// The one child of process `pid`, by its pid on this side.
fn only_child(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_else(|e| panic!("the children of {pid}: {e}"));
    children
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("one child of {pid}, not {children:?}"))
}

#[test]
fn a_client_in_another_pid_namespace_gets_ports_for_itself_only() {
    if !has_serve() {
        return;
    }
    // A client in a PID namespace of its own (a container) sends pids as that
    // namespace counts them. The server must not read them as the host's: the lease
    // would belong to whatever host process has that number, and end with it while
    // the client still uses the port. So the client's pid is steered onto a live
    // host process's.
    if !portpicker_available() || !pid_namespaces_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(33, 0, 10);
    let address = abstract_address("pidns");
    let server = Server::start(dir.path(), &address, &arg(&pool), &[]);
    let namesake = Reaped(
        Command::new("sleep")
            .arg("120")
            .spawn()
            .expect("sleep runs"),
    );
    let namesake_pid = namesake.0.id();
    // Python is not the shell's last command, so the shell forks it (as the next pid
    // of the namespace) rather than becoming it (pid 1).
    let script = r#"echo $(($1 - 1)) > /proc/sys/kernel/ns_last_pid && "$2" -c "$3" "$4"; exit $?"#;
    let mut client = crate::helpers::in_new_pid_namespace();
    client
        .args(["sh", "-c", script, "sh", &namesake_pid.to_string()])
        .arg(crate::helpers::python())
        .args([NAMESPACED_PICKER, &address])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut client = Reaped(client.spawn().expect("unshare runs"));
    let mut line = String::new();
    BufReader::new(client.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the client's line");
    if line.is_empty() {
        let mut stderr = String::new();
        let _ = client
            .0
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr);
        if !required(
            !stderr.contains("ns_last_pid"),
            &format!(
                "a writable ns_last_pid in a new PID namespace ({})",
                stderr.trim()
            ),
            "run the tests as root, as CI does",
        ) {
            return;
        }
        panic!("the namespaced client said nothing: {stderr}");
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{line:?}; log:\n{}", server.log());
    let (inner_pid, child, other, mine) = (fields[0], fields[1], fields[2], fields[3]);
    assert_eq!(
        inner_pid,
        namesake_pid.to_string(),
        "the client's pid is steered onto the host process's"
    );
    // The client's pid on this side: the one child of the shell `unshare --fork` runs.
    let host_pid = i64::from(only_child(only_child(client.0.id())));
    assert_ne!(host_pid.to_string(), inner_pid, "the client is namespaced");
    // Its own pid, as it sees it: granted, to the process it names.
    let port: u16 = mine
        .parse()
        .unwrap_or_else(|_| panic!("a port, not {mine:?}; log:\n{}", server.log()));
    assert!(pool.contains(&port));
    // Another pid of its namespace: the server cannot tell which process that is.
    assert_eq!(other, "None", "{}", server.log());
    let reason = format!("pid {child} is in the client's PID namespace");
    let log = server.log_with(&reason);
    assert!(log.contains(&reason), "{log}");
    let leases: Vec<LeaseInfo> = Run::new(dir.path()).args(["list", "--json"]).run().json();
    let owners: Vec<(Option<u16>, Option<i64>)> = leases.iter().map(|l| (l.port, l.pid)).collect();
    assert_eq!(owners, vec![(Some(port), Some(host_pid))]);
    // The host process whose number the client sent ends; the client lives on, and
    // keeps its port.
    drop(namesake);
    let range = format!("{port}-{port}");
    let args = ["alloc", "--range", &range, "--lock-timeout", "10"];
    run_within(portlease_in(dir.path(), &args), Duration::from_secs(60)).fails(3, "no port free");
    drop(client.0.stdin.take());
    let _ = client.0.wait();
}

#[test]
fn a_request_timeout_too_long_for_the_clock_is_no_crash() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(34, 0, 10);
    let address = abstract_address("longtimeout");
    let mut server = Server::start(
        dir.path(),
        &address,
        &arg(&pool),
        &["--request-timeout", "1e19"],
    );
    // A slow client: connected, nothing sent yet, so the server computes its deadline.
    let _slow = connect(&address);
    let answer = ask_for(&address, std::process::id());
    assert!(pool.contains(&port_of(&answer, &server)));
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "{}",
        server.log()
    );
}

#[test]
fn a_grant_the_client_never_hears_of_is_released() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = slice(35, 0, 10);
    let address = abstract_address("unheard");
    let server = Server::start(dir.path(), &address, &arg(&pool), &[]);
    // A client that will not read its answer: the server's write fails (EPIPE).
    let mut stream = connect(&address);
    stream.shutdown(std::net::Shutdown::Read).expect("shutdown");
    stream
        .write_all(format!("{}\n", std::process::id()).as_bytes())
        .expect("send");
    let log = server.log_with("could not tell the client");
    assert!(log.contains("could not tell the client"), "{log}");
    let leases: Vec<LeaseInfo> = Run::new(dir.path()).args(["list", "--json"]).run().json();
    assert!(leases.is_empty(), "{leases:?}");
    // The port goes out again.
    let answer = ask_for(&address, std::process::id());
    assert!(pool.contains(&port_of(&answer, &server)));
}

/// `count` Python processes running `script`, a portpicker client of the server at
/// `address` (stdin, stdout and stderr piped).
pub(crate) fn spawn_clients(script: &str, address: &str, count: usize) -> Vec<Child> {
    (0..count)
        .map(|_| {
            Command::new(crate::helpers::python())
                .args(["-c", script])
                .env("PORTSERVER_ADDRESS", address)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("python3 runs")
        })
        .collect()
}

/// Each client's first line, as numbers: its pid, then the ports it was given.
pub(crate) fn first_lines(clients: &mut [Child]) -> Vec<Vec<u32>> {
    clients
        .iter_mut()
        .map(|client| {
            let mut line = String::new();
            BufReader::new(client.stdout.as_mut().expect("stdout"))
                .read_line(&mut line)
                .expect("a line");
            line.split_whitespace()
                .map(|n| n.parse().expect("a number"))
                .collect()
        })
        .collect()
}

//! `portlease serve`: portpicker's real client and raw sockets against a running server.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use portlease::{Allocator, Error, LeaseInfo, Request};

use crate::helpers::{Run, binary, first_ports, range_arg};

/// A running `portlease serve`, its log collected; stopped with SIGTERM on drop.
struct Server {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a server and waits until it says it serves.
    fn start(dir: &Path, address: &str, pool: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(binary())
            .args(["--dir"])
            .arg(dir)
            .args(["serve", "--address", address, "--pool", pool])
            .args(extra)
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

    fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// The log, once it holds `needle` (the server logs after it answers), or after a
    /// bounded wait.
    fn log_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.contains(needle) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// SIGTERM; returns the exit code.
    fn stop(mut self) -> Option<i32> {
        // SAFETY: signals our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
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
fn abstract_address(test: &str) -> String {
    format!("@portlease-test-{}-{test}", std::process::id())
}

fn connect(address: &str) -> UnixStream {
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
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    // A refusal may close the connection with a reset; that is an empty answer too.
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

const PICKER: &str = r#"
import os, sys, portpicker
ports = [portpicker.pick_unused_port() for _ in range(3)]
print(os.getpid(), *ports, flush=True)
sys.stdin.readline()
"#;

fn portpicker_available() -> bool {
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
    if !portpicker_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = first_ports(71, 18);
    let pool_arg = range_arg(71, 18);
    let address = abstract_address("picker");
    let server = Server::start(dir.path(), &address, &pool_arg, &[]);

    let mut pickers: Vec<Child> = (0..6)
        .map(|_| {
            Command::new(crate::helpers::python())
                .args(["-c", PICKER])
                .env("PORTSERVER_ADDRESS", &address)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 runs")
        })
        .collect();
    let mut granted = Vec::new();
    for picker in &mut pickers {
        let mut line = String::new();
        BufReader::new(picker.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("a line");
        let numbers: Vec<u32> = line
            .split_whitespace()
            .map(|n| n.parse().expect("a number"))
            .collect();
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
        log.contains("granted port") && log.contains("refused pid"),
        "{log}"
    );
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn bad_requests_are_refused_in_silence_and_logged_with_the_reason() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = first_ports(72, 10);
    let address = abstract_address("refusals");
    let server = Server::start(dir.path(), &address, &range_arg(72, 10), &[]);
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
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = first_ports(73, 10);
    let address = abstract_address("silent");
    let pool_arg = range_arg(73, 10);
    let _server = Server::start(
        dir.path(),
        &address,
        &pool_arg,
        &["--request-timeout", "60"],
    );
    let mut silent = connect(&address);
    let mut trickle = connect(&address);
    trickle.write_all(b"1").expect("one byte");

    let port = ask(&address, format!("{}\n", std::process::id()).as_bytes());
    assert!(pool.contains(&port.trim().parse().expect("a port")));
    // The two slow clients are still waited on: the answer did not wait for them.
    for stream in [&mut silent, &mut trickle] {
        stream.set_nonblocking(true).expect("nonblocking");
        let error = stream
            .read(&mut [0u8; 8])
            .expect_err("no answer yet, nor a close");
        assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
    }
}

#[test]
fn a_path_socket_is_private_stale_ones_replaced_live_ones_kept() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = first_ports(74, 10);
    let pool_arg = range_arg(74, 10);
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
    second.fails(1, "already listening");
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
    run.fails(1, "already listens");
}

#[test]
fn one_pid_cannot_drain_the_pool() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let address = abstract_address("limit");
    let pool_arg = range_arg(75, 10);
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

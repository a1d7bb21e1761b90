//! `portlease exec --listen`: the ports bound before the command runs, passed to it as
//! descriptors 3, 4, ... the way systemd's socket activation passes them; and real
//! servers (uvicorn, gunicorn, a Rust server on `listenfd`) serving on them.
//!
//! Ports: block 75, ten ports per test (see `range`).

#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "pids and ports the test itself started or leased fit the C types"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{Reaped, Run, binary, ports, python, required};

/// The `i`-th tenth of block 75, as "START-END" for `count` ports of it.
fn range(i: u16, count: u16) -> (u16, String) {
    let start = *ports(75).start() + 10 * i;
    (start, format!("{start}-{}", start + count - 1))
}

/// What the command sees: its pid, LISTEN_*, the names and addresses of its
/// descriptors 3.., and whether descriptor 3 + count is open.
const INSPECT: &str = r#"
import os, socket, sys
n = int(os.environ["LISTEN_FDS"])
print("pid_ok", os.environ["LISTEN_PID"] == str(os.getpid()))
print("names", os.environ["LISTEN_FDNAMES"])
print("args", " ".join(sys.argv[1:]))
for fd in range(3, 3 + n):
    s = socket.socket(fileno=fd)
    kind = "tcp" if s.type == socket.SOCK_STREAM else "udp"
    listening = s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) if kind == "tcp" else 0
    print("fd", fd, kind, s.getsockname()[0], s.getsockname()[1], listening)
    s.detach()
try:
    os.fstat(3 + n)
    print("extra open")
except OSError:
    print("extra closed")
print("ports", os.environ["PORTLEASE_PORTS"])
"#;

#[test]
fn listening_sockets_reach_the_command_as_descriptors_with_listen_variables() {
    if !required(
        Command::new(python()).arg("-V").output().is_ok(),
        "python3",
        "install python3",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let (start, range) = range(0, 2);
    let out = Run::new(dir.path())
        .args(["exec", "--listen", "--range", &range, "-n", "2"])
        .args(["--env", "WEB", "--env", "ADMIN", "--"])
        .args([&python(), "-c", INSPECT, "{FD}", "{FD1}", "{PORT1}"])
        .run()
        .success();
    let lines: Vec<&str> = out.lines().collect();
    let (a, b) = (start, start + 1);
    assert_eq!(
        lines,
        [
            "pid_ok True",
            "names WEB:ADMIN",
            &format!("args 3 4 {b}"),
            &format!("fd 3 tcp 127.0.0.1 {a} 1"),
            &format!("fd 4 tcp 127.0.0.1 {b} 1"),
            "extra closed",
            &format!("ports {a} {b}"),
        ],
        "{out}"
    );
}

#[test]
fn udp_sockets_with_proto_udp_and_numbered_names() {
    if !required(
        Command::new(python()).arg("-V").output().is_ok(),
        "python3",
        "install python3",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let (start, range) = range(1, 1);
    let out = Run::new(dir.path())
        .args([
            "exec", "--listen", "--proto", "udp", "--range", &range, "--",
        ])
        .args([&python(), "-c", INSPECT])
        .run()
        .success();
    assert!(out.contains("names port0"), "{out}");
    assert!(
        out.contains(&format!("fd 3 udp 127.0.0.1 {start} 0")),
        "{out}"
    );
    assert!(out.contains("pid_ok True"), "{out}");
}

#[test]
fn a_descriptor_placeholder_without_listen_or_with_both_protocols_is_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (_, range) = range(2, 1);
    Run::new(dir.path())
        .args(["exec", "--range", &range, "--", "echo", "{FD}"])
        .run()
        .fails(2, "--listen");
    Run::new(dir.path())
        .args(["exec", "--listen", "--proto", "both", "--range", &range])
        .args(["--", "true"])
        .run()
        .fails(2, "--proto tcp");
}

/// `portlease exec --listen` serving a command; dropped, it sends portlease SIGTERM,
/// which passes it on to the command, and reaps portlease (after a SIGKILL, should
/// SIGTERM not end it): no server outlives the test.
struct Served {
    portlease: Reaped,
    /// The leased port.
    port: u16,
    /// The command's pid, once the lease is its own.
    command: i64,
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: signals the portlease process this test started.
        unsafe { libc::kill(self.portlease.0.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if !matches!(self.portlease.0.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: ends the command this test started, should it still run (a killed
        // portlease forwards nothing); its pid is not reused while its lease shows it.
        unsafe { libc::kill(self.command as i32, libc::SIGKILL) };
    }
}

/// Starts `portlease exec --listen` on one port of the 10 from `start`, with
/// `command`, and waits until the lease is the command's: the port is bound and
/// listening then. (Ten, since a port a server closed may wait in TIME_WAIT a while.)
fn serve(dir: &Path, start: u16, command: &[&str]) -> Served {
    let range = format!("{start}-{}", start + 9);
    let portlease = Reaped(
        Command::new(binary())
            .env("PORTLEASE_DIR", dir)
            .args(["exec", "--listen", "--range", &range, "--"])
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("portlease runs"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let leases: Vec<portlease::LeaseInfo> = Run::new(dir).args(["list", "--json"]).run().json();
        if let Some((port, pid)) = leases
            .iter()
            .filter_map(|l| Some((l.port?, l.pid?)))
            .find(|&(_, pid)| pid != i64::from(portlease.0.id()))
        {
            return Served {
                portlease,
                port,
                command: pid,
            };
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never passed to the command"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP GET of `/` on 127.0.0.1:`port`: the connection is accepted by the
/// kernel at once (the socket listens before the server starts); the answer comes
/// once the server serves. The read timeout only keeps a broken server from hanging
/// the test.
fn get(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the port listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("a timeout");
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("the request is sent");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn python_has(module: &str) -> bool {
    Command::new(python())
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn uvicorn_serves_on_the_passed_descriptor() {
    if !required(
        python_has("uvicorn"),
        "the Python package uvicorn",
        "pip install uvicorn",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        dir.path().join("asgi_app.py"),
        "async def app(scope, receive, send):\n    \
         await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n    \
         await send({'type': 'http.response.body', 'body': b'hello from uvicorn'})\n",
    )
    .expect("the app");
    let (start, _) = range(3, 10);
    let app_dir = dir.path().to_str().expect("a UTF-8 temp dir");
    let server = serve(
        dir.path(),
        start,
        &[
            &python(),
            "-m",
            "uvicorn",
            "--fd",
            "{FD}",
            "--app-dir",
            app_dir,
            "--lifespan",
            "off",
            "asgi_app:app",
        ],
    );
    let answer = get(server.port);
    drop(server);
    assert!(answer.ends_with("hello from uvicorn"), "{answer}");
}

/// gunicorn takes the sockets from LISTEN_FDS itself, once LISTEN_PID is its own pid:
/// so this shows LISTEN_PID right. (With `--bind fd://3` as well it would take
/// descriptor 3 twice, and fail.)
#[test]
fn gunicorn_serves_on_the_passed_descriptor() {
    if !required(
        python_has("gunicorn"),
        "the Python package gunicorn",
        "pip install gunicorn",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        dir.path().join("wsgi_app.py"),
        "def app(environ, start_response):\n    \
         start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [b'hello from gunicorn']\n",
    )
    .expect("the app");
    let (start, _) = range(4, 10);
    let app_dir = dir.path().to_str().expect("a UTF-8 temp dir");
    let server = serve(
        dir.path(),
        start,
        &[
            &python(),
            "-m",
            "gunicorn",
            "--chdir",
            app_dir,
            "--workers",
            "1",
            "wsgi_app:app",
        ],
    );
    let answer = get(server.port);
    drop(server);
    assert!(answer.ends_with("hello from gunicorn"), "{answer}");
}

/// A Rust server on `listenfd`: run by `a_rust_server_on_listenfd_serves...` under
/// `portlease exec --listen`, as this test binary started again.
#[test]
#[ignore = "a server process for another test, not a test"]
fn listenfd_server() {
    let mut fds = listenfd::ListenFd::from_env();
    let listener = fds
        .take_tcp_listener(0)
        .expect("descriptor 3")
        .expect("LISTEN_FDS names descriptor 3, and LISTEN_PID this process");
    let (mut stream, _) = listener.accept().expect("a connection");
    let mut request = [0u8; 1024];
    let _ = stream.read(&mut request);
    stream
        .write_all(b"HTTP/1.0 200 OK\r\n\r\nhello from listenfd")
        .expect("the answer is sent");
}

#[test]
fn a_rust_server_on_listenfd_serves_on_the_passed_descriptor() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (start, _) = range(5, 10);
    let test_binary = std::env::current_exe().expect("the test binary");
    let mut server = serve(
        dir.path(),
        start,
        &[
            test_binary.to_str().expect("a UTF-8 path"),
            "exec_listen::listenfd_server",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ],
    );
    let answer = get(server.port);
    assert!(answer.ends_with("hello from listenfd"), "{answer}");
    let status = server.portlease.0.wait().expect("portlease ends");
    assert!(status.success(), "the server ended with {status}");
}

#[test]
fn a_command_that_never_takes_its_socket_still_keeps_its_port() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (start, _) = range(6, 10);
    let mut server = serve(dir.path(), start, &["sleep", "600"]);
    let port = server.port;
    // The port is bound (it listens), though sleep never takes the socket.
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("the port listens");
    // Even with portlease gone, the sleeping command holds the port: lease and socket.
    let _ = server.portlease.0.kill();
    let _ = server.portlease.0.wait();
    Run::new(dir.path())
        .args(["alloc", "--range", &format!("{port}-{port}")])
        .run()
        .fails(3, "no port free");
    let leases: Vec<portlease::LeaseInfo> =
        Run::new(dir.path()).args(["list", "--json"]).run().json();
    assert_eq!(leases[0].pid, Some(server.command));
    drop(stream);
}

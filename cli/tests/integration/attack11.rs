//! Attacks from outside on the request board (issue 9) and `portlease serve`
//! (issue 11), each a defect found and fixed.
//!
//! Ports: blocks 123 and 124 only.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::helpers::{Reaped, binary, portlease_in, ports, python, run_within};

/// A running `portlease serve`; killed on drop.
struct Server(Child);

impl Server {
    /// Starts a server on `address` handing out `pool`, its log in `dir/serve.log`, and
    /// waits until it serves.
    fn start(dir: &Path, address: &str, pool: &str) -> Server {
        let log_path = dir.join("serve.log");
        let log = std::fs::File::create(&log_path).expect("a log file");
        let child = Command::new(binary())
            .arg("--dir")
            .arg(dir)
            .args(["serve", "--address", address, "--pool", pool])
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("portlease serve runs");
        let server = Server(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log_path).is_ok_and(|log| log.contains("serving ports")) {
            assert!(
                std::time::Instant::now() < deadline,
                "the server never served"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An abstract address no other test or run uses.
fn abstract_address(test: &str) -> String {
    format!("@portlease-attack11-{}-{test}", std::process::id())
}

/// A client that asks for its own pid (as portpicker's does), prints the answer,
/// then lives until its stdin closes.
const SELF_ASKING_CLIENT: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect("\0" + sys.argv[1][1:])
s.sendall(b"%d\n" % os.getpid())
print(os.getpid(), s.recv(100).decode().strip(), flush=True)
sys.stdin.readline()
"#;

#[test]
fn a_client_in_a_pid_namespace_gets_a_lease_for_itself_not_for_the_host_process_of_its_pid() {
    // A client in a PID namespace of its own (a container) sends its pid as that
    // namespace counts it. The server must not read it as the host's pid: the lease
    // would belong to whatever host process has that number, and end with it while
    // the client still uses the port. The client's pid is steered to a host sleeper's.
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *ports(123).start();
    let address = abstract_address("pidns");
    let _server = Server::start(dir.path(), &address, &format!("{port}-{port}"));
    let mut sleeper = Reaped(
        Command::new("sleep")
            .arg("120")
            .spawn()
            .expect("sleep runs"),
    );
    let script = format!(
        "echo {last} > /proc/sys/kernel/ns_last_pid && '{python}' -c '{SELF_ASKING_CLIENT}' {address}",
        last = sleeper.0.id() - 1,
        python = python(),
    );
    let mut client = Command::new("unshare");
    client
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut client = Reaped(client.spawn().expect("unshare runs"));
    let mut line = String::new();
    let read = BufReader::new(client.0.stdout.as_mut().expect("stdout")).read_line(&mut line);
    if read.map_or(true, |n| n == 0) {
        let mut stderr = String::new();
        let _ = client
            .0
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr);
        if stderr.contains("unshare failed")
            || stderr.contains("Operation not permitted")
            || stderr.contains("ns_last_pid")
            || stderr.contains("not found")
        {
            eprintln!(
                "skipped: unshare, ns_last_pid or python is refused here ({})",
                stderr.trim()
            );
            return;
        }
        panic!("the namespaced client said nothing: {stderr}");
    }
    let mut words = line.split_whitespace();
    let inner_pid: u32 = words.next().and_then(|w| w.parse().ok()).expect("its pid");
    if inner_pid != sleeper.0.id() {
        eprintln!("skipped: the client's pid could not be steered ({inner_pid})");
        return;
    }
    let answer = words.next().unwrap_or("");
    // The host process whose number the client sent ends; the client lives on.
    let _ = sleeper.0.kill();
    let _ = sleeper.0.wait();
    if answer.is_empty() {
        // Refused: the client guesses on its own, nothing is leased for it.
        return;
    }
    assert_eq!(answer, port.to_string(), "the only port of the pool");
    let range = format!("{port}-{port}");
    let args = ["alloc", "--range", &range, "--lock-timeout", "10"];
    run_within(portlease_in(dir.path(), &args), Duration::from_secs(60)).fails(3, "no port free");
    let _ = client
        .0
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(b"\n"));
}

#[test]
fn a_sigusr1_storm_does_not_hold_up_the_requests() {
    // Each SIGUSR1 asks for the statistics; a storm of them must not keep the server
    // from serving (nor fill its memory with statistics to log).
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = ports(123);
    let address = abstract_address("usr1");
    let server = Server::start(
        dir.path(),
        &address,
        &format!("{}-{}", pool.start(), pool.end()),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = Arc::clone(&stop);
        let pid = server.0.id() as i32;
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

#[test]
fn an_empty_address_is_refused_saying_so() {
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
fn a_client_the_server_cannot_see_is_refused_saying_why() {
    // A server in a PID namespace of its own (a container) cannot see the pid of a
    // client outside it: the kernel reports pid 0. That used to be read into a type
    // that cannot hold 0, and logged as "Success (os error 0)".
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *ports(124).start() + 1;
    let address = abstract_address("unseen");
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("a log file");
    let mut server = Command::new("unshare");
    server
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(binary())
        .arg("--dir")
        .arg(dir.path())
        .args([
            "serve",
            "--address",
            &address,
            "--pool",
            &format!("{port}-{port}"),
        ])
        .stdin(Stdio::null())
        .stderr(log);
    let _server = Reaped(server.spawn().expect("unshare runs"));
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !read_log().contains("serving ports") {
        let log = read_log();
        if log.contains("unshare failed") || log.contains("Operation not permitted") {
            eprintln!("skipped: unshare is refused here ({})", log.trim());
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never served: {log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let answer = ask(&address, format!("{}\n", std::process::id()).as_bytes());
    assert_eq!(answer, "", "refused");
    while !read_log().contains("refused a request") {
        assert!(
            std::time::Instant::now() < deadline,
            "never logged: {}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        read_log().contains("PID namespace this server cannot see"),
        "the log says why: {}",
        read_log()
    );
}

/// Sends `request` as a client would; returns the whole answer.
fn ask(address: &str, request: &[u8]) -> String {
    let name = address.strip_prefix('@').expect("an abstract address");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract name");
    let mut stream = UnixStream::connect_addr(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

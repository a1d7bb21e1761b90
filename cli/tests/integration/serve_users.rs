//! `portlease serve` on a host shared between users: one user's silent connections
//! must not shut out another's requests, a squatted abstract name is a clear error, and
//! a private path socket serves portpicker's client.
//!
//! Ports: blocks 57-59 only, one a test (block 58: two tests, of which one never
//! starts a server that grants). Other users are `nobody` (uid 65534), run
//! with `setpriv`; those tests are skipped where this is not root.

use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::{ChildStdout, Command};
use std::time::{Duration, Instant};

use portlease::LeaseInfo;

use crate::helpers::{Reaped, Run, has_serve, ports, python, run_within};
use crate::serve::{
    PICKER, Server, abstract_address, first_lines, nobody_runs, portpicker_available, spawn_clients,
};

/// How many silent connections the flooding user keeps open: more than the server's
/// default `--max-connections` (256).
const FLOOD: usize = 300;
/// How often the flood replaces each of its connections: before the server's default
/// `--request-timeout` (2 s) would close it.
const FLOOD_RENEWAL: Duration = Duration::from_millis(1500);

/// The rest of the first line of `stdout` that holds `prefix` (libtest may print
/// "test NAME ... " before it, on the same line); empty if none comes.
fn line_after(stdout: &mut ChildStdout, prefix: &str) -> String {
    BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split_once(prefix)
                .map(|(_, rest)| rest.trim().to_owned())
        })
        .unwrap_or_default()
}

/// portpicker's client asks the server for 60 ports, one connection each, and prints
/// what each call returned (`None` for a refusal, where `pick_unused_port` would
/// silently guess a port of its own).
const SIXTY_REQUESTS: &str = r#"
import os, portpicker
answers = [portpicker.get_port_from_port_server(os.environ["PORTSERVER_ADDRESS"]) for _ in range(60)]
print(os.getpid(), *answers, flush=True)
"#;

#[test]
fn one_users_silent_connections_do_not_shut_out_another_users_requests() {
    if !has_serve() {
        return;
    }
    if !portpicker_available() {
        return;
    }
    // The defaults: --max-connections 256, half of them for one user, and
    // --request-timeout 2.
    let Some(log) = sixty_requests_while_nobody_floods(&[]) else {
        return;
    };
    assert!(
        log.contains(
            "uid 65534 holds 128 connection(s), the most one user may \
             (--max-connections-per-uid 128): closing its oldest idle connections"
        ),
        "the flood never reached its share of the connections: {log}"
    );
    // With no share (more than the table), the user holding the most makes room.
    let Some(log) = sixty_requests_while_nobody_floods(&["--max-connections-per-uid", "1000"])
    else {
        return;
    };
    assert!(
        log.contains(
            "uid 65534 holds 256 connection(s), the most of all users, and all 256 are open \
             (--max-connections): closing its oldest idle connections"
        ),
        "the flood never filled the table: {log}"
    );
}

/// Starts a server with `flags` on block 57, floods it with `FLOOD` silent
/// connections from `nobody`, and has root's portpicker client ask it for 60 ports
/// meanwhile, every one of which must be granted; returns the server's log once it
/// said it closes the flood's connections (`None`: skipped, not root).
fn sixty_requests_while_nobody_floods(flags: &[&str]) -> Option<String> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = ports(57);
    let pool_arg = format!("{}-{}", pool.start(), pool.end());
    let address = abstract_address(&format!("flood{}", flags.len()));
    let mut args = vec!["--verbose"];
    args.extend_from_slice(flags);
    let server = Server::start(dir.path(), &address, &pool_arg, &args);
    let env = [
        ("PORTLEASE_FLOOD_ADDRESS", address.clone()),
        ("PORTLEASE_FLOOD_COUNT", FLOOD.to_string()),
    ];
    let (child, _copy) = nobody_runs("serve_users::flood_of_silent_connections", &env)?;
    let mut flood = Reaped(child);
    let flooding = line_after(flood.0.stdout.as_mut().expect("stdout"), "FLOODING");
    assert!(
        !flooding.is_empty(),
        "the flood never held its {FLOOD} connections; log:\n{}",
        server.log()
    );

    // Root's portpicker client, while nobody floods.
    let mut client = Command::new(python());
    client
        .args(["-c", SIXTY_REQUESTS])
        .env("PORTSERVER_ADDRESS", &address);
    let outcome = run_within(client, Duration::from_secs(300));
    let stdout = outcome.success();
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(words.len(), 61, "a pid and 60 answers: {stdout}");
    let refused = words[1..].iter().filter(|w| **w == "None").count();
    assert_eq!(
        refused,
        0,
        "{refused} of 60 requests refused while another user flooded: {stdout}\nlog:\n{}",
        server.log()
    );
    let mut granted: Vec<u16> = words[1..]
        .iter()
        .map(|w| w.parse().expect("a port"))
        .collect();
    assert!(granted.iter().all(|p| pool.contains(p)), "{granted:?}");
    granted.sort_unstable();
    granted.dedup();
    assert_eq!(granted.len(), 60, "every port unique");
    assert!(
        flood.0.try_wait().expect("wait").is_none(),
        "the flood ran throughout"
    );
    Some(server.log_with("closing its oldest idle connections"))
}

#[test]
#[ignore = "the flooding user's process that `one_users_silent_connections_do_not_shut_out_another_users_requests` starts"]
fn flood_of_silent_connections() {
    if !has_serve() {
        return;
    }
    let (Ok(address), Ok(count)) = (
        std::env::var("PORTLEASE_FLOOD_ADDRESS"),
        std::env::var("PORTLEASE_FLOOD_COUNT"),
    ) else {
        return;
    };
    let count: usize = count.parse().expect("a count");
    let name = address.strip_prefix('@').expect("an abstract address");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract name");
    let mut held: Vec<(UnixStream, Instant)> = Vec::new();
    let mut announced = false;
    // Runs until the test kills it.
    loop {
        while held.len() < count {
            if let Ok(stream) = UnixStream::connect_addr(&addr) {
                held.push((stream, Instant::now()));
            }
        }
        if !announced {
            announced = true;
            println!("FLOODING {}", std::process::id());
            let _ = std::io::stdout().flush();
        }
        // Whatever the server closed is replaced at once, the rest before it times out.
        let mut fds: Vec<rustix::event::PollFd<'_>> = held
            .iter()
            .map(|(s, _)| rustix::event::PollFd::new(s, rustix::event::PollFlags::IN))
            .collect();
        let pause = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        let _ = rustix::event::poll(&mut fds, Some(&pause));
        let closed: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
        drop(fds);
        let now = Instant::now();
        let mut index = 0;
        held.retain(|(_, opened)| {
            let keep = !closed[index] && now.duration_since(*opened) < FLOOD_RENEWAL;
            index += 1;
            keep
        });
    }
}

#[test]
fn a_taken_abstract_name_names_its_holder_and_the_private_path_form() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = ports(58);
    let pool_arg = format!("{}-{}", pool.start(), pool.end());
    let address = abstract_address("squatted");
    let env = [("PORTLEASE_SQUAT_ADDRESS", address.clone())];
    let Some((child, _copy)) = nobody_runs("serve_users::squatter", &env) else {
        return;
    };
    let mut squatter = Reaped(child);
    let squatter_pid = line_after(squatter.0.stdout.as_mut().expect("stdout"), "LISTENING");
    assert!(!squatter_pid.is_empty(), "the squatter never listened");

    let run = Run::new(dir.path())
        .args(["serve", "--address", &address, "--pool", &pool_arg])
        .run();
    let stderr = run.fails(1, &format!("{address} is taken"));
    for needle in [
        &format!("pid {squatter_pid}"),
        "uid 65534",
        "first",
        "--address /",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
}

#[test]
#[ignore = "another user's process that `a_taken_abstract_name_names_its_holder_and_the_private_path_form` starts"]
fn squatter() {
    if !has_serve() {
        return;
    }
    let Ok(address) = std::env::var("PORTLEASE_SQUAT_ADDRESS") else {
        return;
    };
    let name = address.strip_prefix('@').expect("an abstract address");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract name");
    let _listener = UnixListener::bind_addr(&addr).expect("the name is free");
    println!("LISTENING {}", std::process::id());
    let _ = std::io::stdout().flush();
    // Holds the name until the test lets go.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn portpicker_reaches_a_server_on_a_private_path_socket_that_others_cannot() {
    if !has_serve() {
        return;
    }
    if !portpicker_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pool = ports(59);
    let pool_arg = format!("{}-{}", pool.start(), pool.end());
    let path = dir.path().join("run/portserver.sock");
    let address = path.to_str().expect("a UTF-8 path").to_owned();
    let server = Server::start(dir.path(), &address, &pool_arg, &[]);
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(path.parent().expect("a parent")), 0o700);
    assert_eq!(mode(&path), 0o600);

    let mut pickers = spawn_clients(PICKER, &address, 1);
    let numbers = first_lines(&mut pickers).remove(0);
    assert_eq!(numbers.len(), 4, "a pid and three ports: {numbers:?}");
    let leases: Vec<LeaseInfo> = Run::new(dir.path()).args(["list", "--json"]).run().json();
    for &port in &numbers[1..] {
        let port = u16::try_from(port).expect("a port");
        assert!(pool.contains(&port), "{port}");
        assert!(
            leases.iter().any(|l| l.port == Some(port)
                && l.pid == Some(i64::from(numbers[0]))
                && l.source.as_deref() == Some("serve")),
            "port {port} is leased to the client through the server, not guessed: \
             {leases:?}\nlog:\n{}",
            server.log()
        );
    }
    for mut picker in pickers {
        drop(picker.stdin.take());
        picker.wait().expect("the client ends");
    }

    // A directory other users may write is served, with a warning that says so.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let in_shared = shared.join("portserver.sock");
    let second = Server::start(
        dir.path(),
        in_shared.to_str().expect("a UTF-8 path"),
        &pool_arg,
        &[],
    );
    let log = second.log();
    assert!(
        log.contains("is writable by other users (mode 1777") && log.contains("only you can write"),
        "{log}"
    );
    drop(second);

    // Another user cannot even connect.
    let env = [("PORTLEASE_CONNECT_ADDRESS", address.clone())];
    if let Some((child, _copy)) = nobody_runs("serve_users::connect_attempt", &env) {
        let mut other = Reaped(child);
        let result = line_after(other.0.stdout.as_mut().expect("stdout"), "CONNECT");
        assert_eq!(result, "PermissionDenied", "another user connected");
    }
}

#[test]
#[ignore = "another user's process that `portpicker_reaches_a_server_on_a_private_path_socket_that_others_cannot` starts"]
fn connect_attempt() {
    if !has_serve() {
        return;
    }
    let Ok(address) = std::env::var("PORTLEASE_CONNECT_ADDRESS") else {
        return;
    };
    match UnixStream::connect(&address) {
        Ok(_) => println!("CONNECT connected"),
        Err(e) => println!("CONNECT {:?}", e.kind()),
    }
}

#[test]
fn a_user_over_its_share_loses_its_own_oldest_idle_connection() {
    if !has_serve() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = ports(58);
    let pool_arg = format!("{}-{}", pool.start(), pool.end());
    let address = abstract_address("share");
    let server = Server::start(
        dir.path(),
        &address,
        &pool_arg,
        &["--max-connections-per-uid", "1", "--request-timeout", "600"],
    );
    // Silent, and older than the request that follows.
    let mut silent = crate::serve::connect(&address);
    let answer = crate::serve::ask_for(&address, std::process::id());
    let port: u16 = answer
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("a port, not {answer:?}: {}", server.log()));
    assert!(pool.contains(&port));
    // A bound on a server that never closes it (a failure, not a hang).
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let mut buf = [0u8; 8];
    let read = std::io::Read::read(&mut silent, &mut buf);
    assert!(
        matches!(read, Ok(0)),
        "the silent connection was closed: {read:?}"
    );
    let log = server.log_with("closing its oldest idle");
    assert!(
        log.contains(&format!(
            "uid {} holds 1 connection(s), the most one user may (--max-connections-per-uid 1)",
            rustix::process::getuid().as_raw()
        )),
        "{log}"
    );
}

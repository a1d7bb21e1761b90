//! The smaller things a new user meets: messages that say what is true, inputs
//! written as people write them, ranges for a whole job, and tests that say why they
//! did not run.

use std::net::{TcpListener, TcpStream};
use std::path::Path;

use portlease::LeaseInfo;
use serde_json::json;

use crate::helpers::{Run, first_ports, registry, registry_json, unix_now};

#[test]
fn renew_tells_a_seed_entry_from_a_port_never_leased() {
    let (dir, _allocator) = registry();
    let ports = first_ports(109, 2);
    let (seed, never) = (*ports.start(), *ports.end());
    let entry = json!({ seed.to_string(): { "pid": std::process::id(), "timestamp": unix_now() }});
    std::fs::write(dir.path().join(portlease::REGISTRY_FILE), entry.to_string()).expect("write");
    let seed_says = Run::new(dir.path())
        .args(["renew", &seed.to_string()])
        .run()
        .fails(1, "a lease of the seed");
    assert!(!seed_says.contains("gone from the registry"), "{seed_says}");
    let never_says = Run::new(dir.path())
        .args(["renew", &never.to_string()])
        .run()
        .fails(1, &format!("port {never} is not leased"));
    assert!(
        !never_says.contains("gone from the registry"),
        "{never_says}"
    );
}

#[test]
fn host_localhost_is_accepted() {
    let (dir, _allocator) = registry();
    let range = first_ports(109, 5);
    let port = *range.end();
    let alloc = Run::new(dir.path())
        .args([
            "alloc",
            "--host",
            "localhost",
            "--range",
            &format!("{port}-{port}"),
        ])
        .run();
    assert_eq!(alloc.success().trim(), port.to_string());
    Run::new(dir.path())
        .args(["alloc", "--host", "no.such.host.invalid"])
        .run()
        .fails(2, "not an IP address");
}

#[test]
fn check_calls_a_time_wait_port_what_it_is() {
    let (dir, _allocator) = registry();
    let port = *first_ports(109, 10).end();
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (server_side, _) = listener.accept().expect("accept");
    // The side that closes first keeps the port in TIME_WAIT: make it the server's.
    drop(server_side);
    let mut buf = [0u8; 1];
    let _ = std::io::Read::read(&mut &client, &mut buf);
    drop(client);
    drop(listener);
    let time_wait = (0..200).any(|_| {
        let found = Run::new(dir.path())
            .args(["check", "--json", &port.to_string()])
            .run()
            .stdout()
            .contains("\"TIME_WAIT\"");
        if !found {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        found
    });
    assert!(time_wait, "the port went into TIME_WAIT");
    let check = Run::new(dir.path())
        .args(["check", &port.to_string()])
        .run();
    assert_eq!(check.code(), 5, "{}", check.stdout());
    let said = check.stdout();
    assert!(said.contains("TIME_WAIT"), "{said}");
    assert!(said.contains("closed connection"), "{said}");
    assert!(!said.contains("not visible"), "no process owns it: {said}");
}

#[test]
fn messages_carry_no_rust_debug_text() {
    let (dir, _allocator) = registry();
    let ports = first_ports(110, 3);
    let stale = json!({ ports.start().to_string(): {
        "pid": 999_999_999, "timestamp": unix_now(), "owner": "process", "ttl": null, "proto": "tcp"
    }});
    std::fs::write(dir.path().join(portlease::REGISTRY_FILE), stale.to_string()).expect("write");
    let range = format!("{}-{}", ports.start(), ports.end());
    let alloc = Run::new(dir.path())
        .args(["-vv", "alloc", "--count", "2", "--range", &range])
        .run();
    alloc.success();
    let said = alloc.stderr();
    assert!(said.contains("reclaimed the stale lease"), "{said}");
    assert!(said.contains("leased "), "{said}");
    for debug in ["Some(", "None", "[", "]"] {
        assert!(!said.contains(debug), "{debug:?} in: {said}");
    }
}

#[test]
fn list_shows_no_pid_for_a_lease_owned_by_no_process() {
    let (dir, _allocator) = registry();
    let port = *first_ports(110, 5).end();
    Run::new(dir.path())
        .args(["alloc", "--range", &format!("{port}-{port}")])
        .run()
        .success();
    let table = Run::new(dir.path()).args(["list"]).run().success();
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(
        (row[0], row[2], row[3]),
        (port.to_string().as_str(), "-", "none")
    );
    let leases: Vec<LeaseInfo> = Run::new(dir.path()).args(["list", "--json"]).run().json();
    assert_eq!(leases[0].pid, None);
}

#[test]
fn exec_leases_as_many_ports_as_its_command_names() {
    let (dir, _allocator) = registry();
    let range = first_ports(110, 20);
    let range = format!("{}-{}", range.start(), range.end());
    Run::new(dir.path())
        .args([
            "exec", "--count", "1", "--range", &range, "--", "echo", "{PORT2}",
        ])
        .run()
        .fails(2, "{PORT2}");
    let three = Run::new(dir.path())
        .args(["exec", "--range", &range, "--", "sh", "-c"])
        .args(["echo {PORT2} $PORTLEASE_PORTS"])
        .run();
    let said = three.success();
    let words: Vec<&str> = said.split_whitespace().collect();
    assert_eq!(words.len(), 4, "{said}");
    assert_eq!(words[0], words[3], "{{PORT2}} is the third port: {said}");
    assert!(!said.contains('{'), "{said}");
}

#[test]
fn a_negative_lock_timeout_says_so() {
    let (dir, _allocator) = registry();
    Run::new(dir.path())
        .args(["list", "--lock-timeout", "-1"])
        .run()
        .fails(2, "negative");
}

#[test]
fn usage_errors_point_to_the_subcommands_help() {
    let (dir, _allocator) = registry();
    Run::new(dir.path())
        .args(["alloc", "--bogus"])
        .run()
        .fails(2, "(see `portlease alloc --help`)");
    Run::new(dir.path())
        .args(["--bogus"])
        .run()
        .fails(2, "(see `portlease --help`)");
}

#[test]
fn a_file_given_as_the_directory_gets_a_plain_message() {
    let (dir, _allocator) = registry();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let said = Run::new(dir.path())
        .args(["list", "--dir"])
        .arg_path(&file)
        .run()
        .fails(1, "is a file, not a directory");
    assert!(!said.contains("os error"), "{said}");
}

#[test]
fn portlease_range_sets_the_ranges_of_alloc_and_exec() {
    let (dir, _allocator) = registry();
    let (a, b) = (first_ports(108, 2), first_ports(108, 60));
    let ranges = format!("{}-{},{}-{}", a.start(), a.end(), b.end(), b.end());
    let env = Path::new(&ranges);
    let alloc = Run::new(dir.path())
        .env("PORTLEASE_RANGE", env)
        .args(["alloc", "--count", "3"])
        .run();
    let ports: Vec<u16> = alloc
        .success()
        .lines()
        .map(|l| l.parse().expect("a port"))
        .collect();
    assert_eq!(ports, [*a.start(), *a.end(), *b.end()]);
    Run::new(dir.path())
        .args(["release", "--force"])
        .args(ports.iter().map(u16::to_string))
        .run()
        .success();

    let exec = Run::new(dir.path())
        .env("PORTLEASE_RANGE", env)
        .args([
            "exec",
            "--count",
            "3",
            "--",
            "sh",
            "-c",
            "echo $PORTLEASE_PORTS",
        ])
        .run();
    let mut seen: Vec<u16> = exec
        .success()
        .split_whitespace()
        .map(|p| p.parse().expect("a port"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [*a.start(), *a.end(), *b.end()]);

    let explicit = *first_ports(108, 70).end();
    let given = Run::new(dir.path())
        .env("PORTLEASE_RANGE", env)
        .args(["alloc", "--range", &format!("{explicit}-{explicit}")])
        .run();
    assert_eq!(given.success().trim(), explicit.to_string(), "--range wins");

    Run::new(dir.path())
        .env("PORTLEASE_RANGE", Path::new("20000-"))
        .args(["alloc"])
        .run()
        .fails(2, "$PORTLEASE_RANGE");
    assert_eq!(registry_json(dir.path()).len(), 1, "nothing more leased");
}

#[test]
fn a_missing_portpicker_fails_under_ci_and_is_skipped_with_the_reason_elsewhere() {
    if !crate::helpers::has_serve() {
        return;
    }
    let test = "serve::portpicker_clients_get_unique_leased_ports_until_they_exit";
    let run = |ci: &str| {
        crate::helpers::run_test_without(
            test,
            ci,
            ("PORTLEASE_TEST_PYTHON", "/nonexistent/python3"),
        )
    };
    let under_ci = run("1");
    let said = String::from_utf8_lossy(&under_ci.stdout).into_owned()
        + &String::from_utf8_lossy(&under_ci.stderr);
    assert!(!under_ci.status.success(), "passed under CI: {said}");
    assert!(said.contains("pip install portpicker"), "{said}");
    let elsewhere = run("");
    let said = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(elsewhere.status.success(), "{said}");
    assert!(
        said.contains("skipped: serve::portpicker_clients_get_unique_leased_ports_until_they_exit: the portpicker Python package"),
        "{said}"
    );
}

//! `use portlease as portpicker;`: the `portpicker` crate's functions, with ports
//! leased to the calling process, and `$PORTLEASE_RANGE` setting the default ranges.
//!
//! Each case runs in a child process of this test binary (the functions use the
//! default registry, named by `$PORTLEASE_DIR`). Ports 37400-37499 are this file's.

use std::collections::HashSet;
use std::process::{Command, Output};

use portlease as portpicker;

const RANGE: &str = "37400-37499";
/// Set in a child run of this binary: which case to play.
const ROLE: &str = "PORTLEASE_TEST_PORTPICKER_ROLE";

fn run_child(case: &str, dir: &std::path::Path, range: &str) -> Output {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([case, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, "child")
        .env("PORTLEASE_DIR", dir)
        .env("PORTLEASE_RANGE", range)
        .output()
        .expect("the test binary runs")
}

fn picked_ports(output: &Output) -> Vec<u16> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        // The harness prints "test NAME ... " before the test's own first line.
        .filter_map(|line| line.split("picked ").nth(1)?.trim().parse().ok())
        .collect()
}

#[test]
fn processes_picking_at_once_never_get_the_same_port() {
    if std::env::var_os(ROLE).is_some() {
        // The child: five ports, held until it exits; one returned and picked anew.
        let ports: Vec<u16> = (0..5)
            .map(|_| portpicker::pick_unused_port().expect("a port"))
            .collect();
        for port in &ports {
            assert!(!portpicker::is_free_tcp(*port) || portpicker::is_free(*port));
            println!("picked {port}");
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let children: Vec<std::thread::JoinHandle<Output>> = (0..8)
        .map(|_| {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                run_child(
                    "processes_picking_at_once_never_get_the_same_port",
                    &dir,
                    RANGE,
                )
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for child in children {
        for port in picked_ports(&child.join().expect("a child's output")) {
            assert!(
                (37400..=37499).contains(&port),
                "{port} from $PORTLEASE_RANGE"
            );
            assert!(seen.insert(port), "port {port} went to two processes");
        }
    }
    assert_eq!(seen.len(), 40);
}

#[test]
fn a_picked_port_is_leased_to_the_process_until_returned() {
    if std::env::var_os(ROLE).is_some() {
        let port = portpicker::pick_unused_port().expect("a port");
        let allocator = portlease::Allocator::new().expect("the default registry");
        let leases = allocator.leases().expect("the leases");
        let mine: Vec<_> = leases.iter().filter(|l| l.port == Some(port)).collect();
        assert_eq!(mine.len(), 1, "{leases:?}");
        assert_eq!(mine[0].pid, Some(i64::from(std::process::id())));
        assert!(mine[0].owned_by_process && mine[0].ttl_secs.is_none());
        assert!(
            !portpicker::return_port(port + 1),
            "never picked: left alone"
        );
        assert!(portpicker::return_port(port));
        assert!(!portpicker::return_port(port), "returned already");
        assert!(allocator.leases().expect("the leases").is_empty());
        println!("picked {port}");
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = run_child(
        "a_picked_port_is_leased_to_the_process_until_returned",
        dir.path(),
        RANGE,
    );
    assert_eq!(picked_ports(&output).len(), 1);
}

#[test]
fn a_bad_portlease_range_is_refused_saying_what_to_write() {
    if std::env::var_os(ROLE).is_some() {
        assert_eq!(portpicker::pick_unused_port(), None);
        let allocator = portlease::Allocator::new().expect("the default registry");
        let refused = allocator.allocate(&portlease::Request::new());
        match refused {
            Err(portlease::Error::InvalidRequest(message)) => {
                assert!(message.contains("$PORTLEASE_RANGE"), "{message}");
                assert!(message.contains("START-END"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A request that names its ranges does not need the variable.
        let named = portlease::Request::new().range(37400..=37499);
        assert!(allocator.allocate(&named).is_ok());
        println!("picked 1");
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = run_child(
        "a_bad_portlease_range_is_refused_saying_what_to_write",
        dir.path(),
        "37400-",
    );
    assert_eq!(picked_ports(&output), [1]);
}

#[test]
fn the_default_range_is_apart_from_the_seeds_and_the_ephemeral_range() {
    let default = portlease::DEFAULT_RANGE;
    assert!(
        *default.start() > 10999,
        "the seed's default is 10000-10999"
    );
    assert!(
        *default.end() < 32768,
        "Linux's ephemeral range starts at 32768"
    );
    if let Some(ephemeral) = portlease::probe::ephemeral_port_range() {
        assert!(default.end() < ephemeral.start() || default.start() > ephemeral.end());
    }
}

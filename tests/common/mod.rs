//! What the library's own integration tests share: temp registries, kill-on-drop
//! children, the one way to skip a test ([`required`], [`skipped`]), the worker
//! processes ([`worker_command`], [`worker_main`]) and the check that no two holds of
//! a port overlapped.
//!
//! Ports: each file has its own hundred from 37000 up, named in its `//!` doc
//! (`grep -rnE '3[789][0-9]{3}' tests src` finds every use, the doc tests' in `src/`
//! among them). The command's tests use 20000-32699, the Python package's
//! 12000-14999.

#![allow(dead_code)] // Each test binary uses its own part.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use portlease::{Allocator, Request};
use tempfile::TempDir;

mod shared;
pub use shared::*;

/// An allocator on a fresh registry in a temp dir of its own.
pub fn registry() -> (TempDir, Allocator) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    (dir, allocator)
}

/// The ports the registry holds leases on.
pub fn leased(allocator: &Allocator) -> Vec<u16> {
    let leases = allocator.leases().expect("the registry's leases");
    leases.iter().filter_map(|lease| lease.port).collect()
}

/// Nanoseconds on the system-wide monotonic clock (the one Python's
/// `time.monotonic_ns` reads), for comparing holds across processes.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let whole = u64::try_from(now.tv_sec).expect("a monotonic clock past its start");
    whole * 1_000_000_000 + u64::try_from(now.tv_nsec).expect("nanoseconds below a second")
}

/// One port held from `start` to `end` (monotonic ns) by process `by`.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    pub port: u16,
    pub start: u64,
    pub end: u64,
    /// The pid that held it, for the report of an overlap.
    pub by: u32,
}

/// Every pair of holds of one port that overlapped in time.
pub fn overlapping(holds: &[Hold]) -> Vec<(Hold, Hold)> {
    let mut by_port: HashMap<u16, Vec<Hold>> = HashMap::new();
    for hold in holds {
        by_port.entry(hold.port).or_default().push(*hold);
    }
    let mut overlaps = Vec::new();
    for holds in by_port.values_mut() {
        holds.sort_by_key(|h| h.start);
        for (i, a) in holds.iter().enumerate() {
            for b in &holds[i + 1..] {
                if b.start >= a.end {
                    break;
                }
                overlaps.push((*a, *b));
            }
        }
    }
    overlaps
}

/// Starts this test binary again as a worker process: its ignored test `worker`, which
/// calls [`worker_main`], plays `mode` on the registry in `dir` with `args`. A test
/// binary that starts workers has that test:
///
/// ```ignore
/// #[test]
/// #[ignore = "a worker process that the tests here start (common::worker_command)"]
/// fn worker() {
///     common::worker_main();
/// }
/// ```
pub fn worker_command(mode: &str, dir: &Path, args: &[String]) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([
            "worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_MODE, mode)
        .env("PORTLEASE_WORKER_DIR", dir)
        .env("PORTLEASE_WORKER_ARGS", args.join(" "))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// Names a worker's mode (see [`worker_command`]); unset in ordinary runs.
const WORKER_MODE: &str = "PORTLEASE_WORKER";

/// Asserts that no two holds of one port overlapped in time.
pub fn assert_no_overlaps(holds: &[Hold]) {
    let overlaps = overlapping(holds);
    assert!(
        overlaps.is_empty(),
        "{} overlapping holds, e.g. {:?}",
        overlaps.len(),
        overlaps.first()
    );
}

/// Parses `HOLD port start end pid` lines, as workers print them.
pub fn parse_holds(stdout: &str) -> Vec<Hold> {
    stdout
        .lines()
        // libtest may print "test worker ... " before the first line.
        .filter_map(|line| line.split_once("HOLD ").map(|(_, rest)| rest))
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            Hold {
                port: f[0].parse().expect("a port"),
                start: f[1].parse().expect("a time"),
                end: f[2].parse().expect("a time"),
                by: f[3].parse().expect("a pid"),
            }
        })
        .collect()
}

/// Waits for worker processes (their stdout piped), each of which must succeed;
/// returns all their holds. Those not yet waited for are killed if one fails.
pub fn collect_holds(children: Vec<Reaped>) -> Vec<Hold> {
    let mut holds = Vec::new();
    for mut child in children {
        let mut stdout = String::new();
        if let Some(mut out) = child.0.stdout.take() {
            std::io::Read::read_to_string(&mut out, &mut stdout).expect("the worker's stdout");
        }
        let status = child.0.wait().expect("the worker ends");
        assert!(status.success(), "a worker failed: {status:?}");
        holds.extend(parse_holds(&stdout));
    }
    holds
}

/// The worker processes the tests start (see [`worker_command`]): this test binary run
/// again with `PORTLEASE_WORKER` naming the mode, `PORTLEASE_WORKER_DIR` the registry
/// and `PORTLEASE_WORKER_ARGS` its numbers. Does nothing in an ordinary run.
pub fn worker_main() {
    let Ok(mode) = std::env::var(WORKER_MODE) else {
        return;
    };
    let dir = std::env::var("PORTLEASE_WORKER_DIR").expect("PORTLEASE_WORKER_DIR");
    let args: Vec<u64> = std::env::var("PORTLEASE_WORKER_ARGS")
        .expect("PORTLEASE_WORKER_ARGS")
        .split_whitespace()
        .map(|a| a.parse().expect("numeric worker arguments"))
        .collect();
    let port = |i: usize| u16::try_from(args[i]).expect("a port");
    let allocator = Allocator::with_dir(&dir).expect("an allocator");
    match mode.as_str() {
        // START END CYCLES HOLD_US: allocate, hold, release; print every hold.
        "cycles" => {
            let request = Request::new().range(port(0)..=port(1));
            let pid = std::process::id();
            for _ in 0..args[2] {
                let lease = allocator.allocate(&request).expect("a port");
                let start = monotonic_ns();
                std::thread::sleep(Duration::from_micros(args[3]));
                let end = monotonic_ns();
                let port = lease.port();
                lease.release().expect("release");
                println!("HOLD {port} {start} {end} {pid}");
            }
        }
        // START END CYCLES: allocate, hold, release by token, then release by token
        // again (a retry after a lost answer); print every hold.
        "token_retry" => {
            let request = Request::new().range(port(0)..=port(1));
            let pid = std::process::id();
            for _ in 0..args[2] {
                let lease = allocator.allocate(&request).expect("a port");
                let start = monotonic_ns();
                std::thread::sleep(Duration::from_micros(300));
                let end = monotonic_ns();
                let (port, token) = (lease.port(), lease.token().to_owned());
                let _ = lease.keep();
                assert_eq!(allocator.release_by_token(&token).expect("release"), [port]);
                assert!(
                    allocator
                        .release_by_token(&token)
                        .expect("retry")
                        .is_empty()
                );
                println!("HOLD {port} {start} {end} {pid}");
            }
        }
        // START END: lease a port for this process's lifetime, print it, wait.
        "hold" => {
            let request = Request::new().range(port(0)..=port(1)).ttl(None);
            let lease = allocator.allocate(&request).expect("a port");
            println!("PORT {}", lease.port());
            std::thread::sleep(Duration::from_secs(600));
        }
        // START END N: N allocations that time out (the lock is held by the test);
        // prints the threads and descriptors after the first and after the last.
        "timeouts" => {
            let allocator = allocator.lock_timeout(Duration::from_millis(20));
            let request = Request::new().range(port(0)..=port(1));
            let count = |dir: &str| std::fs::read_dir(dir).expect("/proc").count();
            let mut first = None;
            for _ in 0..args[2] {
                let error = allocator.allocate(&request).expect_err("the lock is held");
                assert!(
                    matches!(error, portlease::Error::LockTimeout { .. }),
                    "{error}"
                );
                first.get_or_insert((count("/proc/self/task"), count("/proc/self/fd")));
            }
            let (threads, fds) = first.expect("at least one attempt");
            println!("THREADS {threads} {}", count("/proc/self/task"));
            println!("FDS {fds} {}", count("/proc/self/fd"));
        }
        // START END CYCLES TIMEOUT_MS: allocations with a short lock timeout, each
        // labelled; a success is released (patiently), a timeout printed as FAILED.
        "give_up" => {
            let hasty = allocator
                .clone()
                .lock_timeout(Duration::from_millis(args[3]));
            let patient = allocator.lock_timeout(Duration::from_secs(60));
            let pid = std::process::id();
            for i in 0..args[2] {
                let label = format!("{pid}-{i}");
                let request = Request::new()
                    .range(port(0)..=port(1))
                    .owner(portlease::Owner::Nobody)
                    .label(label.clone());
                match hasty.allocate(&request) {
                    Ok(lease) => {
                        lease.keep();
                        let released = patient
                            .release_where(|info| info.label.as_deref() == Some(&label))
                            .expect("a patient release");
                        assert_eq!(released.len(), 1, "the lease of {label} was there");
                    }
                    Err(portlease::Error::LockTimeout { .. }) => println!("FAILED {label}"),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // Hold the registry lock itself, then wait.
        "lock" => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(Path::new(&dir).join(portlease::LOCK_FILE))
                .expect("the lock file");
            file.lock().expect("the lock");
            println!("LOCKED");
            std::thread::sleep(Duration::from_secs(600));
        }
        // START: the seed's two functions, on the default directory ($PORTLEASE_DIR).
        "seed_api" => {
            let port = portlease::allocate_port(None, port(0), 100, None).expect("a port");
            let leased = std::fs::read_to_string(Path::new(&dir).join(portlease::REGISTRY_FILE))
                .expect("the registry")
                .contains(&format!("\"{port}\""));
            portlease::release_port(port).expect("release");
            let left = allocator.leases().expect("leases");
            let state = if leased && left.is_empty() {
                "released"
            } else {
                "wrong"
            };
            println!("SEED {port} {state}");
        }
        other => panic!("unknown worker mode {other}"),
    }
}

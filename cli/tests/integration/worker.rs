//! The worker processes other tests start: this test binary run again with
//! `PORTLEASE_WORKER` set (see `helpers::worker`). Ignored in ordinary runs.

#![expect(
    clippy::cast_possible_truncation,
    reason = "the numeric arguments are ports the test itself wrote"
)]

use std::time::Duration;

use portlease::{Allocator, Request};

use crate::helpers::monotonic_ns;

#[test]
#[ignore = "a worker process that other tests start"]
fn worker() {
    let mode = std::env::var("PORTLEASE_WORKER").expect("PORTLEASE_WORKER names the mode");
    let dir = std::env::var("PORTLEASE_WORKER_DIR").expect("PORTLEASE_WORKER_DIR");
    let args: Vec<u64> = std::env::var("PORTLEASE_WORKER_ARGS")
        .expect("PORTLEASE_WORKER_ARGS")
        .split_whitespace()
        .map(|a| a.parse().expect("numeric worker arguments"))
        .collect();
    let allocator = Allocator::with_dir(&dir).expect("an allocator");
    match mode.as_str() {
        // START END CYCLES HOLD_US: allocate, hold, release; print every hold.
        "cycles" => {
            let request = Request::new().range(args[0] as u16..=args[1] as u16);
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
        // START END: lease a port for this process's lifetime, print it, wait.
        "hold" => {
            let request = Request::new()
                .range(args[0] as u16..=args[1] as u16)
                .ttl(None);
            let lease = allocator.allocate(&request).expect("a port");
            println!("PORT {}", lease.port());
            std::thread::sleep(Duration::from_secs(600));
        }
        // START END N: N allocations that time out (the lock is held by the test);
        // prints the threads and descriptors after the first and after the last.
        "timeouts" => {
            let allocator = allocator.lock_timeout(Duration::from_millis(20));
            let request = Request::new().range(args[0] as u16..=args[1] as u16);
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
        // Hold the registry lock itself, then wait.
        "lock" => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(std::path::Path::new(&dir).join(portlease::LOCK_FILE))
                .expect("the lock file");
            file.lock().expect("the lock");
            println!("LOCKED");
            std::thread::sleep(Duration::from_secs(600));
        }
        // START: the seed's two functions, on the default directory ($PORTLEASE_DIR).
        "seed_api" => {
            let port = portlease::allocate_port(None, args[0] as u16, 100, None).expect("a port");
            let leased =
                std::fs::read_to_string(std::path::Path::new(&dir).join(portlease::REGISTRY_FILE))
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

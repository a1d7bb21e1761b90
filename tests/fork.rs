//! A child forked without exec never keeps the registry locked: not after its parent
//! gave up waiting, not after its parent died holding the lock, not while its parent
//! runs transactions on other threads.
//!
//! Ports 38200-38289 (38290-38299 are a doc test's, in `src/lease.rs`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portlease::{Allocator, Error, LOCK_FILE, Request};

const RANGE: std::ops::RangeInclusive<u16> = 38200..=38289;

/// Set in a re-run of this test binary that plays a busy process forking a worker.
const BUSY_ROLE: &str = "PORTLEASE_TEST_FORK_BUSY_DIR";

/// A child forked from this (multi-threaded) test process that only waits to be
/// killed: async-signal-safe calls alone, as a child of a threaded parent may make.
struct ForkedChild(libc::pid_t);

impl ForkedChild {
    fn start() -> ForkedChild {
        // SAFETY: the child calls only `pause` and `_exit`, both async-signal-safe.
        match unsafe { libc::fork() } {
            0 => loop {
                // SAFETY: pause is async-signal-safe and touches no memory.
                unsafe { libc::pause() };
            },
            -1 => panic!("fork failed: {}", std::io::Error::last_os_error()),
            pid => ForkedChild(pid),
        }
    }
}

impl Drop for ForkedChild {
    fn drop(&mut self) {
        // SAFETY: kill and waitpid on the child this test forked.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// Kills a process when dropped (and reaps it).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `flock(1)` holding the lock of `dir` until killed (one process: `--no-fork`);
/// returns once it holds it.
fn hold_lock(dir: &Path) -> Reaped {
    let mut holder = Reaped(
        Command::new("flock")
            .arg("--no-fork")
            .arg(dir.join(LOCK_FILE))
            .args(["-c", "echo locked; exec sleep 600"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock(1) runs"),
    );
    let mut line = String::new();
    BufReader::new(holder.0.stdout.take().expect("its stdout"))
        .read_line(&mut line)
        .expect("a line from flock");
    assert_eq!(line.trim(), "locked");
    holder
}

/// Whether another process gets the lock of `dir` within `secs` seconds.
fn another_process_gets_the_lock(dir: &Path, secs: u32) -> bool {
    Command::new("flock")
        .args(["-w", &secs.to_string()])
        .arg(dir.join(LOCK_FILE))
        .arg("true")
        .status()
        .expect("flock(1) runs")
        .success()
}

#[test]
fn a_child_forked_after_a_timed_out_wait_never_keeps_the_lock() {
    let (dir, allocator) = common::registry();
    let allocator = allocator.lock_timeout(Duration::from_millis(200));
    allocator
        .gc()
        .expect("the registry exists, with its lock file");
    let holder = hold_lock(dir.path());
    // The wait times out; the library's waiting thread goes on waiting on the lock.
    let timed_out = allocator.allocate(&Request::new().range(RANGE));
    assert!(
        matches!(timed_out, Err(Error::LockTimeout { .. })),
        "{timed_out:?}"
    );

    let child = ForkedChild::start();
    // The lock comes free: the waiting thread takes it for nobody and lets go of it.
    drop(holder);
    assert!(
        another_process_gets_the_lock(dir.path(), 10),
        "the forked child kept the lock its parent's waiting thread let go of"
    );
    drop(child);
    // And the parent goes on working.
    let lease = allocator
        .allocate(&Request::new().range(RANGE))
        .expect("a lease");
    assert!(RANGE.contains(&lease.port()));
}

#[test]
fn a_child_forked_while_its_parent_holds_the_lock_lets_go_when_the_parent_dies() {
    if let Some(dir) = std::env::var_os(BUSY_ROLE) {
        busy_process_with_a_forked_worker(Path::new(&dir));
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    // A kill storm: each round a busy process forks a worker, and dies mid-transaction.
    for round in 0..8 {
        let mut busy = Reaped(
            Command::new(std::env::current_exe().expect("the test binary"))
                .args([
                    "a_child_forked_while_its_parent_holds_the_lock_lets_go_when_the_parent_dies",
                    "--exact",
                    "--nocapture",
                ])
                .env(BUSY_ROLE, dir.path())
                .stdout(Stdio::piped())
                .spawn()
                .expect("the test binary runs"),
        );
        let mut lines = BufReader::new(busy.0.stdout.take().expect("its stdout")).lines();
        let worker: libc::pid_t = loop {
            let line = lines.next().expect("a worker's pid").expect("a line");
            if let Some(pid) = line.strip_prefix("worker ") {
                break pid.parse().expect("a pid");
            }
        };
        let worker = ForkedChild(worker);
        // Let it run transactions for a while, then kill it wherever it is.
        std::thread::sleep(Duration::from_millis(50 + 20 * round));
        drop(busy);
        let free = another_process_gets_the_lock(dir.path(), 10);
        // Killed and reaped by us: it is the busy process's child, now ours to end.
        drop(worker);
        assert!(
            free,
            "round {round}: the forked worker kept the dead parent's lock"
        );
    }
}

/// The busy process: transactions on a thread without end, and a forked worker that
/// outlives it (its pid printed). Never returns.
fn busy_process_with_a_forked_worker(dir: &Path) -> ! {
    let allocator = Allocator::with_dir(dir).expect("an allocator");
    let busy = std::thread::spawn(move || {
        loop {
            let lease = allocator
                .allocate(&Request::new().range(RANGE))
                .expect("a lease");
            drop(lease);
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    // SAFETY: the child calls only `pause`, async-signal-safe.
    match unsafe { libc::fork() } {
        0 => loop {
            // SAFETY: pause is async-signal-safe and touches no memory.
            unsafe { libc::pause() };
        },
        -1 => panic!("fork failed"),
        pid => println!("worker {pid}"),
    }
    let _ = busy.join();
    std::process::exit(1)
}

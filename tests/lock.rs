//! The lock timeout: while another process holds the lock, a waiter gives up in time
//! with an error that names the directory, a lock file deleted and made anew is the
//! one waited on, and timed-out waits leave no threads or descriptors behind; once the
//! holder is gone, work goes on.
//!
//! Ports 39400-39499 are this file's.

mod common;

use std::time::Duration;

use portlease::{Error, Request};

use common::{registry, start_worker_until, worker_command};

#[test]
#[ignore = "a worker process that the tests here start (common::worker_command)"]
fn worker() {
    common::worker_main();
}

#[test]
fn a_held_lock_times_out_with_an_error_naming_the_directory() {
    let (dir, allocator) = registry();
    let allocator = allocator.lock_timeout(Duration::from_millis(300));
    let (mut holder, _) = start_worker_until(worker_command("lock", dir.path(), &[]), "LOCKED");
    let request = Request::new().range(39400..=39400);

    let error = allocator.allocate(&request).expect_err("the lock is held");
    match &error {
        Error::LockTimeout { dir: named, waited } => {
            assert_eq!(named, dir.path());
            assert!(*waited >= Duration::from_millis(300), "{waited:?}");
        }
        other => panic!("expected a lock timeout, got {other}"),
    }
    assert!(
        error
            .to_string()
            .contains(&dir.path().display().to_string()),
        "{error}"
    );

    holder.0.kill().expect("SIGKILL");
    holder.0.wait().expect("reap");
    let lease = allocator
        .lock_timeout(Duration::from_secs(30))
        .allocate(&request)
        .expect("the lock is free");
    assert_eq!(lease.port(), 39400);
}

#[test]
fn a_deleted_lock_file_is_not_locked_alone() {
    let (dir, allocator) = registry();
    let allocator = allocator.lock_timeout(Duration::from_millis(300));
    let request = Request::new().range(39410..=39410);
    drop(
        allocator
            .allocate(&request)
            .expect("a port: the lock file is open now"),
    );
    // Someone cleans the directory up; another process creates the lock file anew.
    std::fs::remove_file(dir.path().join(portlease::LOCK_FILE)).expect("rm");
    let (mut holder, _) = start_worker_until(worker_command("lock", dir.path(), &[]), "LOCKED");
    let error = allocator
        .allocate(&request)
        .expect_err("the new lock file is held");
    assert!(matches!(error, Error::LockTimeout { .. }), "{error}");
    holder.0.kill().expect("SIGKILL");
    holder.0.wait().expect("reap");
}

#[test]
fn timed_out_waits_keep_one_waiting_thread_and_no_descriptors() {
    let (dir, _) = registry();
    let range = 39420..=39429;
    let (mut holder, _) = start_worker_until(worker_command("lock", dir.path(), &[]), "LOCKED");
    let args = [
        range.start().to_string(),
        range.end().to_string(),
        "25".into(),
    ];
    let output = worker_command("timeouts", dir.path(), &args)
        .output()
        .expect("the worker runs");
    holder.0.kill().expect("SIGKILL");
    holder.0.wait().expect("reap");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let after = |what: &str| -> (usize, usize) {
        let line = stdout
            .lines()
            .find_map(|line| line.split_once(what).map(|(_, rest)| rest.to_owned()))
            .unwrap_or_else(|| panic!("no {what} line in {stdout}"));
        let mut numbers = line.split_whitespace().map(|n| n.parse().expect("a count"));
        (
            numbers.next().expect("first"),
            numbers.next().expect("last"),
        )
    };
    let (threads_first, threads_last) = after("THREADS ");
    let (fds_first, fds_last) = after("FDS ");
    assert_eq!(
        threads_last, threads_first,
        "24 more timeouts, no more threads"
    );
    assert_eq!(fds_last, fds_first, "24 more timeouts, no more descriptors");
}

//! `interrupt::with_check`: a call that waits for the registry lock consults the
//! caller's check while it waits, gives up with `Error::Interrupted` when it says stop,
//! and leaves nothing leased.
//!
//! Ports 38300-38399.

mod common;

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::ops::RangeInclusive;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use portlease::{Allocator, Error, LOCK_FILE, Request, interrupt};

use common::{leased, registry};

const PORTS: RangeInclusive<u16> = 38300..=38309;

/// The registry lock, held through a descriptor of its own (as another process would).
fn hold_lock(dir: &Path) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .expect("the lock file");
    file.lock().expect("the lock");
    file
}

/// Runs `work` with a check that counts its calls and says stop at the `stop_at`th.
fn counting<T>(stop_at: u32, work: impl FnOnce() -> T) -> (T, u32) {
    let calls = Rc::new(Cell::new(0));
    let counted = Rc::clone(&calls);
    let result = interrupt::with_check(
        move || {
            counted.set(counted.get() + 1);
            counted.get() >= stop_at
        },
        work,
    );
    (result, calls.get())
}

fn assert_interrupted<T: std::fmt::Debug>(result: portlease::Result<T>, dir: &Path) {
    match result {
        Err(Error::Interrupted { path }) => {
            assert_eq!(path, dir.join(LOCK_FILE));
            let message = Error::Interrupted { path }.to_string();
            assert!(message.contains("nothing was leased"), "{message}");
        }
        other => panic!("expected Interrupted, got {other:?}"),
    }
}

fn waiting(dir: &Path) -> Allocator {
    Allocator::with_dir(dir)
        .expect("an allocator")
        .lock_timeout(Duration::from_secs(600))
}

#[test]
fn an_allocation_waiting_for_the_lock_stops_when_the_check_says_so() {
    let (dir, allocator) = registry();
    assert!(leased(&allocator).is_empty()); // the lock file exists from here on
    let held = hold_lock(dir.path());
    let (result, calls) = counting(3, || {
        waiting(dir.path()).allocate(&Request::new().range(PORTS))
    });
    assert_eq!(calls, 3, "consulted while it waited, until it said stop");
    assert_interrupted(result, dir.path());
    drop(held);
    assert!(leased(&allocator).is_empty(), "nothing leased behind");
}

#[test]
fn a_transaction_waiting_for_the_lock_stops_when_the_check_says_so() {
    let (dir, allocator) = registry();
    let lease = allocator
        .allocate(&Request::new().range(PORTS))
        .expect("a port");
    let held = hold_lock(dir.path());
    let waiter = waiting(dir.path());
    let (result, calls) = counting(2, || waiter.renew(lease.port(), None));
    assert_eq!(calls, 2);
    assert_interrupted(result, dir.path());
    let (result, _) = counting(1, || waiter.leases());
    assert_interrupted(result, dir.path());
    drop(held);
    assert_eq!(leased(&allocator), [lease.port()]);
    lease.release().expect("released");
}

#[test]
fn a_call_that_does_not_wait_never_consults_the_check() {
    let (_dir, allocator) = registry();
    let (result, calls) = counting(1, || {
        let lease = allocator.allocate(&Request::new().range(PORTS))?;
        allocator.leases()?;
        lease.release()
    });
    result.expect("done without waiting");
    assert_eq!(calls, 0);
    assert!(leased(&allocator).is_empty());
}

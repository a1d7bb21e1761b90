//! `Owner::Running`: a lease for a process the caller has already looked up lasts as
//! long as that very process, as one for `Owner::Process` does.
//!
//! Ports 37100-37199 are this file's.

mod common;

use std::process::Command;

use portlease::{Owner, ProcessId, Request};

use common::registry;

#[test]
fn a_lease_for_a_process_looked_up_ends_with_it() {
    let pool = 37100..=37101;
    let (_dir, allocator) = registry();
    let mut child = Command::new("sleep").arg("60").spawn().expect("sleep runs");
    let owner = ProcessId::of_running(child.id()).expect("the child runs");
    let request = Request::new().range(pool.clone());
    let results = allocator
        .allocate_each(&[request.clone().owner(Owner::Running(owner))])
        .expect("a transaction");
    let port = results
        .into_iter()
        .next()
        .expect("one result")
        .expect("a lease")
        .keep()[0];
    let leases = allocator.leases().expect("the leases");
    let lease = leases
        .iter()
        .find(|l| l.port == Some(port))
        .expect("the lease listed");
    assert_eq!(lease.pid, Some(i64::from(child.id())));
    assert_eq!(lease.owner_alive, Some(true));
    assert!(!lease.stale);
    assert_eq!(lease.ttl_secs, None, "a process's lease has no TTL");

    let _ = child.kill();
    let _ = child.wait();
    let ended = allocator.gc().expect("a sweep");
    assert!(
        ended.iter().any(|l| l.port == Some(port)),
        "the lease ended with its owner: {ended:?}"
    );
}

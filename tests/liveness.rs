//! Leases end with their owner: a killed process (even before it is reaped), a
//! reused pid, a passed TTL, another process the lease was for; and the library's
//! default lease lasts while its process runs.
//!
//! Ports 38900-38999 are this file's.

mod common;

use std::time::Duration;

use portlease::platform::PROCESS_IDENTITY;
use portlease::{Error, Owner, ProcessId, Request};
use serde_json::json;

use common::{
    Reaped, platform_has, registry, registry_json, start_worker_until, unix_now, worker_command,
};

#[test]
#[ignore = "a worker process that the tests here start (common::worker_command)"]
fn worker() {
    common::worker_main();
}

#[test]
fn a_killed_owners_lease_goes_to_the_next_allocation() {
    let (dir, allocator) = registry();
    let range = 38900..=38900;
    let args = [range.start().to_string(), range.end().to_string()];
    let (mut holder, port) = start_worker_until(worker_command("hold", dir.path(), &args), "PORT ");
    let port: u16 = port.parse().expect("a port number");
    let one_port = Request::new().range(range.clone());
    assert!(
        matches!(allocator.allocate(&one_port), Err(Error::Exhausted { .. })),
        "held while it lives"
    );

    holder.0.kill().expect("SIGKILL");
    if PROCESS_IDENTITY {
        // Not reaped yet: a zombie holds no sockets and counts as gone.
        wait_without_reaping(holder.0.id());
    } else {
        // A zombie's pid still answers `kill(pid, 0)`: it is gone once reaped.
        holder.0.wait().expect("reap");
    }
    let lease = allocator
        .allocate(&one_port)
        .expect("the dead owner's port");
    assert_eq!(lease.port(), port);
    let entry = &registry_json(dir.path())[&port.to_string()];
    assert_eq!(
        entry["pid"],
        std::process::id(),
        "the lease is ours now: {entry}"
    );
    holder.0.wait().expect("reap");
}

#[test]
fn a_reused_pid_does_not_keep_a_lease_alive() {
    if !platform_has(PROCESS_IDENTITY, "owner identity beyond the pid") {
        return;
    }
    let (dir, allocator) = registry();
    let port = 38910;
    let me = ProcessId::current();
    let start_time = me.start_time.expect("Linux tells start times");
    let entry = |start: u64| {
        json!({ port.to_string(): {
            "pid": me.pid, "timestamp": unix_now(), "owner": "process",
            "start_time": start, "ttl": null, "proto": "tcp",
        }})
    };
    let one_port = Request::new().range(port..=port);

    std::fs::write(
        dir.path().join("port_registry.json"),
        entry(start_time).to_string(),
    )
    .expect("write");
    assert!(
        matches!(allocator.allocate(&one_port), Err(Error::Exhausted { .. })),
        "the true owner keeps it"
    );

    // The same pid, another start time: another process that got the pid later.
    std::fs::write(
        dir.path().join("port_registry.json"),
        entry(start_time + 1).to_string(),
    )
    .expect("write");
    let lease = allocator
        .allocate(&one_port)
        .expect("the stale lease is reclaimed");
    assert_eq!(lease.port(), port);
}

#[test]
fn a_lease_with_no_owner_ends_with_its_ttl() {
    let (_dir, allocator) = registry();
    let range = 38920..=38920;
    let request = Request::new()
        .range(range.clone())
        .owner(Owner::Nobody)
        .ttl(Some(Duration::from_millis(300)));
    let port = allocator.allocate(&request).expect("a port").keep()[0];
    assert!(matches!(
        allocator.allocate(&request),
        Err(Error::Exhausted { .. })
    ));
    std::thread::sleep(Duration::from_millis(400));
    let stale = allocator.leases().expect("leases");
    assert!(stale[0].stale, "{stale:?}");
    let reclaimed = allocator.gc().expect("gc");
    assert_eq!(
        reclaimed.iter().map(|l| l.port).collect::<Vec<_>>(),
        [Some(port)]
    );
    assert!(allocator.leases().expect("leases").is_empty());
}

#[test]
fn a_lease_for_another_process_ends_with_it() {
    let (_dir, allocator) = registry();
    let range = 38930..=38930;
    let mut child = Reaped(
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("sleep"),
    );
    let request = Request::new()
        .range(range.clone())
        .owner(Owner::Process(child.0.id()))
        .ttl(None);
    let port = allocator.allocate(&request).expect("a port").keep()[0];
    let leases = allocator.leases().expect("leases");
    assert_eq!(
        (leases[0].pid, leases[0].owner_alive),
        (Some(child.0.id().into()), Some(true))
    );
    assert!(matches!(
        allocator.allocate(&Request::new().range(range.clone())),
        Err(Error::Exhausted { .. })
    ));
    child.0.kill().expect("kill");
    child.0.wait().expect("reap");
    assert_eq!(
        allocator
            .allocate(&Request::new().range(range))
            .expect("reclaimed")
            .port(),
        port
    );

    let gone = Request::new().owner(Owner::Process(child.0.id()));
    assert!(matches!(
        allocator.allocate(&gone),
        Err(Error::NoSuchProcess { .. })
    ));
}

#[test]
fn the_default_library_lease_lasts_while_its_process_runs() {
    let (dir, allocator) = registry();
    let port = 38940;
    let lease = allocator
        .allocate(&Request::new().range(port..=port))
        .expect("a port");
    let info = &allocator.leases().expect("leases")[0];
    assert!(info.owned_by_process);
    assert_eq!(info.pid, Some(std::process::id().into()));
    assert_eq!(
        info.ttl_secs, None,
        "no TTL: it lasts while this process runs"
    );
    let stamp = registry_json(dir.path())[&port.to_string()]["timestamp"]
        .as_f64()
        .expect("a timestamp");
    assert!(
        stamp > unix_now() + 12.0 * 3600.0,
        "the seed is told to leave it alone for a day"
    );
    drop(lease);
}

/// Waits until the process has exited, leaving it a zombie.
fn wait_without_reaping(pid: u32) {
    // SAFETY: an all-zero siginfo_t is a valid value of that plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid fills `info`, a valid siginfo_t; WNOWAIT leaves the child unreaped.
    let done = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
    assert_eq!(done, 0, "waitid: {}", std::io::Error::last_os_error());
}

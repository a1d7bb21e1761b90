//! Living with the seed: its entries are honoured as it honours them (300 s), a live
//! lease it would take for its own is moved ahead when met, its processes and
//! portlease's share one registry without ever sharing a port, and the seed's two
//! functions (`allocate_port`, `release_port`) work on the default directory.
//!
//! The seed's own copy is found by `common::seed_module`; where it is missing, the
//! test that runs it is skipped (under `PORTLEASE_REQUIRE_PEERS=1`, failed).
//!
//! Ports 39800-39999 are this file's.

mod common;

use std::process::{Command, Stdio};

use portlease::platform::PROCESS_IDENTITY;
use portlease::{EntryKind, Error, Request};
use serde_json::json;

use common::{
    Reaped, assert_no_overlaps, collect_holds, platform_has, python, registry, registry_json,
    seed_module, unix_now, worker_command,
};

#[test]
#[ignore = "a worker process that the tests here start (common::worker_command)"]
fn worker() {
    common::worker_main();
}

#[test]
fn a_seed_entry_is_honoured_for_300_seconds_then_reclaimed() {
    let (dir, allocator) = registry();
    let port = 39800;
    let one_port = Request::new().range(port..=port);
    // A pid that cannot exist: the seed judges by timestamp alone, and so do we.
    let write = |age: f64| {
        let entry = json!({ port.to_string(): { "pid": 999_999_999, "timestamp": unix_now() - age, "note": "kept" }});
        std::fs::write(dir.path().join("port_registry.json"), entry.to_string()).expect("write");
    };

    write(290.0);
    assert!(matches!(
        allocator.allocate(&one_port),
        Err(Error::Exhausted { .. })
    ));
    let listed = allocator.leases().expect("leases");
    assert_eq!((listed[0].kind, listed[0].stale), (EntryKind::Seed, false));
    assert_eq!(
        registry_json(dir.path())[&port.to_string()]["note"],
        "kept",
        "a failed allocation writes nothing"
    );

    write(310.0);
    let lease = allocator
        .allocate(&one_port)
        .expect("the expired seed entry is reclaimed");
    assert_eq!(lease.port(), port);
}

const SEED_WORKER: &str = r#"
import os, sys, time, pathlib
sys.path.insert(0, sys.argv[1])
import port_allocator as seed
a = seed.CrossProcessPortAllocator(registry_dir=pathlib.Path(sys.argv[2]))
start, size, cycles = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
for _ in range(cycles):
    p = a.allocate(range_start=start, range_size=size)
    t0 = time.monotonic_ns()
    time.sleep(0.001)
    t1 = time.monotonic_ns()
    a.release(p)
    print(f"HOLD {p} {t0} {t1} {os.getpid()}", flush=True)
"#;

#[test]
fn the_seed_and_portlease_never_hold_one_port_at_once() {
    let Some(seed) = seed_module() else {
        return;
    };
    let (dir, _allocator) = registry();
    let range = 39810..=39815;
    let (start, end) = (range.start().to_string(), range.end().to_string());
    let seed_dir = seed.parent().expect("the seed's directory").to_owned();
    let mut children = Vec::new();
    for _ in 0..3 {
        let python = Command::new(python())
            .args(["-c", SEED_WORKER])
            .arg(&seed_dir)
            .arg(dir.path())
            .args([start.as_str(), "6", "40"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        children.push(Reaped(python));
        let args = [start.clone(), end.clone(), "150".into(), "1000".into()];
        children.push(Reaped(
            worker_command("cycles", dir.path(), &args)
                .spawn()
                .expect("a worker"),
        ));
    }
    let holds = collect_holds(children);
    assert_eq!(
        holds.len(),
        3 * 40 + 3 * 150,
        "every cycle recorded its hold"
    );
    assert_no_overlaps(&holds);
    assert!(
        registry_json(dir.path()).is_empty(),
        "every lease was released"
    );
}

#[test]
fn a_live_lease_stamped_the_old_way_is_moved_ahead_when_met() {
    let (dir, allocator) = registry();
    let ports = 39820..=39822;
    let port = *ports.end();
    if !platform_has(PROCESS_IDENTITY, "owner start times") {
        return;
    }
    let start_time = portlease::ProcessId::current()
        .start_time
        .expect("this process's start time");
    // As portlease wrote it before: stamped at allocation, which the seed reclaims
    // 300 s later.
    let now = unix_now();
    let entry = json!({ port.to_string(): {
        "pid": std::process::id(), "timestamp": now, "owner": "process",
        "start_time": start_time, "ttl": null, "proto": "tcp"
    }});
    std::fs::write(dir.path().join("port_registry.json"), entry.to_string()).expect("write");
    let other = allocator
        .allocate(&Request::new().range(port - 1..=port))
        .expect("another port");
    assert_eq!(other.port(), port - 1);
    let stamp = registry_json(dir.path())[&port.to_string()]["timestamp"]
        .as_f64()
        .expect("a timestamp");
    assert!(stamp > now + 12.0 * 3600.0, "moved a day ahead: {stamp}");
}

#[test]
fn the_seeds_functions_work_on_the_default_directory() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = 39900..=39999;
    let output = worker_command("seed_api", dir.path(), &[range.start().to_string()])
        .env("PORTLEASE_DIR", dir.path())
        .output()
        .expect("a worker");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("SEED ").map(|(_, rest)| rest))
        .expect("the worker's report");
    let [leased, after]: [&str; 2] = line
        .split(' ')
        .collect::<Vec<_>>()
        .try_into()
        .expect("two fields");
    assert!(range.contains(&leased.parse().expect("a port")));
    assert_eq!(after, "released");
}

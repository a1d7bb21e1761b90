//! Living with the seed: its entries are honoured as it honours them, its own
//! processes and portlease's share one registry without ever sharing a port, and what
//! portlease rewrites (a NaN timestamp) the seed still reads.

use std::process::{Command, Stdio};
use std::time::Duration;

use portlease::{EntryKind, Error, Request};
use serde_json::json;

use crate::helpers::{
    Run, assert_no_overlaps, collect_holds, first_ports, portlease_in, ports, python, registry,
    registry_json, run_within, seed_module, unix_now, worker,
};

#[test]
fn a_seed_entry_is_honoured_for_300_seconds_then_reclaimed() {
    let (dir, allocator) = registry();
    let port = *first_ports(6, 1).start();
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
    let range = first_ports(7, 6);
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
        children.push(python);
        let args = [start.clone(), end.clone(), "150".into(), "1000".into()];
        children.push(
            worker("cycles", dir.path(), &args)
                .spawn()
                .expect("a worker"),
        );
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

/// The seed's `allocate`, of one port, with its clock `ahead` seconds in the future:
/// prints the port it took, or "refused".
const SEED_AHEAD: &str = r#"
import sys, time, pathlib
sys.path.insert(0, sys.argv[1])
import port_allocator as seed
real, ahead = time.time, float(sys.argv[4])
time.time = lambda: real() + ahead
a = seed.CrossProcessPortAllocator(registry_dir=pathlib.Path(sys.argv[2]))
port = int(sys.argv[3])
try:
    print(a.allocate(range_start=port, range_size=1))
except RuntimeError:
    print("refused")
"#;

/// Runs the seed on `port` with its clock `ahead` seconds on; true if it took it.
fn seed_takes(seed: &std::path::Path, dir: &std::path::Path, port: u16, ahead: f64) -> bool {
    let output = Command::new(python())
        .args(["-c", SEED_AHEAD])
        .arg(seed.parent().expect("the seed's directory"))
        .arg(dir)
        .args([port.to_string(), ahead.to_string()])
        .output()
        .expect("python3 runs");
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success(),
        "the seed failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    match answer.as_str() {
        "refused" => false,
        taken if taken == port.to_string() => true,
        other => panic!("the seed answered {other:?}"),
    }
}

/// Twelve hours: far past the seed's 300 s, as when no portlease process runs for hours.
const HOURS_LATER: f64 = 12.0 * 3600.0;

#[test]
fn the_seed_leaves_a_live_process_lease_alone_for_hours() {
    let Some(seed) = seed_module() else {
        return;
    };
    let (dir, _allocator) = registry();
    let port = *first_ports(101, 1).start();
    let mut owner = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep runs");
    let range = format!("{port}-{port}");
    let pid = owner.id().to_string();
    Run::new(dir.path())
        .args(["alloc", "--range", &range, "--owner-pid", &pid])
        .run()
        .success();
    let taken = seed_takes(&seed, dir.path(), port, HOURS_LATER);
    let _ = owner.kill();
    let _ = owner.wait();
    assert!(!taken, "the seed took a port whose owner runs");
    assert_eq!(
        registry_json(dir.path())[&port.to_string()]["owner"],
        "process",
        "the lease is still there"
    );
}

#[test]
fn the_seed_takes_a_dead_owners_port_once_portlease_has_met_the_lease() {
    let Some(seed) = seed_module() else {
        return;
    };
    let (dir, _allocator) = registry();
    let port = *first_ports(102, 1).start();
    let mut owner = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep runs");
    let pid = owner.id().to_string();
    Run::new(dir.path())
        .args([
            "alloc",
            "--range",
            &format!("{port}-{port}"),
            "--owner-pid",
            &pid,
        ])
        .run()
        .success();
    owner.kill().expect("kill");
    owner.wait().expect("reaped");
    // Any portlease user's allocation sweeps the registry and meets the dead lease.
    let other = port + 1;
    Run::new(dir.path())
        .args(["alloc", "--range", &format!("{other}-{other}")])
        .run()
        .success();
    assert!(
        seed_takes(&seed, dir.path(), port, HOURS_LATER),
        "the seed may take a port whose owner is gone"
    );
}

#[test]
fn the_seed_honours_a_ttl_lease_until_a_day_past_its_end() {
    let Some(seed) = seed_module() else {
        return;
    };
    let (dir, _allocator) = registry();
    let port = *first_ports(103, 1).start();
    Run::new(dir.path())
        .args([
            "alloc",
            "--range",
            &format!("{port}-{port}"),
            "--ttl",
            "900",
        ])
        .run()
        .success();
    // 20 s either side of the end, and of a day past it: far more than the test's
    // own steps take. The day is for a writer whose clock is behind the seed's.
    assert!(
        !seed_takes(&seed, dir.path(), port, 880.0),
        "the seed took a TTL lease before its end"
    );
    assert!(
        !seed_takes(&seed, dir.path(), port, 920.0),
        "the seed took a TTL lease that a writer a minute behind still holds"
    );
    assert!(
        !seed_takes(&seed, dir.path(), port, 86_400.0 + 880.0),
        "the seed took a TTL lease before a day past its end"
    );
    assert!(
        seed_takes(&seed, dir.path(), port, 86_400.0 + 920.0),
        "the seed keeps out of a TTL lease a day after its end"
    );
}

#[test]
fn a_missing_seed_copy_fails_under_ci_and_is_skipped_with_the_reason_elsewhere() {
    let test = "seed::the_seed_honours_a_ttl_lease_until_a_day_past_its_end";
    let run = |ci: &str| {
        crate::helpers::run_test_without(test, ci, ("PORTLEASE_TEST_SEED_DIR", "/nonexistent/seed"))
    };
    let under_ci = run("1");
    let said = String::from_utf8_lossy(&under_ci.stdout).into_owned()
        + &String::from_utf8_lossy(&under_ci.stderr);
    assert!(!under_ci.status.success(), "passed under CI: {said}");
    assert!(
        said.contains("port_allocator.py in ../shared/seed"),
        "{said}"
    );
    let elsewhere = run("");
    let said = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(elsewhere.status.success(), "{said}");
    assert!(said.contains("skipped: the seed's copy"), "{said}");
}

#[test]
fn a_live_lease_stamped_the_old_way_is_moved_ahead_when_met() {
    let (dir, allocator) = registry();
    let ports = first_ports(101, 3);
    let port = *ports.end();
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
fn the_seed_still_allocates_after_portlease_rewrote_its_nan_timestamp() {
    // What Python's json module writes for an entry whose timestamp is NaN: the seed
    // holds it for ever (`now - nan > 300` is false) and reads the file fine.
    let dir = tempfile::tempdir().expect("a temp dir");
    portlease::Allocator::with_dir(dir.path()).expect("an allocator");
    let first = *ports(86).start();
    let text = format!("{{\n  \"{first}\": {{\n    \"pid\": 1,\n    \"timestamp\": NaN\n  }}\n}}");
    std::fs::write(dir.path().join(portlease::REGISTRY_FILE), text).expect("write");
    let range = format!("{}-{}", first, first + 9);
    let args = ["alloc", "--range", &range, "--lock-timeout", "5"];
    let outcome = run_within(portlease_in(dir.path(), &args), Duration::from_secs(60));
    assert_ne!(
        outcome.success().trim(),
        first.to_string(),
        "held by the NaN entry"
    );
    let entry = &registry_json(dir.path())[&first.to_string()];
    assert!(
        entry["timestamp"].is_f64(),
        "the seed computes `now - timestamp`, which fails on anything but a number: {entry}"
    );
    let Some(seed) = seed_module() else {
        return;
    };
    let script = "import sys, pathlib; sys.path.insert(0, sys.argv[1]); \
                  import port_allocator as s; \
                  a = s.CrossProcessPortAllocator(registry_dir=pathlib.Path(sys.argv[2])); \
                  print(a.allocate(range_start=int(sys.argv[3]), range_size=10))";
    let mut seed_run = Command::new(python());
    seed_run
        .args(["-c", script])
        .arg(seed.parent().expect("the seed's directory"))
        .arg(dir.path())
        .arg(first.to_string());
    let outcome = run_within(seed_run, Duration::from_secs(60));
    let given = outcome.success();
    assert_ne!(
        given.trim(),
        first.to_string(),
        "the seed honours the entry"
    );
}

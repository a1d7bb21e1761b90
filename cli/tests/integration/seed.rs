//! Living with the seed: its entries are honoured as it honours them, and its own
//! processes and portlease's share one registry without ever sharing a port.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use portlease::{EntryKind, Error, Request};
use serde_json::json;

use crate::helpers::{
    assert_no_overlaps, collect_holds, first_ports, registry, registry_json, unix_now, worker,
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

/// The seed's runnable copy, beside the project as `../shared/seed`.
fn seed_module() -> Option<PathBuf> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/seed/port_allocator.py");
    path.exists().then_some(path)
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
        eprintln!("skipped: ../shared/seed/port_allocator.py is absent, so the seed cannot run");
        return;
    };
    let (dir, _allocator) = registry();
    let range = first_ports(7, 6);
    let (start, end) = (range.start().to_string(), range.end().to_string());
    let seed_dir = seed.parent().expect("the seed's directory").to_owned();
    let mut children = Vec::new();
    for _ in 0..3 {
        let python = Command::new("python3")
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

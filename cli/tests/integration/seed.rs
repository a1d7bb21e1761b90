//! Living with the seed, through the command: the seed leaves a live process's lease
//! alone for hours, takes a dead owner's port once portlease has met the lease,
//! honours a TTL lease until a day past its end, and still reads what portlease
//! rewrites (a NaN timestamp). (What the library alone does beside the seed is tested
//! in the library's `tests/seed.rs`.)

use std::process::Command;
use std::time::Duration;

use crate::helpers::{
    Run, first_ports, portlease_in, ports, python, registry, registry_json, run_within, seed_module,
};

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
    assert!(
        said.contains(
            "skipped: seed::the_seed_honours_a_ttl_lease_until_a_day_past_its_end: the seed's copy"
        ),
        "{said}"
    );
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

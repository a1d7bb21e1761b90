//! What the library's own integration tests share.

#![allow(dead_code)] // Each test binary uses its own part.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::Child;

use portlease::Allocator;
use tempfile::TempDir;

/// Block `block` of 100 ports, the same blocks as the command's tests
/// (`cli/tests/integration/helpers.rs`), so the two suites never share a port.
pub fn ports(block: u16) -> RangeInclusive<u16> {
    assert!(block < 127, "port block {block} is past 32699");
    let start = 20000 + block * 100;
    start..=start + 99
}

/// An allocator on a fresh registry in a temp dir of its own.
pub fn registry() -> (TempDir, Allocator) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    (dir, allocator)
}

/// The ports the registry holds leases on.
pub fn leased(allocator: &Allocator) -> Vec<u16> {
    let leases = allocator.leases().expect("the registry's leases");
    leases.iter().filter_map(|lease| lease.port).collect()
}

/// Kills and reaps a child when dropped, so a failed assertion leaves no process.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The project setting that makes a missing test requirement (the seed's copy, root,
/// namespaces) fail its test instead of skipping it: `.ci/run` sets it to 1.
pub const REQUIRE_PEERS: &str = "PORTLEASE_REQUIRE_PEERS";

/// Whether something a test needs from outside the project (the seed's copy, root, a
/// namespace) is there. With `PORTLEASE_REQUIRE_PEERS=1` (which `.ci/run` sets) a
/// missing one fails the test, saying what to install; elsewhere the test is skipped,
/// with the reason printed.
pub fn required(available: bool, what: &str, install: &str) -> bool {
    if available {
        return true;
    }
    let under_ci = std::env::var(REQUIRE_PEERS).is_ok_and(|required| required == "1");
    assert!(
        !under_ci,
        "{what} is missing, and {REQUIRE_PEERS}=1 needs it: {install}"
    );
    skipped(&format!(
        "{what} is missing ({install}); with {REQUIRE_PEERS}=1 this test fails"
    ));
    false
}

/// Says that a test skipped, and why, where the run shows it: straight to stderr (a
/// passing test's captured output is never shown), and as a line of the run's list
/// of skips, `$CARGO_TARGET_TMPDIR/skipped-tests` (or `$PORTLEASE_TEST_SKIP_LIST`),
/// which `.ci/run` counts. The command's tests (`cli/tests/integration/helpers.rs`)
/// write the same list.
pub fn skipped(why: &str) {
    use std::io::Write;
    let line = format!("portlease test skipped: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    let list = std::env::var_os("PORTLEASE_TEST_SKIP_LIST").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests"),
        PathBuf::from,
    );
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(list)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

/// The registry file as JSON.
pub fn registry_json(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(portlease::REGISTRY_FILE)).expect("the registry");
    serde_json::from_str(&text).expect("the registry is a JSON object")
}

/// Seconds since the Unix epoch, as the registry writes them.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time after 1970")
        .as_secs_f64()
}

/// Nanoseconds on the system-wide monotonic clock (the one Python's
/// `time.monotonic_ns` reads), for comparing holds across processes.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let whole = u64::try_from(now.tv_sec).expect("a monotonic clock past its start");
    whole * 1_000_000_000 + u64::try_from(now.tv_nsec).expect("nanoseconds below a second")
}

/// One port held from `start` to `end` (monotonic ns) by process `by`.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    pub port: u16,
    pub start: u64,
    pub end: u64,
    /// The pid that held it, for the report of an overlap.
    pub by: u32,
}

/// Every pair of holds of one port that overlapped in time.
pub fn overlapping(holds: &[Hold]) -> Vec<(Hold, Hold)> {
    let mut by_port: HashMap<u16, Vec<Hold>> = HashMap::new();
    for hold in holds {
        by_port.entry(hold.port).or_default().push(*hold);
    }
    let mut overlaps = Vec::new();
    for holds in by_port.values_mut() {
        holds.sort_by_key(|h| h.start);
        for (i, a) in holds.iter().enumerate() {
            for b in &holds[i + 1..] {
                if b.start >= a.end {
                    break;
                }
                overlaps.push((*a, *b));
            }
        }
    }
    overlaps
}

/// The registry's bytes, or none.
pub fn registry_bytes(dir: &Path) -> Option<Vec<u8>> {
    std::fs::read(dir.join(portlease::REGISTRY_FILE)).ok()
}

/// The files a damaged registry was kept aside as (`port_registry.json.corrupt-*`).
pub fn kept_aside(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("the dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("port_registry.json.corrupt-")
        })
        .map(|e| e.path())
        .collect()
}

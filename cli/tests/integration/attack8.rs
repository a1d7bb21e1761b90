//! Attacks on issue 8's promises from outside: damage the tests of `salvage` did not
//! try, the seed on what portlease writes, and owners in other namespaces.

use std::path::Path;
use std::time::Duration;

use portlease::{Allocator, Request};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::helpers::{Reaped, portlease_in, ports, registry_json, run_within};

/// Four leases kept by this (running) test process on the first ports of `block`:
/// the registry as JSON and as written, and the ports.
fn live_leases(block: u16) -> (Map<String, Value>, Vec<u8>, [u16; 4]) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    let first = *ports(block).start();
    let held = [0, 1, 2, 3].map(|i| first + i);
    for port in held {
        let request = Request::new()
            .prefer(port)
            .range(port..=port)
            .label("lease");
        let kept = allocator.allocate(&request).expect("a lease").keep();
        assert_eq!(kept, [port]);
    }
    let written = std::fs::read(dir.path().join(portlease::REGISTRY_FILE)).expect("read");
    (registry_json(dir.path()), written, held)
}

/// The registry written with an indent of `indent` spaces, or on one line for 0.
fn written_with_indent(registry: &Map<String, Value>, indent: usize) -> Vec<u8> {
    if indent == 0 {
        return serde_json::to_vec(registry).expect("JSON");
    }
    let spaces = vec![b' '; indent];
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(&spaces);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    registry.serialize(&mut serializer).expect("JSON");
    out
}

/// `bytes` with the first `from` replaced by `to`.
fn replace_first(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} is in the registry"));
    [&bytes[..at], to.as_bytes(), &bytes[at + from.len()..]].concat()
}

/// Writes a registry whose first `damaged` entries are damaged, asks for four ports
/// among eight around the held ones, and says what went wrong, if anything: a held
/// port handed out, or an undamaged lease lost.
fn held_ports_survive(
    name: &str,
    bytes: &[u8],
    held: [u16; 4],
    damaged: usize,
) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a temp dir");
    Allocator::with_dir(dir.path()).expect("an allocator");
    std::fs::write(dir.path().join(portlease::REGISTRY_FILE), bytes).expect("write");
    let range = format!("{}-{}", held[0], held[0] + 7);
    let args = [
        "alloc",
        "--range",
        &range,
        "--count",
        "4",
        "--lock-timeout",
        "5",
    ];
    let outcome = run_within(portlease_in(dir.path(), &args), Duration::from_secs(60));
    if outcome.code() != 0 {
        return Err(format!("{name}: alloc failed: {}", outcome.stderr()));
    }
    let given: Vec<u16> = outcome
        .stdout()
        .split_whitespace()
        .map(|p| p.parse().expect("a port"))
        .collect();
    if let Some(twice) = given.iter().find(|p| held.contains(p)) {
        return Err(format!("{name}: held port {twice} handed out again"));
    }
    let after = registry_json(dir.path());
    for port in &held {
        if !after.contains_key(&port.to_string()) {
            return Err(format!("{name}: the lease on {port} is not held"));
        }
    }
    // The damaged entries may be placeholders; the others keep their owner.
    for port in &held[damaged..] {
        let entry = after.get(&port.to_string());
        if entry.is_none_or(|e| e["pid"] != std::process::id()) {
            return Err(format!("{name}: the lease on {port} was lost: {entry:?}"));
        }
    }
    Ok(())
}

#[test]
fn damage_in_a_compact_or_deeply_indented_registry_costs_one_entry() {
    let (registry, written, held) = live_leases(84);
    let compact = written_with_indent(&registry, 0);
    let indent4 = written_with_indent(&registry, 4);
    let variants = [
        (
            "one line, a quote not escaped in a label",
            replace_first(&compact, "\"lease\"", "\"lea\"se\""),
        ),
        (
            "one line, an unclosed bracket",
            replace_first(&compact, "\"lease\"", "[BROKEN"),
        ),
        (
            "indented by 4, an unclosed bracket",
            replace_first(&indent4, "\"lease\"", "[BROKEN"),
        ),
        (
            "indented by 4, a quote not escaped in a label",
            replace_first(&indent4, "\"lease\"", "\"lea\"se\""),
        ),
        (
            "one line, the first entry's closing brace lost",
            replace_first(&compact, "},", ","),
        ),
        (
            "indented by 4, the first entry's closing brace lost",
            replace_first(&indent4, "},", ","),
        ),
        (
            "as portlease writes it, the first entry's closing brace lost",
            replace_first(&written, "},", ","),
        ),
    ];
    let failures: Vec<String> = variants
        .iter()
        .filter_map(|(name, bytes)| held_ports_survive(name, bytes, held, 1).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_long_damaged_line_is_read_in_linear_time() {
    // Unclosed objects keyed by digits on one 4 MiB line: every key is a candidate
    // for resynchronising, and none closes. Read in time linear in the file, this
    // takes milliseconds; in quadratic time, hours (holding the lock throughout).
    let dir = tempfile::tempdir().expect("a temp dir");
    Allocator::with_dir(dir.path()).expect("an allocator");
    let damaged = format!("{{{}", "\"1\": {".repeat(700_000));
    std::fs::write(dir.path().join(portlease::REGISTRY_FILE), damaged).expect("write");
    let port = *ports(85).start();
    let range = format!("{port}-{port}");
    let args = ["alloc", "--range", &range, "--lock-timeout", "5"];
    let outcome = run_within(portlease_in(dir.path(), &args), Duration::from_secs(60));
    assert_eq!(outcome.success().trim(), port.to_string());
    assert!(
        registry_json(dir.path()).contains_key("1"),
        "the placeholder"
    );
}

/// The seed's runnable copy, beside the project as `../shared/seed`.
fn seed_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/seed");
    dir.join("port_allocator.py").exists().then_some(dir)
}

#[test]
fn the_seed_still_allocates_after_portlease_rewrote_its_nan_timestamp() {
    // What Python's json module writes for an entry whose timestamp is NaN: the seed
    // holds it for ever (`now - nan > 300` is false) and reads the file fine.
    let dir = tempfile::tempdir().expect("a temp dir");
    Allocator::with_dir(dir.path()).expect("an allocator");
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
    let Some(seed) = seed_dir() else {
        eprintln!("skipped the seed's own run: its module is not beside the project");
        return;
    };
    let script = "import sys, pathlib; sys.path.insert(0, sys.argv[1]); \
                  import port_allocator as s; \
                  a = s.CrossProcessPortAllocator(registry_dir=pathlib.Path(sys.argv[2])); \
                  print(a.allocate(range_start=int(sys.argv[3]), range_size=10))";
    let mut python = std::process::Command::new("python3");
    python
        .args(["-c", script])
        .arg(seed)
        .arg(dir.path())
        .arg(first.to_string());
    let outcome = run_within(python, Duration::from_secs(60));
    let given = outcome.success();
    assert_ne!(
        given.trim(),
        first.to_string(),
        "the seed honours the entry"
    );
}

/// A pid no process of this namespace has, nor the nine after it.
fn unused_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(32768);
    (300..max - 20)
        .rev()
        .find(|pid| (*pid..pid + 10).all(|p| !Path::new(&format!("/proc/{p}")).exists()))
        .expect("a free stretch of pids")
}

#[test]
fn an_owner_in_a_pid_namespace_that_kept_the_hosts_proc_keeps_its_port() {
    // `unshare --pid --fork` without `--mount-proc`: the owner's pid is its new
    // namespace's, while /proc (and so /proc/PID) is still the host's. The owner's
    // pid is steered to one the host does not have.
    let dir = tempfile::tempdir().expect("a temp dir");
    Allocator::with_dir(dir.path()).expect("an allocator");
    let port = *ports(87).start();
    let range = format!("{port}-{port}");
    let pid = unused_pid();
    let script = format!(
        "echo {last} > /proc/sys/kernel/ns_last_pid && {{ '{bin}' exec --range {range} -- sleep 120 & wait; }}",
        last = pid - 1,
        bin = crate::helpers::binary().display(),
    );
    let mut owner = std::process::Command::new("unshare");
    owner
        .args(["--pid", "--fork", "--kill-child", "sh", "-c", &script])
        .env("PORTLEASE_DIR", dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut owner = Reaped(owner.spawn().expect("unshare runs"));
    let registry_file = dir.path().join(portlease::REGISTRY_FILE);
    loop {
        if let Some(status) = owner.0.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut err) = owner.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
            }
            if stderr.contains("unshare failed")
                || stderr.contains("Operation not permitted")
                || stderr.contains("ns_last_pid")
            {
                eprintln!(
                    "skipped: unshare or ns_last_pid is refused here ({})",
                    stderr.trim()
                );
                return;
            }
            panic!("the namespaced owner ended first ({status}): {stderr}");
        }
        let text = std::fs::read_to_string(&registry_file).unwrap_or_default();
        if text.contains(&format!("\"{port}\"")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let lease = &registry_json(dir.path())[&port.to_string()];
    assert!(
        lease["pid_ns"].is_u64(),
        "the owner's namespace is recorded: {lease}"
    );
    let args = ["alloc", "--range", &range, "--lock-timeout", "5"];
    run_within(portlease_in(dir.path(), &args), Duration::from_secs(60)).fails(3, "no port free");
}

#[test]
fn an_owner_in_another_time_namespace_keeps_its_port() {
    // A time namespace (CRIU's, or `unshare --time`) shifts the boot time that
    // /proc/PID/stat's start times count from, for the processes in it only.
    // SIGTERM, which `exec` passes on, so that the sleeper ends with the test.
    let dir = tempfile::tempdir().expect("a temp dir");
    Allocator::with_dir(dir.path()).expect("an allocator");
    let port = *ports(88).start();
    let range = format!("{port}-{port}");
    let mut owner = std::process::Command::new("unshare");
    owner
        .args(["--time", "--boottime", "100000", "--kill-child=SIGTERM"])
        .arg(crate::helpers::binary())
        .args(["exec", "--range", &range, "--", "sleep", "120"])
        .env("PORTLEASE_DIR", dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut owner = Reaped(owner.spawn().expect("unshare runs"));
    let registry_file = dir.path().join(portlease::REGISTRY_FILE);
    loop {
        if let Some(status) = owner.0.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut err) = owner.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
            }
            eprintln!(
                "skipped: unshare --time is refused here ({status}: {})",
                stderr.trim()
            );
            return;
        }
        let text = std::fs::read_to_string(&registry_file).unwrap_or_default();
        if text.contains(&format!("\"{port}\"")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let args = ["alloc", "--range", &range, "--lock-timeout", "5"];
    run_within(portlease_in(dir.path(), &args), Duration::from_secs(60)).fails(3, "no port free");
}

#[test]
fn a_damaged_value_behind_an_unbalanced_bracket_is_still_held() {
    // The first entry gains a '{', so the second (whose value lost a quote) is one
    // level deeper than it seems, and on one line no line start marks it.
    let (registry, _, held) = live_leases(89);
    let compact = written_with_indent(&registry, 0);
    let first_damaged = replace_first(&compact, "\"lease\"", "{\"lease\"");
    let second = format!("\"{}\":", held[1]);
    let at = first_damaged
        .windows(second.len())
        .position(|w| w == second.as_bytes())
        .expect("the second entry");
    let (before, second_entry) = first_damaged.split_at(at);
    let both_damaged = [before, &replace_first(second_entry, ",\"pid\":", ",pid\":")].concat();
    held_ports_survive("two damaged entries on one line", &both_damaged, held, 2)
        .unwrap_or_else(|failure| panic!("{failure}"));
}

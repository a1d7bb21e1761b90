//! Bounds and truths (issue 17), through the real binary: a `--label` past the limit
//! is refused, no call writes a registry past the size every party reads, one past it
//! is salvaged, a failed save leaves no temporary file, a reader that writes nothing
//! does not claim to keep anything, and the seed never takes a TTL lease that a
//! writer whose clock is a day behind still holds.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::helpers::{
    Run, file_names, kept_aside, python, range_arg, registry_bytes, registry_json, required,
    seed_module,
};

/// The read limit every party applies to the registry (64 MiB fits any usize here).
#[expect(
    clippy::cast_possible_truncation,
    reason = "64 MiB fits a usize on every target portlease builds for"
)]
const READ_LIMIT: usize = portlease::MAX_REGISTRY_BYTES as usize;
/// The limit on a label.
const TEXT_LIMIT: usize = portlease::MAX_TEXT_BYTES;

/// A registry of exactly `size` bytes: `head`'s entries, then foreign entries
/// (which portlease keeps as they are) padding it.
fn registry_of_size(head: &serde_json::Value, size: usize) -> Vec<u8> {
    let mut text = head.to_string();
    text.pop();
    let mut i = 0;
    while text.len() + 1 < size {
        let prefix = format!(",\"note-{i}\": \"");
        let room = size - 1 - text.len() - prefix.len() - 1;
        text.push_str(&prefix);
        text.push_str(&"x".repeat(room.min(1 << 20)));
        text.push('"');
        i += 1;
    }
    text.push('}');
    text.into_bytes()
}

#[test]
fn a_label_past_the_limit_is_refused_and_one_at_it_is_kept() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(54, 5);
    let long = "l".repeat(TEXT_LIMIT + 1);
    Run::new(dir.path())
        .args(["alloc", "--range", &range, "--label", &long])
        .run()
        .fails(2, &TEXT_LIMIT.to_string());
    assert_eq!(registry_bytes(dir.path()), None, "nothing written");

    let at_limit = "l".repeat(TEXT_LIMIT);
    Run::new(dir.path())
        .args(["alloc", "--range", &range, "--label", &at_limit])
        .run()
        .success();
    let listed: serde_json::Value = Run::new(dir.path()).args(["list", "--json"]).run().json();
    assert_eq!(
        listed[0]["label"].as_str(),
        Some(at_limit.as_str()),
        "{listed}"
    );
}

#[test]
fn a_full_registry_refuses_growth_but_every_command_still_reads_and_shrinks_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(55, 5);
    let held = *crate::helpers::first_ports(55, 1).start();
    let head =
        json!({ held.to_string(): {"pid": 999_999_999, "timestamp": crate::helpers::unix_now()} });
    let nearly_full = registry_of_size(&head, READ_LIMIT - 3000);
    std::fs::write(dir.path().join("port_registry.json"), &nearly_full).expect("write");

    let label = "l".repeat(TEXT_LIMIT);
    Run::new(dir.path())
        .args(["alloc", "--range", &range, "--label", &label])
        .run()
        .fails(1, "64 MiB");
    assert!(
        registry_bytes(dir.path()).as_deref() == Some(&nearly_full[..]),
        "a refused write changes nothing"
    );
    Run::new(dir.path()).args(["list"]).run().success();
    Run::new(dir.path()).args(["gc"]).run().success();
    Run::new(dir.path())
        .args(["release", &held.to_string()])
        .run()
        .success();
    Run::new(dir.path())
        .args(["alloc", "--range", &range])
        .run()
        .success();
}

#[test]
fn a_registry_past_the_read_limit_is_listed_then_salvaged_by_the_next_writer() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = crate::helpers::first_ports(117, 3);
    let (a, b) = (*range.start(), range.start() + 1);
    let now = crate::helpers::unix_now();
    let head = json!({
        a.to_string(): {"pid": 1, "timestamp": now},
        b.to_string(): {"pid": 1, "timestamp": now},
    });
    let oversize = registry_of_size(&head, READ_LIMIT + (1 << 20));
    std::fs::write(dir.path().join("port_registry.json"), &oversize).expect("write");

    let list = Run::new(dir.path()).args(["list", "--json"]).run();
    let listed: serde_json::Value = list.json();
    let ports: Vec<u64> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|lease| lease["port"].as_u64())
        .collect();
    assert!(
        ports.contains(&u64::from(a)) && ports.contains(&u64::from(b)),
        "{listed}"
    );
    assert!(kept_aside(dir.path()).is_empty(), "list writes nothing");

    let out = Run::new(dir.path())
        .args(["alloc", "--range", &range_arg(117, 3)])
        .run()
        .success();
    assert_eq!(out.trim(), (range.start() + 2).to_string());
    let aside = kept_aside(dir.path());
    assert_eq!(aside.len(), 1, "{:?}", file_names(dir.path()));
    assert!(std::fs::read(&aside[0]).expect("read").as_slice() == &oversize[..]);
    assert!(registry_bytes(dir.path()).expect("a registry").len() <= READ_LIMIT);
}

#[test]
fn a_reader_of_a_damaged_registry_does_not_claim_to_keep_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *crate::helpers::first_ports(117, 10).end();
    let damaged = format!(
        "{{\"{port}\": {{\"pid\": 1, \"timestamp\": {}}}, \"{}\": {{\"pid\": 1, \"tim",
        crate::helpers::unix_now(),
        port - 1
    );
    std::fs::write(dir.path().join("port_registry.json"), &damaged).expect("write");
    let list = Run::new(dir.path()).args(["list"]).run();
    list.success();
    let stderr = list.stderr();
    assert!(stderr.contains("damaged"), "{stderr}");
    assert!(!stderr.contains("will be kept"), "{stderr}");
    assert!(stderr.contains("not kept"), "{stderr}");
    assert!(kept_aside(dir.path()).is_empty());
    assert_eq!(
        registry_bytes(dir.path()),
        Some(damaged.into_bytes()),
        "nothing written"
    );
}

/// Makes a file immutable (`chattr +i`) while it lives: renaming over it fails, as
/// on a read-only bind mount, though the directory stays writable.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Option<Immutable> {
        let done = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .is_ok_and(|status| status.success());
        required(
            done,
            "chattr +i (root, and a filesystem with the immutable flag)",
            "run the tests as root on ext4, xfs or btrfs",
        )
        .then(|| Immutable(path.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_failed_rename_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(56, 5);
    Run::new(dir.path())
        .args(["alloc", "--range", &range])
        .run()
        .success();
    let before = registry_bytes(dir.path());
    let Some(_immutable) = Immutable::set(&dir.path().join("port_registry.json")) else {
        return;
    };
    Run::new(dir.path())
        .args(["alloc", "--range", &range])
        .run()
        .fails(1, "port_registry.json");
    assert_eq!(registry_bytes(dir.path()), before, "the registry as it was");
    let names = file_names(dir.path());
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp")),
        "the temporary file is removed: {names:?}"
    );
}

const SEED_TAKES: &str = r#"
import sys, pathlib
sys.path.insert(0, sys.argv[1])
import port_allocator as seed
a = seed.CrossProcessPortAllocator(registry_dir=pathlib.Path(sys.argv[2]))
port = int(sys.argv[3])
try:
    print(a.allocate(preferred=port, range_start=port, range_size=1))
except RuntimeError:
    print("refused")
"#;

#[test]
fn the_seed_leaves_a_ttl_lease_of_a_writer_a_day_behind_alone() {
    let Some(seed) = seed_module() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = crate::helpers::first_ports(117, 20).end().to_owned();
    let one = format!("{port}-{port}");
    Run::new(dir.path())
        .args(["alloc", "--range", &one, "--ttl", "900"])
        .run()
        .success();
    // What a writer whose clock is a day behind writes: every time it writes is its
    // clock's now plus a constant, so the same entry shifted a day back.
    let mut registry = registry_json(dir.path());
    let entry = registry
        .get_mut(&port.to_string())
        .and_then(|entry| entry.as_object_mut())
        .expect("the lease");
    for field in ["leased_at", "timestamp"] {
        let value = entry[field].as_f64().expect("a time");
        entry[field] = json!(value - 86_400.0);
    }
    std::fs::write(
        dir.path().join("port_registry.json"),
        serde_json::to_vec(&registry).expect("JSON"),
    )
    .expect("write");

    let output = Command::new(python())
        .args(["-c", SEED_TAKES])
        .arg(seed.parent().expect("the seed's directory"))
        .arg(dir.path())
        .arg(port.to_string())
        .output()
        .expect("python3 runs");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        said.trim(),
        "refused",
        "the seed took a lease its writer holds for 900 s more"
    );
}

//! Damaged registries and failed writes: a registry that does not parse is kept aside
//! byte for byte and salvaged (the entries before a cut are honoured), entries not
//! understood are kept and their ports not handed out, and a write that fails changes
//! nothing and says so.
//!
//! Ports 38500-38599 are this file's.

mod common;

use std::path::Path;

use portlease::{Error, Request};
use serde_json::json;

use common::{registry, registry_bytes, registry_json, unix_now};

fn write_registry(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join(portlease::REGISTRY_FILE), bytes).expect("write the registry");
}

/// The bytes of the files kept aside as `port_registry.json.corrupt-*`.
fn kept_aside(dir: &Path) -> Vec<Vec<u8>> {
    common::kept_aside(dir)
        .iter()
        .map(|path| std::fs::read(path).expect("read"))
        .collect()
}

#[test]
fn a_garbage_registry_is_kept_aside_and_replaced() {
    let (dir, allocator) = registry();
    let garbage = b"\x00\x01 this is not JSON {{{".to_vec();
    write_registry(dir.path(), &garbage);
    let lease = allocator
        .allocate(&Request::new().range(38500..=38504))
        .expect("a port");
    assert_eq!(
        kept_aside(dir.path()),
        [garbage],
        "the original bytes, byte for byte"
    );
    let registry = registry_json(dir.path());
    assert_eq!(
        registry.keys().collect::<Vec<_>>(),
        [&lease.port().to_string()]
    );
}

#[test]
fn a_truncated_registry_keeps_the_entries_before_the_cut() {
    let (dir, allocator) = registry();
    let range = 38510..=38513;
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| range.start() + i);
    let whole = json!({
        a.to_string(): {"pid": 1, "timestamp": unix_now()},
        b.to_string(): {"pid": 1, "timestamp": unix_now()},
        c.to_string(): {"pid": 1, "timestamp": unix_now()},
    })
    .to_string();
    let cut = whole.find(&format!("\"{c}\"")).expect("the third key") + 8;
    write_registry(dir.path(), &whole.as_bytes()[..cut]);

    let lease = allocator
        .allocate(&Request::new().range(range.clone()))
        .expect("a port");
    assert_eq!(
        lease.port(),
        d,
        "the two salvaged leases are honoured, and the cut one's port is held"
    );
    let registry = registry_json(dir.path());
    assert!(registry.contains_key(&a.to_string()) && registry.contains_key(&b.to_string()));
    assert!(
        registry[&c.to_string()]["timestamp"].as_f64() > Some(unix_now() - 60.0),
        "a placeholder holds the cut entry's port for the seed's 300 s: {registry:?}"
    );
    assert_eq!(kept_aside(dir.path()), [whole.as_bytes()[..cut].to_vec()]);
}

#[test]
fn entries_not_understood_are_kept_and_their_ports_not_handed_out() {
    let (dir, allocator) = registry();
    let range = 38520..=38523;
    let [a, b, c] = [*range.start(), range.start() + 1, range.start() + 2];
    let foreign = json!({
        "comment": "not a port",
        a.to_string(): "not an object",
        b.to_string(): {"pid": "?", "what": "unknown fields"},
        c.to_string(): {"pid": 1, "timestamp": unix_now(), "extra": [1, 2]},
    });
    write_registry(dir.path(), foreign.to_string().as_bytes());

    let lease = allocator
        .allocate(&Request::new().range(range.clone()))
        .expect("a port");
    assert_eq!(
        lease.port(),
        range.start() + 3,
        "only the one port nobody names"
    );
    lease.release().expect("release");
    let after = registry_json(dir.path());
    assert_eq!(
        serde_json::Value::Object(after),
        foreign,
        "every foreign entry kept as it was"
    );
    assert!(
        kept_aside(dir.path()).is_empty(),
        "a registry that parses is not damaged"
    );
}

#[test]
fn a_failed_write_changes_nothing_and_says_so() {
    let (dir, allocator) = registry();
    let range = 38530..=38534;
    let kept = allocator
        .allocate(&Request::new().range(range.clone()))
        .expect("a port");
    let before = registry_bytes(dir.path());
    // The temp file's name taken by a directory: the write fails as on a full disk.
    std::fs::create_dir(dir.path().join("port_registry.json.tmp")).expect("mkdir");

    let error = allocator
        .allocate(&Request::new().range(range.clone()))
        .expect_err("the write fails");
    assert!(
        matches!(&error, Error::Io { path, .. } | Error::Unsafe { path, .. }
            if path.ends_with("port_registry.json.tmp")),
        "{error}"
    );
    assert!(
        error.to_string().contains("port_registry.json.tmp"),
        "{error}"
    );
    assert!(allocator.release(kept.port()).is_err());
    assert_eq!(
        registry_bytes(dir.path()),
        before,
        "the registry is as it was"
    );

    std::fs::remove_dir(dir.path().join("port_registry.json.tmp")).expect("rmdir");
    kept.release().expect("works again once the disk does");
}

#[test]
fn a_release_on_a_damaged_registry_still_writes_the_salvage() {
    let (dir, allocator) = registry();
    let range = 38540..=38541;
    let [a, b] = [*range.start(), range.start() + 1];
    let whole = json!({ a.to_string(): {"pid": 1, "timestamp": unix_now()} }).to_string();
    let damaged = format!("{whole}garbage");
    write_registry(dir.path(), damaged.as_bytes());

    // Releasing a port that is not leased changes no entry, but the salvage is due.
    assert!(!allocator.release(b).expect("a release"));
    assert_eq!(kept_aside(dir.path()), [damaged.into_bytes()]);
    assert_eq!(
        registry_json(dir.path()).keys().collect::<Vec<_>>(),
        [&a.to_string()]
    );
}

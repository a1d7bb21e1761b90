//! Bounds on what the registry holds: free text in an entry has a size
//! limit, no sequence of allowed calls writes a registry larger than every party
//! reads, and a registry past that size, written by someone else, is salvaged rather
//! than refused forever. Ports 38000-38099 are this file's.

mod common;

use portlease::{Allocator, Error, Owner, REGISTRY_FILE, Request};
use serde_json::json;

use common::{file_names, kept_aside, registry_bytes, unix_now};

/// The read limit every party applies to the registry (written out: the documented
/// value is what is tested, not whatever the library's constant says).
const READ_LIMIT: usize = 64 << 20;
/// The limit on a label or a source.
const TEXT_LIMIT: usize = 4096;

#[test]
fn a_label_or_source_past_the_limit_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    let range = 38000..=38004;
    let long = "x".repeat(TEXT_LIMIT + 1);
    for request in [
        Request::new().range(range.clone()).label(long.clone()),
        Request::new().range(range.clone()).source(long.clone()),
    ] {
        match allocator.allocate(&request) {
            Err(Error::InvalidRequest(message)) => {
                assert!(message.contains(&TEXT_LIMIT.to_string()), "{message}");
            }
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }
    assert_eq!(registry_bytes(dir.path()), None, "nothing written");

    // Exactly the limit, in multi-byte characters, is allowed.
    let at_limit = "é".repeat(TEXT_LIMIT / 2);
    let lease = allocator
        .allocate(&Request::new().range(range).label(at_limit.clone()))
        .expect("a label at the limit");
    let listed = allocator.leases().expect("the leases");
    assert_eq!(listed[0].label.as_deref(), Some(at_limit.as_str()));
    lease.release().expect("the release");
}

/// A registry of `size` bytes, valid JSON: foreign entries (kept by portlease as they
/// are) padded to the size, and `head` first.
fn registry_of_size(head: &serde_json::Value, size: usize) -> Vec<u8> {
    let mut text = head.to_string();
    assert!(text.ends_with('}'));
    text.pop();
    let chunk = 1 << 20;
    let mut i = 0;
    // Each foreign entry: ,"note-N": "xxxx..." (fills up to `size` less the brace).
    while text.len() + 1 < size {
        let prefix = format!(",\"note-{i}\": \"");
        let room = size - 1 - text.len() - prefix.len() - 1;
        text.push_str(&prefix);
        text.push_str(&"x".repeat(room.min(chunk)));
        text.push('"');
        i += 1;
    }
    text.push('}');
    text.into_bytes()
}

#[test]
fn no_allowed_call_writes_a_registry_past_the_read_limit() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    let held = json!({"38010": {"pid": 1, "timestamp": unix_now()}});
    // 3000 bytes short of the limit: one lease with a label at the limit does not fit.
    let nearly_full = registry_of_size(&held, READ_LIMIT - 3000);
    assert_eq!(nearly_full.len(), READ_LIMIT - 3000);
    std::fs::write(dir.path().join(REGISTRY_FILE), &nearly_full).expect("write");

    let error = allocator
        .allocate(
            &Request::new()
                .range(38011..=38019)
                .owner(Owner::Nobody)
                .label("y".repeat(TEXT_LIMIT)),
        )
        .expect_err("the write would pass the read limit");
    let message = error.to_string();
    assert!(
        message.contains("64 MiB") && message.contains(REGISTRY_FILE),
        "says what and where: {message}"
    );
    assert!(
        registry_bytes(dir.path()).as_deref() == Some(&nearly_full[..]),
        "the registry is as it was"
    );
    assert!(
        !file_names(dir.path()).iter().any(|n| n.ends_with(".tmp")),
        "no temporary file left: {:?}",
        file_names(dir.path())
    );

    // Not bricked: every party still reads it, and calls that fit still work.
    let listed = allocator.leases().expect("still listed");
    assert!(listed.iter().any(|lease| lease.port == Some(38010)));
    allocator.gc().expect("gc still works");
    let small = allocator
        .allocate(&Request::new().range(38011..=38019))
        .expect("a lease that fits");
    small.release().expect("a release");
    assert!(allocator.release(38010).expect("a release"));
    assert!(registry_bytes(dir.path()).expect("a registry").len() <= READ_LIMIT);
}

#[test]
fn a_registry_past_the_read_limit_is_salvaged_not_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let now = unix_now();
    let head = json!({
        "38020": {"pid": 1, "timestamp": now},
        "38021": {"pid": 1, "timestamp": now},
    });
    let oversize = registry_of_size(&head, READ_LIMIT + (1 << 20));
    std::fs::write(dir.path().join(REGISTRY_FILE), &oversize).expect("write");

    // A reader lists what it can read, and writes nothing.
    let reader = Allocator::existing(dir.path()).expect("a reader");
    let listed: Vec<Option<u16>> = reader
        .leases()
        .expect("read, not refused")
        .iter()
        .map(|lease| lease.port)
        .collect();
    assert!(
        listed.contains(&Some(38020)) && listed.contains(&Some(38021)),
        "{listed:?}"
    );
    assert!(kept_aside(dir.path()).is_empty(), "a reader keeps nothing");
    assert!(registry_bytes(dir.path()).as_deref() == Some(&oversize[..]));

    // A writer salvages it: the entries it read are honoured, the original kept aside.
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    let lease = allocator
        .allocate(&Request::new().range(38020..=38022))
        .expect("salvaged, not refused");
    assert_eq!(lease.port(), 38022, "the salvaged entries are honoured");
    let aside = kept_aside(dir.path());
    assert_eq!(aside.len(), 1, "{:?}", file_names(dir.path()));
    assert!(
        std::fs::read(&aside[0]).expect("the original").as_slice() == &oversize[..],
        "the original kept aside byte for byte"
    );
    let now_there = registry_bytes(dir.path()).expect("a registry");
    assert!(now_there.len() <= READ_LIMIT);
    let registry: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&now_there).expect("JSON");
    assert!(registry.contains_key("38020") && registry.contains_key("38021"));
    lease.release().expect("the release");
}

#[test]
fn an_empty_list_of_ranges_is_refused_not_read_as_the_default() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    let none: Vec<std::ops::RangeInclusive<u16>> = Vec::new();
    match allocator.allocate(&Request::new().range(38030..=38031).set_ranges(none)) {
        Err(Error::InvalidRequest(message)) => assert!(message.contains("empty"), "{message}"),
        other => panic!("expected an invalid request, got {other:?}"),
    }
    assert_eq!(registry_bytes(dir.path()), None, "nothing written");
    let lease = allocator
        .allocate(&Request::new().set_ranges([38030..=38031]))
        .expect("a port");
    assert!((38030..=38031).contains(&lease.port()));
}

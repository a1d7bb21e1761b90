//! A damaged registry whose owners still run: every readable lease is kept, wherever
//! the damage is, and no held port goes out again.

use std::path::Path;
use std::time::Duration;

use portlease::{Allocator, Request};

use crate::helpers::{portlease_in, ports, registry_json, run_within};

/// The four leases' registry text, owned by this (running) test process, and their ports.
fn live_registry() -> (Vec<u8>, [u16; 4]) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    let first = *ports(76).start();
    let held = [0, 1, 2, 3].map(|i| first + i);
    for (port, label) in held
        .iter()
        .zip(["lease-a", "lease-b", "lease-c", "lease-d"])
    {
        let kept = allocator
            .allocate(
                &Request::new()
                    .prefer(*port)
                    .range(*port..=*port)
                    .label(label),
            )
            .expect("a lease")
            .keep();
        assert_eq!(kept, [*port]);
    }
    let bytes = std::fs::read(dir.path().join(portlease::REGISTRY_FILE)).expect("the registry");
    (bytes, held)
}

/// The registry's lines: `{`, one per entry, `}`.
fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .filter(|l| !l.is_empty())
        .collect()
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    lines.join(&b'\n')
}

fn replace(line: &[u8], from: &str, to: &[u8]) -> Vec<u8> {
    let at = line
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} in {}", String::from_utf8_lossy(line)));
    [&line[..at], to, &line[at + from.len()..]].concat()
}

/// Each kind of damage, applied to the first entries of a whole registry.
fn damaged_variants(whole: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let original = lines(whole);
    let with = |change: &dyn Fn(&mut Vec<Vec<u8>>)| {
        let mut lines = original.clone();
        change(&mut lines);
        join(&lines)
    };
    vec![
        (
            "a bad token in the first entry",
            with(&|l| l[1] = replace(&l[1], "},", b", BROKEN},")),
        ),
        (
            "an invalid UTF-8 byte in a label",
            with(&|l| l[1] = replace(&l[1], "lease-a", b"lease-\xff")),
        ),
        (
            "NaN, Infinity and -Infinity as Python writes them",
            with(&|l| {
                l[1] = replace(&l[1], "{\"", b"{\"x\": NaN, \"");
                l[2] = replace(&l[2], "{\"", b"{\"x\": Infinity, \"");
                l[3] = replace(&l[3], "{\"", b"{\"x\": -Infinity, \"");
            }),
        ),
        (
            "a leading UTF-8 BOM",
            [b"\xEF\xBB\xBF".as_slice(), whole].concat(),
        ),
        (
            "a missing comma",
            with(&|l| {
                l[1].pop();
            }),
        ),
        (
            "a run of NUL bytes",
            with(&|l| l[1].extend_from_slice(&[0; 64])),
        ),
        (
            "two objects back to back",
            with(&|l| {
                l[2].pop();
                l[2].extend_from_slice(b"}{");
            }),
        ),
        (
            "a value that cannot be read",
            with(&|l| {
                let colon = l[1].iter().position(|&b| b == b':').expect("a key");
                l[1] = [&l[1][..=colon], b" {\"pid\": @@@ },".as_slice()].concat();
            }),
        ),
    ]
}

fn check_variant(name: &str, bytes: &[u8], held: [u16; 4]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a temp dir");
    Allocator::with_dir(dir.path()).expect("an allocator");
    std::fs::write(dir.path().join(portlease::REGISTRY_FILE), bytes).expect("write");
    let range = format!("{}-{}", held[0], held[0] + 7);
    let outcome = run_within(
        portlease_in(
            dir.path(),
            &[
                "alloc",
                "--range",
                &range,
                "--count",
                "4",
                "--lock-timeout",
                "5",
            ],
        ),
        Duration::from_secs(60),
    );
    if outcome.code() != 0 {
        return Err(format!("{name}: alloc failed: {}", outcome.stderr()));
    }
    let given: Vec<u16> = outcome
        .stdout()
        .split_whitespace()
        .map(|p| p.parse().expect("a port"))
        .collect();
    if let Some(twice) = given.iter().find(|p| held.contains(p)) {
        return Err(format!(
            "{name}: held port {twice} handed out again ({given:?})"
        ));
    }
    let after = registry_json(dir.path());
    for port in held {
        if !after.contains_key(&port.to_string()) {
            return Err(format!("{name}: the lease on {port} was lost"));
        }
    }
    check_owners_kept(name, dir.path(), held)
}

/// Every lease readable on its own keeps its owner; only an entry whose value could
/// not be read becomes a placeholder.
fn check_owners_kept(name: &str, dir: &Path, held: [u16; 4]) -> Result<(), String> {
    let after = registry_json(dir);
    let skip_first = name.contains("bad token") || name.contains("cannot be read");
    for port in &held[usize::from(skip_first)..] {
        let entry = &after[&port.to_string()];
        if entry["owner"] != "process" || entry["pid"] != std::process::id() {
            return Err(format!(
                "{name}: the lease on {port} lost its owner: {entry}"
            ));
        }
    }
    Ok(())
}

#[test]
fn every_readable_lease_survives_each_kind_of_damage() {
    let (whole, held) = live_registry();
    let failures: Vec<String> = damaged_variants(&whole)
        .iter()
        .filter_map(|(name, bytes)| check_variant(name, bytes, held).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

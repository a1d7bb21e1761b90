//! A damaged registry whose owners still run: every readable lease is kept, wherever
//! the damage is and however the registry is laid out (one line, any indent), no held
//! port goes out again, and a damaged registry is read in time linear in its size.

use std::path::Path;
use std::time::Duration;

use portlease::{Allocator, Request};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::helpers::{portlease_in, ports, registry_json, run_within};

/// Four leases kept by this (running) test process on the first ports of `block`,
/// labelled `labels`: the registry as JSON and as written, and the ports.
fn live_leases(block: u16, labels: [&str; 4]) -> (Map<String, Value>, Vec<u8>, [u16; 4]) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    let first = *ports(block).start();
    let held = [0, 1, 2, 3].map(|i| first + i);
    for (port, label) in held.into_iter().zip(labels) {
        let request = Request::new().prefer(port).range(port..=port).label(label);
        let kept = allocator.allocate(&request).expect("a lease").keep();
        assert_eq!(kept, [port]);
    }
    let written = std::fs::read(dir.path().join(portlease::REGISTRY_FILE)).expect("the registry");
    (registry_json(dir.path()), written, held)
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

/// `line` with the first `from` in it replaced by `to`.
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

/// Writes `bytes` as the registry, asks for four ports among eight around the held
/// ones, and says what went wrong, if anything: a held port handed out, a lease lost,
/// or one after the first `damaged` (which may be placeholders) no longer its owner's.
fn check_variant(name: &str, bytes: &[u8], held: [u16; 4], damaged: usize) -> Result<(), String> {
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
    check_owners_kept(name, dir.path(), held, damaged)
}

/// Every lease after the first `damaged` keeps its owner: only an entry whose value
/// could not be read becomes a placeholder.
fn check_owners_kept(name: &str, dir: &Path, held: [u16; 4], damaged: usize) -> Result<(), String> {
    let after = registry_json(dir);
    for port in &held[damaged..] {
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
    let labels = ["lease-a", "lease-b", "lease-c", "lease-d"];
    let (_, whole, held) = live_leases(76, labels);
    let failures: Vec<String> = damaged_variants(&whole)
        .iter()
        .filter_map(|(name, bytes)| {
            // Only an entry whose value cannot be read may become a placeholder.
            let damaged =
                usize::from(name.contains("bad token") || name.contains("cannot be read"));
            check_variant(name, bytes, held, damaged).err()
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
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

#[test]
fn damage_in_a_compact_or_deeply_indented_registry_costs_one_entry() {
    let (registry, written, held) = live_leases(84, ["lease"; 4]);
    let compact = written_with_indent(&registry, 0);
    let indent4 = written_with_indent(&registry, 4);
    let variants = [
        (
            "one line, a quote not escaped in a label",
            replace(&compact, "\"lease\"", b"\"lea\"se\""),
        ),
        (
            "one line, an unclosed bracket",
            replace(&compact, "\"lease\"", b"[BROKEN"),
        ),
        (
            "indented by 4, an unclosed bracket",
            replace(&indent4, "\"lease\"", b"[BROKEN"),
        ),
        (
            "indented by 4, a quote not escaped in a label",
            replace(&indent4, "\"lease\"", b"\"lea\"se\""),
        ),
        (
            "one line, the first entry's closing brace lost",
            replace(&compact, "},", b","),
        ),
        (
            "indented by 4, the first entry's closing brace lost",
            replace(&indent4, "},", b","),
        ),
        (
            "as portlease writes it, the first entry's closing brace lost",
            replace(&written, "},", b","),
        ),
    ];
    let failures: Vec<String> = variants
        .iter()
        .filter_map(|(name, bytes)| check_variant(name, bytes, held, 1).err())
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

#[test]
fn a_damaged_value_behind_an_unbalanced_bracket_is_still_held() {
    // The first entry gains a '{', so the second (whose value lost a quote) is one
    // level deeper than it seems, and on one line no line start marks it.
    let (registry, _, held) = live_leases(89, ["lease"; 4]);
    let compact = written_with_indent(&registry, 0);
    let first_damaged = replace(&compact, "\"lease\"", b"{\"lease\"");
    let second = format!("\"{}\":", held[1]);
    let at = first_damaged
        .windows(second.len())
        .position(|w| w == second.as_bytes())
        .expect("the second entry");
    let (before, second_entry) = first_damaged.split_at(at);
    let both_damaged = [before, &replace(second_entry, ",\"pid\":", b",pid\":")].concat();
    check_variant("two damaged entries on one line", &both_damaged, held, 2)
        .unwrap_or_else(|failure| panic!("{failure}"));
}

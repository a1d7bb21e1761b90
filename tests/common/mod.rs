//! What the library's own integration tests share.

#![allow(dead_code)] // Each test binary uses its own part.

use std::ops::RangeInclusive;

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

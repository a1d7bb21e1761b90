//! The names of a registry directory's files (`REGISTRY_FILE`, `LOCK_FILE`,
//! `BOARD_FILE`): the ones the library creates, and the seed's own.
//!
//! Ports 37000-37099 are this file's.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use portlease::{BOARD_FILE, LOCK_FILE, REGISTRY_FILE, Request};

use common::registry;

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("the registry directory")
        .map(|entry| {
            let entry = entry.expect("a directory entry");
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn the_seeds_file_names_are_kept() {
    // The Python module portlease grew from opens these very names.
    assert_eq!(REGISTRY_FILE, "port_registry.json");
    assert_eq!(LOCK_FILE, "port_registry.lock");
}

#[test]
fn a_registry_directory_holds_the_named_files_and_nothing_else() {
    let (dir, allocator) = registry();
    let lease = allocator
        .allocate(&Request::new().range(37000..=37049))
        .expect("a port");
    lease.release().expect("the release");
    let mut expected: BTreeSet<String> = [REGISTRY_FILE, LOCK_FILE].map(String::from).into();
    if portlease::platform::REQUEST_BOARD {
        expected.insert(BOARD_FILE.to_owned());
    }
    assert_eq!(names_in(dir.path()), expected);
}

#[test]
fn a_damaged_registry_is_kept_aside_under_its_own_name() {
    let (dir, allocator) = registry();
    std::fs::write(dir.path().join(REGISTRY_FILE), b"{\"37051\": {\"pid\": 1,")
        .expect("a damaged registry");
    let lease = allocator
        .allocate(&Request::new().range(37050..=37099))
        .expect("a port");
    lease.release().expect("the release");
    let aside: Vec<String> = names_in(dir.path())
        .into_iter()
        .filter(|name| name.starts_with(&format!("{REGISTRY_FILE}.corrupt-")))
        .collect();
    assert_eq!(aside.len(), 1, "one copy of the damaged file: {aside:?}");
    let kept = std::fs::read(dir.path().join(&aside[0])).expect("the copy");
    assert_eq!(kept, b"{\"37051\": {\"pid\": 1,");
}

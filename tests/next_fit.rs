//! Next-fit with or without the request board: a port released a moment ago is not
//! handed out again at once, whether the cursor is the board's (host-wide) or the
//! allocator's own.
//!
//! Ports 38800-38899 are this file's.

mod common;

use std::path::Path;

use portlease::platform::REQUEST_BOARD;
use portlease::{Allocator, BOARD_FILE, Request};

use common::{platform_has, registry};

/// A board file of another layout version (all bytes 0xff) in `dir`: an allocator
/// there works without a board, as where the board's file cannot be had at all.
fn plant_foreign_board(dir: &Path) -> Vec<u8> {
    let bytes = vec![0xff; 64 * 1024];
    std::fs::write(dir.join(BOARD_FILE), &bytes).expect("the board file written");
    bytes
}

#[test]
fn without_a_board_a_released_port_is_not_handed_out_again_at_once() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let foreign = plant_foreign_board(dir.path());
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator without a board");
    let request = Request::new().range(38820..=38859);

    let first = allocator.allocate(&request).expect("a port");
    let released = first.port();
    first.release().expect("released");
    // A clone shares its allocator's cursor, as threads of one program do.
    let again = allocator.clone().allocate(&request).expect("a port");
    assert_ne!(again.port(), released, "next-fit, not first-fit");
    let third = allocator.allocate(&request).expect("a port");
    assert!(
        ![released, again.port()].contains(&third.port()),
        "{released}, {}, {}",
        again.port(),
        third.port()
    );

    let board = std::fs::read(dir.path().join(BOARD_FILE)).expect("the board file");
    assert!(
        board.starts_with(&foreign),
        "the foreign board was not used"
    );
}

#[test]
fn with_a_board_the_cursor_is_shared_by_allocators_that_share_nothing_else() {
    if !platform_has(REQUEST_BOARD, "request board") {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let one = Allocator::with_dir(dir.path()).expect("an allocator");
    let other = Allocator::with_dir(dir.path()).expect("another allocator");
    let request = Request::new().range(38860..=38899);

    let first = one.allocate(&request).expect("a port");
    let released = first.port();
    first.release().expect("released");
    let again = other.allocate(&request).expect("a port");
    assert_ne!(again.port(), released, "the board's cursor moved for both");
}

#[test]
fn a_released_port_is_not_handed_out_again_at_once() {
    let (_dir, allocator) = registry();
    let request = Request::new().range(38800..=38809);
    let mut seen = Vec::new();
    for _ in 0..10 {
        let lease = allocator.allocate(&request).expect("a port");
        seen.push(lease.port());
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen.len(),
        10,
        "ten cycles went through all ten ports: {seen:?}"
    );
}

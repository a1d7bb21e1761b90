//! An allocator keeps the registry its last transaction left, and uses it again only
//! while the file holds exactly the bytes it left: a registry another process changed
//! meanwhile, even in place and to the same size, is read anew.
//!
//! Ports 37200-37299 are this file's.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use portlease::{Allocator, Request};

/// Rewrites `path` in place (no new file, no truncation) with `text`, from another
/// process, as the seed's writer may.
fn rewrite_in_place(path: &std::path::Path, text: &[u8]) {
    let mut dd = Command::new("dd")
        .arg(format!("of={}", path.display()))
        .args(["conv=notrunc", "status=none"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("dd runs");
    dd.stdin
        .take()
        .expect("dd's stdin")
        .write_all(text)
        .expect("written to dd");
    assert!(dd.wait().expect("dd ends").success(), "dd failed");
}

#[test]
fn a_registry_changed_in_place_between_two_transactions_is_read_anew() {
    let first = 37200;
    let pool = first..=first + 3;
    // A process that holds a port by a seed entry, outside the pool for now.
    let mut holder = Command::new("sleep").arg("60").spawn().expect("sleep runs");
    let temp = tempfile::tempdir().expect("a temp dir");
    let path = temp.path().join("port_registry.json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs_f64();
    let outside = first + 50;
    std::fs::write(
        &path,
        format!(
            r#"{{"{outside}": {{"pid": {}, "timestamp": {now}}}}}"#,
            holder.id()
        ),
    )
    .expect("the registry written");

    let allocator = Allocator::with_dir(temp.path()).expect("an allocator");
    let request = Request::new().range(pool.clone());
    let lease = allocator.allocate(&request).expect("a first port");
    assert_eq!(lease.port(), first);

    // Another process moves the seed entry onto the port next-fit would give next:
    // the same bytes but for two digits, written in place.
    let before = std::fs::metadata(&path).expect("the registry");
    let text = std::fs::read_to_string(&path).expect("the registry read");
    let next = first + 1;
    let moved = text.replace(&format!("\"{outside}\""), &format!("\"{next}\""));
    assert_ne!(moved, text, "the seed entry is in the file: {text}");
    assert_eq!(moved.len(), text.len());
    rewrite_in_place(&path, moved.as_bytes());
    let after = std::fs::metadata(&path).expect("the registry");
    assert_eq!(
        (after.ino(), after.len()),
        (before.ino(), before.len()),
        "changed in place, to the same size"
    );

    let second = allocator.allocate(&request).expect("a second port");
    assert_ne!(
        second.port(),
        next,
        "port {next} is held by pid {}",
        holder.id()
    );
    assert_ne!(second.port(), first, "port {first} is leased already");
    let leases = allocator.leases().expect("the leases");
    let on_next: Vec<_> = leases.iter().filter(|l| l.port == Some(next)).collect();
    assert_eq!(on_next.len(), 1, "{leases:?}");
    assert_eq!(on_next[0].pid, Some(i64::from(holder.id())));

    let _ = holder.kill();
    let _ = holder.wait();
}

/// Run as another process by the test below: releases the port in
/// `PORTLEASE_TEST_RELEASE` ("DIR PORT") through an allocator of its own.
#[test]
#[ignore = "a helper process of another test"]
fn helper_release_in_another_process() {
    let Ok(asked) = std::env::var("PORTLEASE_TEST_RELEASE") else {
        return;
    };
    let (dir, port) = asked.split_once(' ').expect("DIR PORT");
    let allocator = Allocator::with_dir(dir).expect("an allocator");
    assert!(
        allocator
            .release(port.parse().expect("a port"))
            .expect("released")
    );
}

#[test]
fn a_lease_another_process_ended_between_two_transactions_is_seen_ended() {
    let pool = 37210..=37211;
    let temp = tempfile::tempdir().expect("a temp dir");
    let allocator = Allocator::with_dir(temp.path()).expect("an allocator");
    let request = Request::new().range(pool.clone());
    let released = allocator.allocate(&request).expect("a first port").keep()[0];
    let held = allocator.allocate(&request).expect("a second port");
    assert!(allocator.allocate(&request).is_err(), "the pool is used up");

    let status = Command::new(std::env::current_exe().expect("this test's binary"))
        .args(["--ignored", "--exact", "helper_release_in_another_process"])
        .env(
            "PORTLEASE_TEST_RELEASE",
            format!("{} {released}", temp.path().display()),
        )
        .stdout(Stdio::null())
        .status()
        .expect("the helper runs");
    assert!(status.success(), "the helper failed: {status}");

    let again = allocator
        .allocate(&request)
        .expect("the port released by the other process");
    assert_eq!(again.port(), released);
    assert_ne!(again.port(), held.port());
}

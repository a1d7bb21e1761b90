//! Damaged registries, entries from elsewhere, failed writes and unsafe paths: nothing
//! is lost and nothing unsafe is followed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use portlease::{Allocator, Error, Request};
use serde_json::json;

use crate::helpers::{first_ports, registry, registry_bytes, registry_json, unix_now, worker};

fn write_registry(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join(portlease::REGISTRY_FILE), bytes).expect("write the registry");
}

/// The bytes of the files kept aside as `port_registry.json.corrupt-*`.
fn kept_aside(dir: &Path) -> Vec<Vec<u8>> {
    crate::helpers::kept_aside(dir)
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
        .allocate(&Request::new().range(first_ports(13, 5)))
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
    let range = first_ports(14, 4);
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
    let range = first_ports(15, 4);
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
    let range = first_ports(16, 5);
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
fn a_process_killed_mid_transaction_never_leaves_a_torn_registry() {
    let (dir, _allocator) = registry();
    let range = first_ports(17, 20);
    let args = [
        range.start().to_string(),
        range.end().to_string(),
        "100000".into(),
        "0".into(),
    ];
    for round in 0..20u64 {
        let mut child = worker("cycles", dir.path(), &args)
            .spawn()
            .expect("a worker");
        std::thread::sleep(std::time::Duration::from_millis(30 + round * 7));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        if let Some(bytes) = registry_bytes(dir.path()) {
            let parsed: Result<serde_json::Map<String, serde_json::Value>, _> =
                serde_json::from_slice(&bytes);
            assert!(
                parsed.is_ok(),
                "round {round}: torn registry {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

#[test]
fn links_and_directories_others_can_write_are_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let registry_dir = dir.path().join("reg");
    let allocator = Allocator::with_dir(&registry_dir).expect("a fresh dir");
    let mode = std::fs::metadata(&registry_dir)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "created 0700");
    let lease = allocator
        .allocate(&Request::new().range(first_ports(18, 1)))
        .expect("a port");
    let file_mode = std::fs::metadata(registry_dir.join(portlease::REGISTRY_FILE))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(file_mode & 0o777, 0o600, "registry 0600");
    drop(lease);

    // A registry file that is a link, even to a good file, is not followed.
    let elsewhere = dir.path().join("elsewhere.json");
    std::fs::write(&elsewhere, "{}").expect("write");
    std::fs::remove_file(registry_dir.join(portlease::REGISTRY_FILE)).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, registry_dir.join(portlease::REGISTRY_FILE))
        .expect("symlink");
    let error = allocator.leases().expect_err("a link is refused");
    assert!(
        matches!(&error, Error::Unsafe { reason, .. } if reason.contains("symbolic link")),
        "{error}"
    );
    std::fs::remove_file(registry_dir.join(portlease::REGISTRY_FILE)).expect("rm");

    std::fs::remove_file(registry_dir.join(portlease::LOCK_FILE)).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, registry_dir.join(portlease::LOCK_FILE))
        .expect("symlink");
    assert!(matches!(allocator.leases(), Err(Error::Unsafe { .. })));
    assert_eq!(
        std::fs::read_to_string(&elsewhere).expect("read"),
        "{}",
        "the link's target untouched"
    );

    let open_to_all = dir.path().join("shared");
    std::fs::create_dir(&open_to_all).expect("mkdir");
    std::fs::set_permissions(&open_to_all, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let error = Allocator::with_dir(&open_to_all).expect_err("writable by others");
    assert!(
        error.to_string().contains("writable by group or others"),
        "{error}"
    );

    let not_mine = dir.path().join("not-mine");
    std::fs::create_dir(&not_mine).expect("mkdir");
    // SAFETY: geteuid cannot fail.
    let not_mine = if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&not_mine, Some(65534), Some(65534)).expect("chown as root");
        not_mine
    } else {
        std::path::PathBuf::from("/usr")
    };
    let error = Allocator::with_dir(&not_mine).expect_err("another user's dir");
    assert!(error.to_string().contains("owned by uid"), "{error}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let error = Allocator::with_dir(&file).expect_err("a file is no directory");
    assert!(error.to_string().contains("not a directory"), "{error}");
}

#[test]
fn a_release_on_a_damaged_registry_still_writes_the_salvage() {
    let (dir, allocator) = registry();
    let range = first_ports(100, 2);
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

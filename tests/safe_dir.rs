//! A registry directory is made private (0700, its registry 0600), and nothing unsafe
//! is followed: a registry or lock file that is a link, a directory others can write,
//! another user's directory, a file in the directory's place are refused.
//!
//! Ports 38600-38699 are this file's.

use std::os::unix::fs::PermissionsExt;

use portlease::{Allocator, Error, Request};

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
        .allocate(&Request::new().range(38600..=38600))
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

//! The commands that only read (`list`, `check`, `info`) create nothing: a missing
//! registry holds no leases, and a registry the user may read but not write is read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helpers::{binary, file_names, first_ports, portlease_in, run_within};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn reading_commands_on_a_missing_registry_find_nothing_and_create_nothing() {
    let root = tempfile::tempdir().expect("a temp dir");
    let missing = root.path().join("nowhere");
    let port = first_ports(82, 1).start().to_string();
    for args in [
        vec!["list"],
        vec!["list", "--json"],
        vec!["check", &port],
        vec!["info"],
    ] {
        let outcome = run_within(portlease_in(&missing, &args), LIMIT);
        outcome.success();
        assert!(!outcome.stderr().contains("error"), "{}", outcome.stderr());
        assert!(!missing.exists(), "{args:?} created the directory");
    }
}

/// Runs the binary as user nobody, on registry `dir`.
fn as_nobody(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(binary())
        .args(args)
        .env("PORTLEASE_DIR", dir)
        .env_remove("RUST_BACKTRACE");
    command
}

#[test]
fn reading_commands_work_on_a_registry_the_user_may_not_write() {
    let root = tempfile::tempdir().expect("a temp dir");
    let dir = root.path().join("registry");
    let range = crate::helpers::range_arg(82, 1);
    let port = *first_ports(82, 1).start();
    run_within(
        portlease_in(
            &dir,
            &["alloc", "--range", &range, "--ttl", "600", "--label", "ro"],
        ),
        LIMIT,
    )
    .success();
    // Readable by all, writable by its owner (root) alone.
    for path in [root.path(), dir.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for name in file_names(&dir) {
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    let before = file_names(&dir);
    let probe = as_nobody(&dir, &["--version"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        let what = format!("running the binary as user nobody ({probe:?})");
        crate::helpers::required(false, &what, "run the tests as root, as CI does");
        return;
    }

    let listed: Vec<serde_json::Value> =
        run_within(as_nobody(&dir, &["list", "--json"]), LIMIT).json();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["port"], port);
    assert_eq!(listed[0]["label"], "ro");
    let checked = run_within(as_nobody(&dir, &["check", &port.to_string()]), LIMIT);
    assert_eq!(checked.code(), 5, "leased: {}", checked.stderr());
    assert!(checked.stdout().contains("leased"), "{}", checked.stdout());
    let info = run_within(as_nobody(&dir, &["info"]), LIMIT).success();
    assert!(info.contains("1 (0 stale)"), "{info}");
    assert_eq!(file_names(&dir), before, "nothing created");

    // Without a lock file it may open, it reads without the lock, and says so.
    std::fs::set_permissions(
        dir.join(portlease::LOCK_FILE),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let unlocked = run_within(as_nobody(&dir, &["list", "--json"]), LIMIT);
    let listed: Vec<serde_json::Value> = unlocked.json();
    assert_eq!(listed.len(), 1);
    assert!(
        unlocked.stderr().contains("without its lock"),
        "{}",
        unlocked.stderr()
    );
}

#[test]
fn list_escapes_control_characters_in_labels() {
    let root = tempfile::tempdir().expect("a temp dir");
    let dir = root.path().join("registry");
    let range = crate::helpers::range_arg(83, 1);
    run_within(
        portlease_in(
            &dir,
            &[
                "alloc",
                "--range",
                &range,
                "--ttl",
                "600",
                "--label",
                "evil\x1b[2J\rlabel",
            ],
        ),
        LIMIT,
    )
    .success();
    let table = run_within(portlease_in(&dir, &["list"]), LIMIT).success();
    assert!(
        !table.contains('\x1b') && !table.contains('\r'),
        "{table:?}"
    );
    assert!(table.contains("evil\\u{1b}[2J\\rlabel"), "{table}");
}

#[test]
fn release_escapes_control_characters_in_the_keys_it_names() {
    let root = tempfile::tempdir().expect("a temp dir");
    let dir = root.path().join("registry");
    std::fs::create_dir(&dir).expect("the registry dir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("mode 0700");
    // A key no port is written under, as a damaged or hostile registry may hold.
    let registry = serde_json::json!({
        "\u{1b}[2Jkey\r": {
            "pid": 1, "timestamp": crate::helpers::unix_now(), "owner": "none",
            "ttl": 600.0, "proto": "tcp", "label": "odd"
        }
    });
    std::fs::write(dir.join(portlease::REGISTRY_FILE), registry.to_string()).expect("write");
    let said = run_within(
        portlease_in(&dir, &["release", "--label", "odd", "--force"]),
        LIMIT,
    )
    .success();
    assert!(!said.contains('\x1b') && !said.contains('\r'), "{said:?}");
    assert!(said.contains("\\u{1b}[2Jkey\\r"), "{said}");
}

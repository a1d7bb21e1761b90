//! `Allocator::new()`, on the default registry, when another user (nobody, through
//! `setpriv`) made its name first. Each case runs this test binary again with `HOME`,
//! `XDG_*` and `TMPDIR` in temp dirs, so no test touches the real default registry.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use portlease::{Allocator, Owner, Request};

const HELPER_ENV: &str = "PORTLEASE_DEFAULT_DIR_HELPER";

/// Makes `path` (a directory, or else a file) as nobody; `false` (the test skipped,
/// saying why) where no user can be switched to (not root).
fn squat_as_nobody(path: &Path, directory: bool) -> bool {
    let script = if directory {
        "mkdir -m 700 \"$1\""
    } else {
        "echo squatted > \"$1\""
    };
    let status = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["sh", "-c", script, "sh"])
        .arg(path)
        .stdin(Stdio::null())
        .status();
    if status.is_ok_and(|s| s.success()) {
        return true;
    }
    assert_ne!(
        rustix::process::geteuid().as_raw(),
        0,
        "root could not run setpriv as nobody"
    );
    common::required(
        false,
        "root, to make a file as another user",
        "run the tests as root, as CI does",
    )
}

/// A temp dir anyone may write, sticky, as `/dev/shm` is.
fn public_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod 1777");
    dir
}

/// Runs [`allocate_on_the_default`] in a child with only `env`: its one line.
fn default_allocation(env: &[(&str, &Path)]) -> String {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .env_clear()
        .env(HELPER_ENV, "1")
        .args([
            "allocate_on_the_default",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    stdout
        .lines()
        .find_map(|l| l.split_once("DEFAULT ").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("no result: {stdout}"))
}

#[test]
#[ignore = "run by the tests below, in a child with an environment of its own"]
fn allocate_on_the_default() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let outcome = Allocator::new().and_then(|allocator| {
        let request = Request::new()
            .range(38120..=38129)
            .owner(Owner::Nobody)
            .ttl(Some(Duration::from_secs(60)));
        allocator.allocate(&request).map(|lease| lease.keep())?;
        Ok(allocator.dir().to_path_buf())
    });
    match outcome {
        Ok(dir) => println!("DEFAULT ok {}", dir.display()),
        Err(error) => println!("DEFAULT error {error}"),
    }
}

#[test]
fn a_squatted_runtime_dir_leaves_the_default_allocator_a_private_one() {
    for directory in [true, false] {
        let runtime = public_dir();
        let squatted = runtime.path().join("portlease");
        if !squat_as_nobody(&squatted, directory) {
            return;
        }
        let home = tempfile::tempdir().expect("a temp dir");
        let line =
            default_allocation(&[("XDG_RUNTIME_DIR", runtime.path()), ("HOME", home.path())]);
        let private = home.path().join(".local/state/portlease");
        assert_eq!(line, format!("ok {}", private.display()));
        let meta = std::fs::metadata(&private).expect("made");
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::symlink_metadata(&squatted)
                .expect("still there")
                .uid(),
            65534
        );
    }
}

#[test]
fn a_squatted_last_resort_fails_the_default_allocator_saying_what_to_do() {
    for directory in [true, false] {
        let tmp = public_dir();
        let uid = rustix::process::geteuid().as_raw();
        let squatted = tmp.path().join(format!("portlease-{uid}"));
        if !squat_as_nobody(&squatted, directory) {
            return;
        }
        let missing = tmp.path().join("no-runtime-dir");
        let line = default_allocation(&[
            ("XDG_RUNTIME_DIR", missing.as_path()),
            ("TMPDIR", tmp.path()),
        ]);
        assert!(line.starts_with("error "), "{line}");
        for needle in [
            squatted.display().to_string().as_str(),
            "uid 65534",
            "removed",
            "PORTLEASE_DIR",
        ] {
            assert!(line.contains(needle), "{needle:?} not in {line}");
        }
    }
}

//! The default registry when another user got to its name first: a directory or a
//! file made by a real second user (nobody, through `setpriv`). The real binary runs
//! with `HOME`, `XDG_*` and `TMPDIR` pointing into temp dirs, so no test touches the
//! real default registry.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::helpers::{Outcome, binary, first_ports, range_arg};

/// The other user: nobody.
const NOBODY: &str = "65534";

/// What the second user leaves in the registry's place.
#[derive(Clone, Copy, Debug)]
enum Squat {
    Directory,
    File,
}

/// Makes `path` as nobody; `false` (with the reason printed) where `setpriv` cannot
/// switch users (not root, or no `setpriv`).
fn squat_as_nobody(path: &Path, squat: Squat) -> bool {
    let script = match squat {
        Squat::Directory => "mkdir -m 700 \"$1\"",
        Squat::File => "echo squatted > \"$1\"",
    };
    let status = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .args(["sh", "-c", script, "sh"])
        .arg(path)
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => {
            let owner = std::os::unix::fs::MetadataExt::uid(
                &std::fs::symlink_metadata(path).expect("the squat is there"),
            );
            assert_eq!(owner, 65534, "nobody owns {}", path.display());
            true
        }
        outcome => {
            assert!(
                rustix::process::geteuid().as_raw() != 0,
                "root could not run setpriv as nobody: {outcome:?}"
            );
            let what = format!("acting as another user ({outcome:?})");
            crate::helpers::required(false, &what, "run the tests as root, as CI does")
        }
    }
}

/// A directory anyone may write, sticky, as `/dev/shm` and `/tmp` are.
fn public_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod 1777");
    dir
}

/// The binary with no `PORTLEASE_DIR` and only the environment given.
fn portlease_with(env: &[(&str, &Path)], args: &[&str]) -> Outcome {
    let mut command = Command::new(binary());
    command.env_clear().args(args).stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    Outcome(command.output().expect("the binary runs"))
}

#[test]
fn a_runtime_dir_squatted_by_another_user_is_passed_over_for_a_private_default() {
    let range = range_arg(63, 10);
    for squat in [Squat::Directory, Squat::File] {
        // A runtime directory that another user can write (as /dev/shm), and one of
        // another user (an XDG_RUNTIME_DIR inherited through `su`): in both, nobody
        // made `portlease` first.
        let public = public_dir();
        let others = public_dir();
        let theirs = others.path().join("runtime");
        if !squat_as_nobody(&theirs, Squat::Directory) {
            return;
        }
        for runtime in [public.path(), theirs.as_path()] {
            let squatted = runtime.join("portlease");
            if !squat_as_nobody(&squatted, squat) {
                return;
            }
            let home = tempfile::tempdir().expect("a temp dir");
            let env = [("XDG_RUNTIME_DIR", runtime), ("HOME", home.path())];
            let outcome = portlease_with(&env, &["alloc", "--range", &range, "--ttl", "60"]);
            let stderr = outcome.stderr();
            outcome.success();
            let private = home.path().join(".local/state/portlease");
            assert!(
                private.join(portlease::REGISTRY_FILE).is_file(),
                "{squat:?} in {}: the lease is in {}: {stderr}",
                runtime.display(),
                private.display()
            );
            let warning = stderr
                .lines()
                .find(|line| line.starts_with("portlease: warning: not using"))
                .unwrap_or_else(|| panic!("no warning: {stderr}"));
            assert!(
                warning.contains(&squatted.display().to_string()),
                "{warning}"
            );
            assert!(warning.contains("PORTLEASE_DIR"), "{warning}");
            assert!(
                warning.contains(&format!("using {} instead", private.display())),
                "{warning}"
            );
            // The readers find the same registry.
            let listed = portlease_with(&env, &["list", "--json"]).success();
            let first = first_ports(63, 1).start().to_string();
            assert!(listed.contains(&first), "{listed}");
            // The squat is left as it was.
            let meta = std::fs::symlink_metadata(&squatted).expect("still there");
            assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
        }
        // Nobody's files in root's temp dirs: removed as root, by the TempDirs.
    }
}

#[test]
fn a_squatted_last_resort_default_fails_in_one_line_saying_what_to_do() {
    let range = range_arg(65, 10);
    for squat in [Squat::Directory, Squat::File] {
        let tmp = public_dir();
        let uid = rustix::process::geteuid().as_raw();
        let squatted = tmp.path().join(format!("portlease-{uid}"));
        if !squat_as_nobody(&squatted, squat) {
            return;
        }
        // No HOME and a runtime directory that does not exist (so /run/user is not
        // looked at): the last resort, `portlease-UID` in $TMPDIR.
        let missing = tmp.path().join("no-runtime-dir");
        let env = [
            ("XDG_RUNTIME_DIR", missing.as_path()),
            ("TMPDIR", tmp.path()),
        ];
        let outcome = portlease_with(&env, &["alloc", "--range", &range, "--ttl", "60"]);
        let stderr = outcome.fails(1, &squatted.display().to_string());
        for needle in ["uid 65534", "removed", "PORTLEASE_DIR"] {
            assert!(
                stderr.contains(needle),
                "{squat:?}: {needle:?} not in {stderr}"
            );
        }
        // PORTLEASE_DIR still wins over everything.
        let chosen = tempfile::tempdir().expect("a temp dir");
        let env = [
            ("XDG_RUNTIME_DIR", missing.as_path()),
            ("TMPDIR", tmp.path()),
            ("PORTLEASE_DIR", chosen.path()),
        ];
        portlease_with(&env, &["alloc", "--range", &range, "--ttl", "60"]).success();
        assert!(chosen.path().join(portlease::REGISTRY_FILE).is_file());
    }
}

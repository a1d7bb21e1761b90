//! First use without surprises: the reading commands work where nothing ran yet and
//! create nothing; common slips are answered with the fix; completions offer the
//! fixed values; tokens are checked; an owner of another PID namespace is named so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use portlease::LeaseInfo;
use serde::Deserialize;

use crate::helpers::{Outcome, Run, binary, exec_in_new_pid_namespace, first_ports, range_arg};

/// Every path under `root`, sorted.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("a dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            paths.push(path);
        }
    }
    paths.sort();
    paths
}

/// The binary with no `PORTLEASE_DIR` and every place the default registry may be
/// in the private temp dir `root`: a machine where nothing ran yet.
fn fresh_machine(root: &Path, args: &[&str]) -> Outcome {
    let mut command = Command::new(binary());
    command.env_clear().args(args).stdin(Stdio::null());
    for (name, sub) in [
        ("HOME", "home"),
        ("XDG_RUNTIME_DIR", "run"),
        ("XDG_STATE_HOME", "state"),
        ("TMPDIR", "tmp"),
    ] {
        let dir = root.join(sub);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        command.env(name, dir);
    }
    Outcome(command.output().expect("the binary runs"))
}

#[derive(Deserialize)]
struct Info {
    dir: PathBuf,
    exists: bool,
    leases: usize,
}

#[test]
fn list_info_and_check_work_where_nothing_ran_yet_and_create_nothing() {
    let root = tempfile::tempdir().expect("a temp dir");
    fresh_machine(root.path(), &["--version"]).success();
    let before = tree(root.path());

    let listed: Vec<LeaseInfo> = fresh_machine(root.path(), &["list", "--json"]).json();
    assert!(listed.is_empty());
    let table = fresh_machine(root.path(), &["list"]);
    assert_eq!(table.success(), "", "no leases, no rows");
    assert!(!table.stderr().contains("error"), "{}", table.stderr());
    let info: Info = fresh_machine(root.path(), &["info", "--json"]).json();
    assert!(!info.exists);
    assert_eq!(info.leases, 0);
    assert!(info.dir.starts_with(root.path()), "{}", info.dir.display());
    let text = fresh_machine(root.path(), &["info"]).success();
    assert!(text.contains("does not exist yet"), "{text}");
    let port = first_ports(116, 1).start().to_string();
    fresh_machine(root.path(), &["check", &port]).success();

    assert_eq!(
        tree(root.path()),
        before,
        "a reading command created something"
    );
}

#[test]
fn a_named_registry_that_does_not_exist_is_read_as_empty_and_not_created() {
    let root = tempfile::tempdir().expect("a temp dir");
    let missing = root.path().join("nowhere");
    let listed: Vec<LeaseInfo> = Run::new(&missing).args(["list", "--json"]).run().json();
    assert!(listed.is_empty());
    let info: Info = Run::new(&missing).args(["info", "--json"]).run().json();
    assert_eq!((info.dir, info.exists), (missing.clone(), false));
    assert!(!missing.exists());
}

#[test]
fn exec_without_double_dash_says_to_put_it_before_the_command() {
    let dir = tempfile::tempdir().expect("a temp dir");
    Run::new(dir.path())
        .args(["exec", "python3", "-c", "pass"])
        .run()
        .fails(2, "put -- before the command");
    Run::new(dir.path())
        .args(["exec", "--range", &range_arg(116, 5), "python3", "x"])
        .run()
        .fails(2, "portlease exec [OPTIONS] -- python3");
    assert!(!dir.path().join(portlease::REGISTRY_FILE).exists());
}

#[test]
fn alloc_with_a_number_asks_whether_count_was_meant() {
    let dir = tempfile::tempdir().expect("a temp dir");
    Run::new(dir.path())
        .args(["alloc", "5"])
        .run()
        .fails(2, "did you mean --count 5?");
    let stderr = Run::new(dir.path())
        .args(["alloc", "8080"])
        .run()
        .fails(2, "--prefer 8080");
    assert!(stderr.contains("--count 8080"), "{stderr}");
}

#[test]
fn an_empty_portlease_dir_is_named_with_the_fix() {
    let dir = tempfile::tempdir().expect("a temp dir");
    for args in [vec!["list"], vec!["alloc", "--range", &range_arg(116, 5)]] {
        let outcome = Run::new(dir.path())
            .env("PORTLEASE_DIR", Path::new(""))
            .args(&args)
            .run();
        let stderr = outcome.fails(2, "$PORTLEASE_DIR is set but empty");
        assert!(stderr.contains("unset"), "{stderr}");
        assert!(!stderr.contains("a value is required"), "{stderr}");
    }
    // Beside a --dir, an empty variable is no slip: the --dir is used.
    let listed = Run::new(dir.path())
        .env("PORTLEASE_DIR", Path::new(""))
        .args(["--dir", &dir.path().display().to_string(), "list", "--json"])
        .run();
    assert_eq!(listed.success().trim(), "[]");
}

/// The lines of the `case` arm for option `option` in the bash script, up to `;;`.
fn bash_arm<'a>(script: &'a str, option: &str) -> &'a str {
    let start = script
        .find(&format!("{option})"))
        .unwrap_or_else(|| panic!("no arm for {option}"));
    let rest = &script[start..];
    &rest[..rest.find(";;").expect("the arm ends")]
}

#[test]
fn completions_offer_fixed_values_and_no_file_names_for_ports() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let bash = Run::new(dir.path())
        .args(["completions", "bash"])
        .run()
        .success();
    assert!(
        bash_arm(&bash, "--proto").contains("compgen -W \"tcp udp both\""),
        "{}",
        bash_arm(&bash, "--proto")
    );
    for option in ["--range", "--prefer", "--ttl", "--owner-pid", "--token"] {
        let arm = bash_arm(&bash, option);
        assert!(
            !arm.contains("compgen -f"),
            "{option} offers file names: {arm}"
        );
    }
    assert!(
        bash.contains("alloc release renew list gc check exec info serve hand completions man\""),
        "`man` offers the subcommands"
    );
    let fish = Run::new(dir.path())
        .args(["completions", "fish"])
        .run()
        .success();
    assert!(fish.contains("tcp") && fish.contains("udp") && fish.contains("both"));
}

#[test]
fn a_malformed_token_is_a_usage_error_and_an_unknown_one_says_so() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *first_ports(120, 1).start();
    let range = format!("{port}-{port}");
    Run::new(dir.path())
        .args(["alloc", "--range", &range, "--ttl", "60"])
        .run()
        .success();
    let before = crate::helpers::registry_bytes(dir.path());
    for garbage in ["garbage", "1-2", "12-ab-XY", ""] {
        Run::new(dir.path())
            .args(["release", "--token", garbage])
            .run()
            .fails(2, "is not a lease token");
    }
    Run::new(dir.path())
        .args(["release", "--token", "1a2b-17d0c3e4f5a6b7c8-0"])
        .run()
        .fails(1, "no lease with token \"1a2b-17d0c3e4f5a6b7c8-0\"");
    assert_eq!(
        crate::helpers::registry_bytes(dir.path()),
        before,
        "nothing changed"
    );
}

#[test]
fn list_names_an_owner_in_another_pid_namespace_as_such() {
    if !crate::helpers::platform_has(portlease::platform::PROCESS_IDENTITY, "PID namespaces") {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *first_ports(121, 1).start();
    let Some(_owner) = exec_in_new_pid_namespace(dir.path(), port) else {
        return;
    };
    let leases: Vec<LeaseInfo> = Run::new(dir.path()).args(["list", "--json"]).run().json();
    let lease = leases
        .iter()
        .find(|l| l.port == Some(port))
        .expect("the lease");
    assert!(lease.owner_in_other_pid_namespace, "{lease:?}");
    let table = Run::new(dir.path()).args(["list"]).run().success();
    let row = table
        .lines()
        .find(|line| line.starts_with(&port.to_string()))
        .expect("a row");
    assert!(row.contains("another PID namespace"), "{row}");

    // An owner of this namespace is not said to be elsewhere.
    let mine = *first_ports(121, 2).end();
    let range = format!("{mine}-{mine}");
    Run::new(dir.path())
        .args([
            "alloc",
            "--range",
            &range,
            "--owner-pid",
            &std::process::id().to_string(),
        ])
        .run()
        .success();
    let leases: Vec<LeaseInfo> = Run::new(dir.path()).args(["list", "--json"]).run().json();
    let lease = leases.iter().find(|l| l.port == Some(mine)).expect("mine");
    assert!(!lease.owner_in_other_pid_namespace, "{lease:?}");
}

/// Where `serve` is not built (other Unix systems), asking for it says so, and what to
/// use instead, after checking its arguments as Linux does; nothing is created.
#[test]
fn serve_without_linux_says_what_to_use_instead() {
    if cfg!(linux_kernel) {
        crate::helpers::skipped("this build has `serve` (Linux)");
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let registry = dir.path().join("registry");
    let socket = dir.path().join("socket");
    Run::new(&registry)
        .args(["serve", "--max-connections", "0"])
        .run()
        .fails(2, "must be above 0");
    let socket = socket.to_str().expect("a UTF-8 path");
    let stderr = Run::new(&registry)
        .args(["serve", "--address", socket])
        .run()
        .fails(1, "serve needs Linux");
    assert!(stderr.contains("portlease alloc"), "{stderr}");
    assert!(!registry.exists() && !dir.path().join("socket").exists());
}

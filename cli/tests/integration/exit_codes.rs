//! One exit code per class of error, decided in one place (`cli/src/error.rs`): each
//! class run for real, and each code listed in `--help` and the manual page.

use std::net::TcpListener;
use std::process::{Command, Stdio};

use crate::helpers::{Run, first_ports, range_arg, start_worker_until, worker};

/// A `sleep` that does not descend from this test (its parent, `sh`, has ended): a
/// running holder outside the shell `portlease` runs in. Killed, by its pid, when
/// dropped.
struct Sleeper(i32);

impl Sleeper {
    fn start() -> Sleeper {
        let output = Command::new("sh")
            .args(["-c", "sleep 120 >/dev/null 2>&1 </dev/null & echo $!"])
            .stderr(Stdio::inherit())
            .output()
            .expect("sh runs");
        let pid = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("the sleeper's pid");
        Sleeper(pid)
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of the sleeper this test started.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[test]
fn failures_of_the_registry_state_exit_1() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let free = *first_ports(84, 1).start();
    // NotLeased: renew a port never leased.
    Run::new(dir.path())
        .args(["renew", &free.to_string()])
        .run()
        .fails(1, "is not leased");
    // Unsafe: a registry "directory" that is a file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("a file");
    Run::new(&file)
        .args(["alloc", "--range", &range_arg(84, 5)])
        .run()
        .fails(1, "not a directory");
}

#[test]
fn bad_arguments_and_impossible_requests_exit_2() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(84, 5);
    Run::new(dir.path())
        .args(["alloc", "--range", "30000-20000"])
        .run()
        .fails(2, "runs backwards");
    // NoSuchProcess: a pid past the kernel's pid_max names no process.
    Run::new(dir.path())
        .args(["alloc", "--range", &range, "--owner-pid", "4194305"])
        .run()
        .fails(2, "no process with pid 4194305");
    assert!(
        !dir.path().join(portlease::REGISTRY_FILE).exists()
            || crate::helpers::registry_json(dir.path()).is_empty(),
        "nothing was leased"
    );
}

#[test]
fn no_free_port_exits_3() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *first_ports(89, 1).start();
    let range = format!("{port}-{port}");
    Run::new(dir.path())
        .args(["alloc", "--range", &range, "--ttl", "60"])
        .run()
        .success();
    Run::new(dir.path())
        .args(["alloc", "--range", &range])
        .run()
        .fails(3, "no port free");
}

#[test]
fn a_held_lock_exits_4() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (mut holder, _) = start_worker_until(worker("lock", dir.path()), "LOCKED");
    let outcome = Run::new(dir.path())
        .args([
            "alloc",
            "--range",
            &range_arg(89, 3),
            "--lock-timeout",
            "0.2",
        ])
        .run();
    holder.0.kill().expect("SIGKILL");
    holder.0.wait().expect("reap");
    outcome.fails(4, "timed out after");
}

#[test]
fn check_of_a_bound_port_exits_5() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *first_ports(112, 1).start();
    let _bound = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let outcome = Run::new(dir.path())
        .args(["check", &port.to_string()])
        .run();
    assert_eq!(outcome.code(), 5, "{}", outcome.stderr());
}

#[test]
fn a_lease_of_a_process_outside_this_shell_is_refused_with_exit_6() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *first_ports(112, 2).end();
    let range = format!("{port}-{port}");
    let sleeper = Sleeper::start();
    let pid = sleeper.0;
    Run::new(dir.path())
        .args(["alloc", "--range", &range, "--owner-pid", &pid.to_string()])
        .run()
        .success();
    let release = Run::new(dir.path())
        .args(["release", &port.to_string()])
        .run();
    let hand = Run::new(dir.path())
        .args([
            "hand",
            &port.to_string(),
            "--to",
            &std::process::id().to_string(),
        ])
        .run();
    drop(sleeper);
    release.fails(6, "add --force");
    hand.fails(6, "add --force");
}

#[test]
fn help_and_the_manual_page_list_every_exit_code() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let help = Run::new(dir.path()).args(["--help"]).run().success();
    let page = Run::new(dir.path()).args(["man"]).run().success();
    let status = page
        .split_once(".SH \"EXIT STATUS\"")
        .map(|(_, rest)| rest.split(".SH").next().unwrap_or(rest))
        .expect("the page has an EXIT STATUS section");
    for code in ["0", "1", "2", "3", "4", "5", "6", "141"] {
        let line = format!("\n  {code} ");
        assert!(
            help.contains(&line),
            "--help lacks exit code {code}: {help}"
        );
        assert!(
            status.contains(&line),
            "the page lacks exit code {code}: {status}"
        );
    }
    for case in [
        "never leased",
        "unsafe",
        "no running process",
        "most",
        "--token",
    ] {
        assert!(status.contains(case), "{case:?} not in {status}");
    }
    assert!(page.contains(".SH EXAMPLES") || page.contains(".SH \"EXAMPLES\""));
    assert!(
        !page.contains(".SH EXTRA"),
        "the codes are not in clap's EXTRA section"
    );
}

//! Releases that name their lease: another shell's running job (or one a launcher of
//! sessions started) keeps its lease unless forced, a token ends exactly one lease
//! however often it is retried, and leases can be handed on to a process started after
//! them.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use portlease::LeaseInfo;

use crate::helpers::{
    Run, binary, first_ports, ports, registry, registry_bytes, registry_json, shell,
};

/// `portlease exec` holding `port` for `sleep 600`, started outside any test shell, in
/// a process group of its own; returns once the command runs (and so holds the lease).
fn job_on(dir: &std::path::Path, port: u16) -> Child {
    let mut job = Command::new(binary())
        .process_group(0)
        .env("PORTLEASE_DIR", dir)
        .args(["exec", "--range", &format!("{port}-{port}"), "--"])
        .args(["sh", "-c", "echo running; exec sleep 600"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("portlease exec runs");
    let stdout = job.stdout.take().expect("the job's stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a line from the job");
    assert_eq!(line.trim(), "running");
    job
}

/// Kills a process and, for a `job_on`, its whole process group: `exec` and its
/// `sleep`, which would otherwise outlive the test holding its stderr (and so hang a
/// piped `cargo test`).
fn stop(mut job: Child) {
    if let Ok(group) = i32::try_from(job.id()) {
        // SAFETY: `kill` takes any pid; a negative one names a process group (none
        // where `job` leads no group of its own: then only `job` is killed, below).
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    let _ = job.kill();
    let _ = job.wait();
}

fn list(dir: &std::path::Path) -> Vec<LeaseInfo> {
    Run::new(dir).args(["list", "--json"]).run().json()
}

#[test]
fn another_shell_cannot_release_a_running_jobs_lease_without_force() {
    let (dir, _allocator) = registry();
    let port = *first_ports(104, 1).start();
    let job = job_on(dir.path(), port);

    let refused = shell(dir.path(), &format!("\"$PL\" release {port}"));
    let stderr = refused.fails(6, "--force");
    assert!(
        stderr.contains(&format!("port {port} is held by pid")),
        "{stderr}"
    );
    assert!(refused.stdout().is_empty(), "{}", refused.stdout());
    assert_eq!(list(dir.path()).len(), 1, "the job keeps its lease");

    let forced = shell(dir.path(), &format!("\"$PL\" release --force {port}"));
    assert_eq!(forced.success().trim(), format!("released {port}"));
    assert!(list(dir.path()).is_empty());
    stop(job);
}

#[test]
fn a_shell_may_release_the_lease_of_a_job_it_started() {
    let (dir, _allocator) = registry();
    let port = *first_ports(104, 2).end();
    let script = format!(
        "\"$PL\" exec --range {port}-{port} -- sleep 600 & job=$!
         while \"$PL\" check {port} >/dev/null; do sleep 0.02; done
         \"$PL\" release {port}; code=$?
         kill $job; wait $job
         exit $code"
    );
    let released = shell(dir.path(), &script);
    assert_eq!(released.success().trim(), format!("released {port}"));
}

#[test]
fn a_retried_token_release_ends_nothing_else() {
    let (dir, _allocator) = registry();
    let port = *first_ports(105, 1).start();
    let range = format!("{port}-{port}");
    let alloc = || -> serde_json::Value {
        Run::new(dir.path())
            .args(["alloc", "--json", "--range", &range])
            .run()
            .json()
    };
    let first = alloc();
    let token = first["token"]
        .as_str()
        .expect("alloc --json prints a token");
    let release = || {
        Run::new(dir.path())
            .args(["release", "--token", token])
            .run()
    };
    assert_eq!(release().success().trim(), format!("released {port}"));

    let second = alloc();
    assert_eq!(second["ports"][0], port, "the port goes out again");
    assert_ne!(second["token"], first["token"]);
    let retried = release();
    // The retry releases nothing, and says so: exit 1, naming the token.
    retried.fails(1, "no lease with token");
    assert_eq!(retried.stdout(), "", "the retry released nothing");
    assert_eq!(
        registry_json(dir.path())[&port.to_string()]["token"],
        second["token"],
        "the second lease is untouched"
    );
}

#[test]
fn hand_gives_a_lease_to_a_running_process_until_it_ends() {
    let (dir, _allocator) = registry();
    let port = *first_ports(107, 1).start();
    let alloc = Run::new(dir.path())
        .args(["alloc", "--range", &format!("{port}-{port}")])
        .run();
    assert_eq!(alloc.success().trim(), port.to_string());
    let mut server = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep runs");
    let pid = server.id();

    let handed = Run::new(dir.path())
        .args(["hand", &port.to_string(), "--to", &pid.to_string()])
        .run();
    assert_eq!(
        handed.success().trim(),
        format!("handed {port} to pid {pid}")
    );
    let leases = list(dir.path());
    assert_eq!(leases[0].pid, Some(pid.into()));
    assert!(leases[0].owned_by_process);
    assert_eq!(leases[0].ttl_secs, None, "it lasts while the server runs");

    server.kill().expect("kill");
    server.wait().expect("reaped");
    let leases = list(dir.path());
    assert!(leases[0].stale, "the lease ended with its process");
}

#[test]
fn hand_refuses_bad_targets_and_other_shells_leases() {
    let (dir, _allocator) = registry();
    let ports = first_ports(107, 3);
    let (held, free) = (*ports.start() + 1, *ports.end());
    Run::new(dir.path())
        .args(["hand", &free.to_string(), "--to", "1"])
        .run()
        .fails(1, &format!("port {free} is not leased"));
    Run::new(dir.path())
        .args(["alloc", "--range", &format!("{free}-{free}")])
        .run()
        .success();
    Run::new(dir.path())
        .args(["hand", &free.to_string(), "--to", "999999999"])
        .run()
        .fails(2, "no process with pid 999999999");

    let job = job_on(dir.path(), held);
    let mine = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep runs");
    let refused = shell(
        dir.path(),
        &format!("\"$PL\" hand {held} {free} --to {}", mine.id()),
    );
    refused.fails(6, "hand on it from there, or add --force");
    assert_eq!(
        registry_json(dir.path())[&free.to_string()]["owner"],
        "none",
        "all of them or none"
    );
    stop(job);
    stop(mine);
}

/// A launcher that starts each command in a session of its own (a terminal
/// multiplexer's server, a user service manager) is no shell: a `release` it starts
/// must not end the lease of a job it started earlier in another session.
#[test]
fn release_started_by_a_launcher_of_sessions_spares_a_job_in_another_session() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *ports(126).start();
    let range = format!("{port}-{port}");
    let mut job = Command::new("setsid")
        .arg(binary())
        .args(["exec", "--range", &range, "--", "sleep", "30"])
        .env("PORTLEASE_DIR", dir.path())
        .spawn()
        .expect("setsid runs");
    let key = port.to_string();
    while registry_bytes(dir.path()).is_none_or(|_| !registry_json(dir.path()).contains_key(&key)) {
        assert!(
            job.try_wait().expect("wait").is_none(),
            "the job ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let release = Command::new("setsid")
        .arg(binary())
        .args(["release", &key])
        .env("PORTLEASE_DIR", dir.path())
        .output()
        .expect("setsid runs");
    let leased = registry_json(dir.path()).contains_key(&key);
    // setsid made the job lead a process group: `exec` and its `sleep` end together.
    stop(job);
    assert_eq!(
        release.status.code(),
        Some(6),
        "refused: {}",
        String::from_utf8_lossy(&release.stderr)
    );
    assert!(leased, "the job's lease is still there");
}

/// In a PID namespace entered without a session of its own (a container started
/// from a shell, as CI runners are), the session's leader lives outside and
/// `getsid` reads 0. A `release` there must still judge kinship, not crash.
#[test]
fn release_in_a_namespace_whose_session_leader_is_outside_judges_kinship() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *ports(30).start();
    // pid 1 is the outer sh; the job and the inner sh (the `release`'s shell) are
    // its children, so the job is no kin of the shell the release runs in.
    let script = format!(
        "\"$PL\" exec --range {port}-{port} -- sleep 30 & job=$!
         until \"$PL\" list --json 2>/dev/null | grep -q '\"port\": *{port}'; do sleep 0.02; done
         sh -c '\"$PL\" release {port}; echo \"exit $?\"'
         kill $job; wait"
    );
    let output = crate::helpers::in_new_pid_namespace()
        .args(["sh", "-c", &script])
        .env("PL", binary())
        .env("PORTLEASE_DIR", dir.path())
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .expect("unshare runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !crate::helpers::required(
        !stderr.contains("unshare failed") && !stderr.contains("Operation not permitted"),
        "unshare",
        "run the tests as root, as CI does",
    ) {
        return;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("exit 6"),
        "the job's lease is refused to a release from another shell; \
         stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
}

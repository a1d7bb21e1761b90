//! `portlease exec`: ports passed to a command, released however it ends.

#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "pids and ports the test itself started or leased fit the C types"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portlease::LeaseInfo;

use crate::helpers::{Run, binary, range_arg, registry_json};

/// Waits (a bounded while) until the registry holds `count` leases.
fn wait_for_leases(dir: &Path, count: usize) -> Vec<LeaseInfo> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leases: Vec<LeaseInfo> = Run::new(dir).args(["list", "--json"]).run().json();
        if leases.len() == count || Instant::now() > deadline {
            return leases;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ports_reach_the_command_in_its_environment_and_arguments() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = Run::new(dir.path())
        .args(["exec", "--range", &range_arg(61, 10), "-n", "2", "--"])
        .args([
            "sh",
            "-c",
            "echo \"$PORT|$PORTLEASE_PORTS|$1|$2|$3\"",
            "sh",
            "{PORT}",
            "{PORT0}",
            "--port={PORT1}",
        ])
        .run()
        .success();
    let fields: Vec<&str> = out.trim().split('|').collect();
    let ports: Vec<&str> = fields[1].split(' ').collect();
    assert_eq!(ports.len(), 2);
    assert_eq!(
        fields,
        [
            ports[0],
            fields[1],
            ports[0],
            ports[0],
            &format!("--port={}", ports[1])
        ]
    );
    assert!(
        registry_json(dir.path()).is_empty(),
        "released when the command ended"
    );

    let out = Run::new(dir.path())
        .args([
            "exec",
            "--range",
            &range_arg(61, 10),
            "--env",
            "API_PORT",
            "--env",
            "DB_PORT",
            "--",
        ])
        .args(["sh", "-c", "echo \"$API_PORT $DB_PORT ${PORT:-unset}\""])
        .run()
        .success();
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.len(), 3);
    assert_ne!(fields[0], fields[1]);
    assert_eq!(fields[2], "unset", "named variables replace $PORT");
}

#[test]
fn the_commands_exit_code_comes_back_and_its_ports_are_released() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(62, 3);
    let run = Run::new(dir.path())
        .args(["exec", "--range", &range, "--", "sh", "-c", "exit 7"])
        .run();
    assert_eq!(run.code(), 7);
    let run = Run::new(dir.path())
        .args(["exec", "--range", &range, "--", "sh", "-c", "kill -9 $$"])
        .run();
    assert_eq!(run.code(), 128 + 9, "killed by SIGKILL");
    assert!(registry_json(dir.path()).is_empty());
    let run = Run::new(dir.path())
        .args(["exec", "--range", &range, "--", "no-such-command-here"])
        .run();
    run.fails(127, "command not found");
    assert!(
        registry_json(dir.path()).is_empty(),
        "released although nothing ran"
    );
}

/// Starts `portlease exec -- sleep 600` and waits (a bounded while) until its lease
/// has passed to the child; returns portlease and the child's pid.
fn exec_sleep(dir: &Path, block: u16) -> (std::process::Child, i64) {
    let mut portlease = Command::new(binary())
        .env("PORTLEASE_DIR", dir)
        .args([
            "exec",
            "--range",
            &range_arg(block, 3),
            "--",
            "sleep",
            "600",
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("portlease runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leases = wait_for_leases(dir, 1);
        match leases.as_slice() {
            [lease]
                if lease
                    .pid
                    .is_some_and(|pid| pid != i64::from(portlease.id())) =>
            {
                return (portlease, lease.pid.unwrap_or_default());
            }
            _ if Instant::now() > deadline => {
                let _ = portlease.kill();
                let _ = portlease.wait();
                panic!("the lease never passed to the child: {leases:?}");
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn the_child_owns_its_ports_and_sigterm_to_portlease_reaches_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (mut portlease, owner) = exec_sleep(dir.path(), 63);
    // The owner is the child (sleep), not portlease itself.
    let comm = std::fs::read_to_string(format!("/proc/{owner}/comm")).expect("the owner runs");
    assert_eq!(comm.trim(), "sleep");

    // SAFETY: signals our own child process.
    unsafe { libc::kill(portlease.id() as i32, libc::SIGTERM) };
    let status = portlease.wait().expect("portlease ends");
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "the child was ended by the forwarded SIGTERM"
    );
    assert!(registry_json(dir.path()).is_empty());
    assert!(
        !Path::new(&format!("/proc/{owner}")).exists(),
        "the child is gone"
    );
}

#[test]
fn a_killed_portlease_leaves_the_lease_with_the_child() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (mut portlease, _) = exec_sleep(dir.path(), 64);
    portlease.kill().expect("SIGKILL");
    portlease.wait().expect("reap");
    let leases = wait_for_leases(dir.path(), 1);
    assert_eq!(
        (leases[0].owner_alive, leases[0].stale),
        (Some(true), false),
        "the child still holds it"
    );
    let child = leases[0].pid.expect("the child's pid");
    // SAFETY: ends the orphaned sleep this test started.
    unsafe { libc::kill(child as i32, libc::SIGKILL) };
    // Reclaimed once the child is gone (a zombie, if nobody reaps it, counts as gone).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reclaimed: Vec<LeaseInfo> = Vec::new();
    while reclaimed.is_empty() && Instant::now() < deadline {
        reclaimed = Run::new(dir.path()).args(["gc", "--json"]).run().json();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(reclaimed.len(), 1);
}

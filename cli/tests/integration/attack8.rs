//! Attacks on issue 8's promises from outside: the seed on what portlease writes, and owners in other namespaces.

use std::path::Path;
use std::time::Duration;

use portlease::Allocator;

use crate::helpers::{Reaped, portlease_in, ports, registry_json, run_within};

/// A pid no process of this namespace has, nor the nine after it.
fn unused_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(32768);
    (300..max - 20)
        .rev()
        .find(|pid| (*pid..pid + 10).all(|p| !Path::new(&format!("/proc/{p}")).exists()))
        .expect("a free stretch of pids")
}

#[test]
fn an_owner_in_a_pid_namespace_that_kept_the_hosts_proc_keeps_its_port() {
    // `unshare --pid --fork` without `--mount-proc`: the owner's pid is its new
    // namespace's, while /proc (and so /proc/PID) is still the host's. The owner's
    // pid is steered to one the host does not have.
    let dir = tempfile::tempdir().expect("a temp dir");
    Allocator::with_dir(dir.path()).expect("an allocator");
    let port = *ports(87).start();
    let range = format!("{port}-{port}");
    let pid = unused_pid();
    let script = format!(
        "echo {last} > /proc/sys/kernel/ns_last_pid && {{ '{bin}' exec --range {range} -- sleep 120 & wait; }}",
        last = pid - 1,
        bin = crate::helpers::binary().display(),
    );
    let mut owner = std::process::Command::new("unshare");
    owner
        .args(["--pid", "--fork", "--kill-child", "sh", "-c", &script])
        .env("PORTLEASE_DIR", dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut owner = Reaped(owner.spawn().expect("unshare runs"));
    let registry_file = dir.path().join(portlease::REGISTRY_FILE);
    loop {
        if let Some(status) = owner.0.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut err) = owner.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
            }
            if stderr.contains("unshare failed")
                || stderr.contains("Operation not permitted")
                || stderr.contains("ns_last_pid")
            {
                eprintln!(
                    "skipped: unshare or ns_last_pid is refused here ({})",
                    stderr.trim()
                );
                return;
            }
            panic!("the namespaced owner ended first ({status}): {stderr}");
        }
        let text = std::fs::read_to_string(&registry_file).unwrap_or_default();
        if text.contains(&format!("\"{port}\"")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let lease = &registry_json(dir.path())[&port.to_string()];
    assert!(
        lease["pid_ns"].is_u64(),
        "the owner's namespace is recorded: {lease}"
    );
    let args = ["alloc", "--range", &range, "--lock-timeout", "5"];
    run_within(portlease_in(dir.path(), &args), Duration::from_secs(60)).fails(3, "no port free");
}

#[test]
fn an_owner_in_another_time_namespace_keeps_its_port() {
    // A time namespace (CRIU's, or `unshare --time`) shifts the boot time that
    // /proc/PID/stat's start times count from, for the processes in it only.
    // SIGTERM, which `exec` passes on, so that the sleeper ends with the test.
    let dir = tempfile::tempdir().expect("a temp dir");
    Allocator::with_dir(dir.path()).expect("an allocator");
    let port = *ports(88).start();
    let range = format!("{port}-{port}");
    let mut owner = std::process::Command::new("unshare");
    owner
        .args(["--time", "--boottime", "100000", "--kill-child=SIGTERM"])
        .arg(crate::helpers::binary())
        .args(["exec", "--range", &range, "--", "sleep", "120"])
        .env("PORTLEASE_DIR", dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut owner = Reaped(owner.spawn().expect("unshare runs"));
    let registry_file = dir.path().join(portlease::REGISTRY_FILE);
    loop {
        if let Some(status) = owner.0.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut err) = owner.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
            }
            eprintln!(
                "skipped: unshare --time is refused here ({status}: {})",
                stderr.trim()
            );
            return;
        }
        let text = std::fs::read_to_string(&registry_file).unwrap_or_default();
        if text.contains(&format!("\"{port}\"")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let args = ["alloc", "--range", &range, "--lock-timeout", "5"];
    run_within(portlease_in(dir.path(), &args), Duration::from_secs(60)).fails(3, "no port free");
}

//! `release` and `hand` on a lease whose owner runs in another PID namespace: its
//! pid means nothing here, so it is neither judged kin nor named as a process of ours.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{binary, first_ports, portlease_in, registry, registry_json, run_within};

/// Kills and reaps a child when dropped, so a failed assertion leaves no process.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_lease_held_in_another_pid_namespace_is_refused_as_such() {
    let (dir, _allocator) = registry();
    let port = *first_ports(36, 1).start();
    let range = format!("{port}-{port}");
    // `portlease exec` runs in a new PID namespace, and owns the lease.
    let mut owner = Command::new("unshare");
    owner
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(binary())
        .args(["exec", "--range", &range, "--", "sleep", "120"])
        .env("PORTLEASE_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut owner = Reaped(owner.spawn().expect("unshare runs"));
    let registry_file = dir.path().join(portlease::REGISTRY_FILE);
    loop {
        if let Some(status) = owner.0.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut err) = owner.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
            }
            if stderr.contains("unshare failed") || stderr.contains("Operation not permitted") {
                eprintln!("skipped: unshare is refused here ({})", stderr.trim());
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
    let held_by = registry_json(dir.path())[&port.to_string()]["pid"]
        .as_u64()
        .expect("the lease names its owner's pid");
    let refusal = format!("held by pid {held_by} in another PID namespace");

    let port_arg = port.to_string();
    run_within(
        portlease_in(dir.path(), &["release", &port_arg, "--lock-timeout", "5"]),
        Duration::from_secs(60),
    )
    .fails(6, &refusal);

    let mut taker = Reaped(
        Command::new("sleep")
            .arg("120")
            .spawn()
            .expect("sleep runs"),
    );
    let taker_pid = taker.0.id().to_string();
    run_within(
        portlease_in(
            dir.path(),
            &["hand", &port_arg, "--to", &taker_pid, "--lock-timeout", "5"],
        ),
        Duration::from_secs(60),
    )
    .fails(6, &refusal);
    assert_eq!(
        registry_json(dir.path())[&port_arg]["pid"].as_u64(),
        Some(held_by),
        "the lease is still its owner's"
    );
    let _ = taker.0.kill();
}

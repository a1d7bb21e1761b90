//! `release` and `hand` on a lease whose owner runs in another PID namespace: its
//! pid means nothing here, so it is neither judged kin nor named as a process of ours.

use std::process::Command;
use std::time::Duration;

use crate::helpers::{
    Reaped, exec_in_new_pid_namespace, first_ports, portlease_in, registry, registry_json,
    run_within,
};

#[test]
fn a_lease_held_in_another_pid_namespace_is_refused_as_such() {
    if !crate::helpers::platform_has(portlease::platform::PROCESS_IDENTITY, "PID namespaces") {
        return;
    }
    let (dir, _allocator) = registry();
    let port = *first_ports(36, 1).start();
    // `portlease exec` runs in a new PID namespace, and owns the lease.
    let Some(_owner) = exec_in_new_pid_namespace(dir.path(), port) else {
        return;
    };
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

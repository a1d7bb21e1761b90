//! Many processes at once on few ports: no two holds of one port ever overlap, not
//! while processes are killed at any moment (which never stalls the others or tears
//! the registry), nor when each release by token is retried.
//!
//! Ports 39600-39699 are this file's.

mod common;

use common::{
    Reaped, assert_no_overlaps, collect_holds, registry, registry_bytes, registry_json,
    worker_command,
};

#[test]
#[ignore = "a worker process that the tests here start (common::worker_command)"]
fn worker() {
    common::worker_main();
}

#[test]
fn eight_processes_on_twelve_ports_never_share_one() {
    let (dir, _allocator) = registry();
    let range = 39600..=39611;
    let (procs, cycles) = (8, 200);
    let args = [
        range.start().to_string(),
        range.end().to_string(),
        cycles.to_string(),
        "200".into(),
    ];
    let children: Vec<_> = (0..procs)
        .map(|_| {
            Reaped(
                worker_command("cycles", dir.path(), &args)
                    .spawn()
                    .expect("a worker"),
            )
        })
        .collect();
    let holds = collect_holds(children);
    assert_eq!(holds.len(), procs * cycles, "every cycle recorded its hold");
    let workers: std::collections::HashSet<u32> = holds.iter().map(|h| h.by).collect();
    assert_eq!(
        workers.len(),
        procs,
        "each hold names its own worker process"
    );
    assert_no_overlaps(&holds);
    // Every port of the range served, so the workers really contended for them.
    let used: std::collections::HashSet<u16> = holds.iter().map(|h| h.port).collect();
    assert!(used.len() > 8, "only {} ports were used", used.len());
    assert!(used.iter().all(|p| range.contains(p)));
}

#[test]
fn processes_killed_at_any_moment_never_stall_or_confuse_the_others() {
    let (dir, _allocator) = registry();
    let range = 39620..=39631;
    let (start, end) = (range.start().to_string(), range.end().to_string());
    let survivors: Vec<_> = (0..6)
        .map(|_| {
            let args = [start.clone(), end.clone(), "150".into(), "300".into()];
            Reaped(
                worker_command("cycles", dir.path(), &args)
                    .spawn()
                    .expect("a worker"),
            )
        })
        .collect();
    // Meanwhile, processes that post, wait, serve and hold are killed at random moments.
    let endless = [start.clone(), end.clone(), "1000000".into(), "0".into()];
    for round in 0..15u64 {
        let mut victim = Reaped(
            worker_command("cycles", dir.path(), &endless)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("a victim"),
        );
        std::thread::sleep(std::time::Duration::from_millis(20 + (round * 37) % 60));
        victim.0.kill().expect("SIGKILL");
        victim.0.wait().expect("reap");
    }
    let holds = collect_holds(survivors);
    assert_eq!(holds.len(), 6 * 150, "every survivor finished every cycle");
    assert_no_overlaps(&holds);
}

#[test]
fn a_process_killed_mid_transaction_never_leaves_a_torn_registry() {
    let (dir, _allocator) = registry();
    let range = 39640..=39659;
    let args = [
        range.start().to_string(),
        range.end().to_string(),
        "100000".into(),
        "0".into(),
    ];
    for round in 0..20u64 {
        let mut child = Reaped(
            worker_command("cycles", dir.path(), &args)
                .spawn()
                .expect("a worker"),
        );
        std::thread::sleep(std::time::Duration::from_millis(30 + round * 7));
        child.0.kill().expect("SIGKILL");
        child.0.wait().expect("reap");
        if let Some(bytes) = registry_bytes(dir.path()) {
            let parsed: Result<serde_json::Map<String, serde_json::Value>, _> =
                serde_json::from_slice(&bytes);
            assert!(
                parsed.is_ok(),
                "round {round}: torn registry {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

#[test]
fn processes_releasing_by_token_twice_never_share_a_port() {
    let (dir, _allocator) = registry();
    let (start, end) = (39660, 39667);
    let args = [start.to_string(), end.to_string(), "60".into()];
    let workers: Vec<Reaped> = (0..6)
        .map(|_| {
            Reaped(
                worker_command("token_retry", dir.path(), &args)
                    .spawn()
                    .expect("a worker"),
            )
        })
        .collect();
    let holds = collect_holds(workers);
    assert_eq!(holds.len(), 6 * 60);
    assert_no_overlaps(&holds);
    assert!(registry_json(dir.path()).is_empty());
}

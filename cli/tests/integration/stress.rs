//! Many processes at once, few ports: no two holds of one port may overlap.

use crate::helpers::{assert_no_overlaps, collect_holds, first_ports, registry, worker};

#[test]
fn eight_processes_on_twelve_ports_never_share_one() {
    let (dir, _allocator) = registry();
    let range = first_ports(1, 12);
    let (procs, cycles) = (8, 200);
    let args = [
        range.start().to_string(),
        range.end().to_string(),
        cycles.to_string(),
        "200".into(),
    ];
    let children: Vec<_> = (0..procs)
        .map(|_| {
            worker("cycles", dir.path(), &args)
                .spawn()
                .expect("a worker")
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
    let range = first_ports(12, 12);
    let (start, end) = (range.start().to_string(), range.end().to_string());
    let survivors: Vec<_> = (0..6)
        .map(|_| {
            let args = [start.clone(), end.clone(), "150".into(), "300".into()];
            worker("cycles", dir.path(), &args)
                .spawn()
                .expect("a worker")
        })
        .collect();
    // Meanwhile, processes that post, wait, serve and hold are killed at random moments.
    let endless = [start.clone(), end.clone(), "1000000".into(), "0".into()];
    for round in 0..15u64 {
        let mut victim = worker("cycles", dir.path(), &endless)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("a victim");
        std::thread::sleep(std::time::Duration::from_millis(20 + (round * 37) % 60));
        victim.kill().expect("SIGKILL");
        victim.wait().expect("reap");
    }
    let holds = collect_holds(survivors);
    assert_eq!(holds.len(), 6 * 150, "every survivor finished every cycle");
    assert_no_overlaps(&holds);
}

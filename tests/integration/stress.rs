//! Many processes at once, few ports: no two holds of one port may overlap.

use crate::helpers::{first_ports, overlapping, parse_holds, registry, worker};

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
    let mut holds = Vec::new();
    for child in children {
        let output = child.wait_with_output().expect("the worker ends");
        assert!(
            output.status.success(),
            "a worker failed: {:?}",
            output.status
        );
        holds.extend(parse_holds(&String::from_utf8_lossy(&output.stdout)));
    }
    assert_eq!(holds.len(), procs * cycles, "every cycle recorded its hold");
    let workers: std::collections::HashSet<u32> = holds.iter().map(|h| h.by).collect();
    assert_eq!(
        workers.len(),
        procs,
        "each hold names its own worker process"
    );
    let overlaps = overlapping(&holds);
    assert!(
        overlaps.is_empty(),
        "{} overlapping holds, e.g. {:?}",
        overlaps.len(),
        overlaps.first()
    );
    // Every port of the range served, so the workers really contended for them.
    let used: std::collections::HashSet<u16> = holds.iter().map(|h| h.port).collect();
    assert!(used.len() > 8, "only {} ports were used", used.len());
    assert!(used.iter().all(|p| range.contains(p)));
}

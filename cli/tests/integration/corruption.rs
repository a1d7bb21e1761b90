//! A process killed mid-transaction never leaves a torn registry.

use crate::helpers::{first_ports, registry, registry_bytes, worker};

#[test]
fn a_process_killed_mid_transaction_never_leaves_a_torn_registry() {
    let (dir, _allocator) = registry();
    let range = first_ports(17, 20);
    let args = [
        range.start().to_string(),
        range.end().to_string(),
        "100000".into(),
        "0".into(),
    ];
    for round in 0..20u64 {
        let mut child = worker("cycles", dir.path(), &args)
            .spawn()
            .expect("a worker");
        std::thread::sleep(std::time::Duration::from_millis(30 + round * 7));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
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

//! Other Unix systems: liveness by `kill(pid, 0)`; no start time, so a reused pid
//! keeps a lease alive until its TTL passes.

pub(super) fn start_time(pid: u32) -> Option<Option<u64>> {
    super::exists(pid).then_some(None)
}

/// As [`start_time`]; no kernel threads are told apart here.
pub(super) fn inspect(pid: u32) -> Option<(Option<u64>, bool)> {
    start_time(pid).map(|start_time| (start_time, false))
}

/// No pidfs here: as [`start_time`], with the inode unknown.
pub(super) fn pidfs_inode(pid: u32) -> Option<Option<u64>> {
    start_time(pid)
}

/// No PID namespaces here.
pub(super) fn own_pid_namespace() -> Option<u64> {
    None
}

/// No PID namespaces here.
pub(super) fn recorded_pid_namespace() -> Option<u64> {
    None
}

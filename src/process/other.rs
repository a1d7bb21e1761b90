//! Other Unix systems: liveness by `kill(pid, 0)`; no start time, so a reused pid
//! keeps a lease alive until its TTL passes.

pub(super) fn start_time(pid: u32) -> Option<Option<u64>> {
    super::exists(pid).then_some(None)
}

/// Kernel threads are not told apart here.
pub(super) fn is_kernel_thread(_pid: u32) -> bool {
    false
}

/// No PID namespaces here.
pub(super) fn own_pid_namespace() -> Option<u64> {
    None
}

/// No PID namespaces here.
pub(super) fn recorded_pid_namespace() -> Option<u64> {
    None
}

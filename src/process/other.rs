//! Other Unix systems: liveness by `kill(pid, 0)`; no start time, so a reused pid
//! keeps a lease alive until its TTL passes.

pub(super) fn start_time(pid: u32) -> Option<Option<u64>> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists.then_some(None)
}

/// No PID namespaces here.
pub(super) fn own_pid_namespace() -> Option<u64> {
    None
}

/// No PID namespaces here.
pub(super) fn recorded_pid_namespace() -> Option<u64> {
    None
}

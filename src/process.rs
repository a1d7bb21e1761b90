//! Who owns a lease, and whether that owner is still alive.
//!
//! A pid alone is not an identity: pids are reused, so a lease records its owner's pid
//! together with the owner's start time (where the platform tells it) and, on Linux
//! 6.9+, the inode of a pidfd of it on pidfs, which no other process of the boot gets:
//! a start time counts clock ticks (10 ms), and a pid reused within the tick in which
//! its owner started would otherwise pass for the owner. A lease whose pid now names
//! another process is as dead as one whose pid names nothing.
//!
//! A pid means something only in its PID namespace: a lease records its owner's (on
//! Linux, the inode of `/proc/self/ns/pid`), and only a process in that namespace
//! judges the owner by its pid. To any other, the owner is alive: its lease ends by
//! its TTL, or when a process in the owner's namespace finds it gone.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

#[cfg_attr(linux_kernel, path = "process/linux.rs")]
#[cfg_attr(not(linux_kernel), path = "process/other.rs")]
mod imp;

/// One process, as a lease records it: its pid and, where known, its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// When the process started, in the platform's units (Linux: clock ticks since
    /// boot, field 22 of `/proc/PID/stat`); `None` where the platform does not say.
    pub start_time: Option<u64>,
    /// The PID namespace the pid belongs to (Linux: the inode of `/proc/PID/ns/pid`);
    /// `None` where unknown, and then the pid is taken to be in the reader's.
    #[serde(default)]
    pub pid_ns: Option<u64>,
    /// The inode number of a pidfd of the process (Linux 6.9+, where pidfds are files
    /// of pidfs): unique to the process until reboot, it tells it from a process that
    /// got its pid within the clock tick in which it started. `None` where unknown;
    /// then the start time alone is compared.
    #[serde(default)]
    pub pidfs_inode: Option<u64>,
}

impl ProcessId {
    /// The calling process.
    pub fn current() -> ProcessId {
        // Read once per process; the pid is compared, since a forked child has its own.
        static CURRENT: Mutex<Option<ProcessId>> = Mutex::new(None);
        let pid = std::process::id();
        let mut cached = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
        match *cached {
            Some(current) if current.pid == pid => current,
            _ => {
                let current = ProcessId {
                    pid,
                    start_time: imp::start_time(pid).flatten(),
                    pid_ns: imp::recorded_pid_namespace(),
                    pidfs_inode: imp::pidfs_inode(pid).flatten(),
                };
                *cached = Some(current);
                current
            }
        }
    }

    /// The running process with this pid in the caller's PID namespace, or `None`
    /// when there is none (or no thread of it runs: it has exited and its sockets are
    /// closed), or when it is a kernel thread, which never exits: a lease it owned
    /// would never end.
    pub fn of_running(pid: u32) -> Option<ProcessId> {
        // The inode first: if the pid is reused before the start time is read, the two
        // disagree, and the lease ends at once, as its process has.
        let pidfs_inode = imp::pidfs_inode(pid).flatten();
        match imp::inspect(pid)? {
            (_, true) => None,
            (start_time, false) => Some(ProcessId {
                pid,
                start_time,
                pid_ns: imp::recorded_pid_namespace(),
                pidfs_inode,
            }),
        }
    }

    /// Whether this very process is still running: its pid exists and, when a start
    /// time (or a pidfs inode) is recorded, the process with that pid started at that
    /// time (and has that inode). A process of another PID namespace cannot be judged
    /// by its pid, and counts as running.
    pub fn is_alive(&self) -> bool {
        !self.judged_here() || alive(self, imp::start_time, imp::pidfs_inode)
    }

    /// Whether the pid is one of the caller's PID namespace (or its namespace was not
    /// recorded, and it is taken to be): only then does it name a process here.
    pub fn is_in_own_pid_namespace(&self) -> bool {
        self.judged_here()
    }

    /// Whether `self` and `other` record the same process: the same pid, start time
    /// and PID namespace, and the same pidfs inode where both record one (a lease
    /// written by a version or kernel that records none still matches).
    pub(crate) fn same_process(&self, other: &ProcessId) -> bool {
        self.pid == other.pid
            && self.start_time == other.start_time
            && self.pid_ns == other.pid_ns
            && match (self.pidfs_inode, other.pidfs_inode) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            }
    }

    /// Whether this process's pid can be judged from here: it is in the caller's
    /// PID namespace (or its namespace was not recorded).
    pub(crate) fn judged_here(&self) -> bool {
        match (self.pid_ns, imp::own_pid_namespace()) {
            (None, _) => true,
            (Some(theirs), Some(mine)) => theirs == mine,
            (Some(_), None) => false,
        }
    }
}

/// Whether a process with this pid exists (a zombie included): `kill(pid, 0)`, where
/// EPERM says it does, as another user's. Cheaper than a start time, and blind to a
/// reused pid.
pub(crate) fn exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    matches!(
        rustix::process::test_kill_process(pid),
        Ok(()) | Err(rustix::io::Errno::PERM)
    )
}

/// The inode of the caller's PID namespace, where `/proc` is that namespace's (so that
/// pids read there are the caller's view); `None` otherwise.
pub(crate) fn own_pid_namespace() -> Option<u64> {
    imp::own_pid_namespace()
}

/// Whether `owner` runs, by `start_time` and `pidfs_inode` lookups of its pid (each
/// `None` for no such process, `Some(None)` for a process whose value is unknown). A
/// value unknown on either side is not compared: the process is then judged by the
/// rest.
fn alive(
    owner: &ProcessId,
    start_time: impl FnOnce(u32) -> Option<Option<u64>>,
    pidfs_inode: impl FnOnce(u32) -> Option<Option<u64>>,
) -> bool {
    let pid = owner.pid;
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    let same = |now: Option<Option<u64>>, recorded: Option<u64>| match (now, recorded) {
        (None, _) => false,
        (Some(now), Some(recorded)) => now.is_none_or(|now| now == recorded),
        (Some(_), None) => true,
    };
    // Only a recorded inode is looked up: the start time read first, so that a pid
    // reused between the two reads shows a new inode.
    same(start_time(pid), owner.start_time)
        && owner
            .pidfs_inode
            .is_none_or(|recorded| same(pidfs_inode(pid), Some(recorded)))
}

/// Answers "is this owner alive?" at most once per pid within one transaction, so a
/// registry holding many leases of one process costs one look-up.
#[derive(Default)]
pub(crate) struct LivenessCache {
    start_times: HashMap<u32, Option<Option<u64>>>,
    pidfs_inodes: HashMap<u32, Option<Option<u64>>>,
}

impl LivenessCache {
    pub(crate) fn is_alive(&mut self, owner: ProcessId) -> bool {
        if !owner.judged_here() {
            return true;
        }
        let (start_times, pidfs_inodes) = (&mut self.start_times, &mut self.pidfs_inodes);
        alive(
            &owner,
            |pid| {
                *start_times
                    .entry(pid)
                    .or_insert_with(|| imp::start_time(pid))
            },
            |pid| {
                *pidfs_inodes
                    .entry(pid)
                    .or_insert_with(|| imp::pidfs_inode(pid))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(start_time: Option<u64>, pidfs_inode: Option<u64>) -> ProcessId {
        ProcessId {
            pid: 42,
            start_time,
            pid_ns: None,
            pidfs_inode,
        }
    }

    #[test]
    fn a_record_without_a_pidfs_inode_is_the_same_process_as_one_with() {
        assert!(owner(Some(7), None).same_process(&owner(Some(7), Some(100))));
        assert!(owner(Some(7), Some(100)).same_process(&owner(Some(7), Some(100))));
        assert!(!owner(Some(7), Some(100)).same_process(&owner(Some(7), Some(101))));
        assert!(!owner(Some(7), None).same_process(&owner(Some(8), None)));
    }

    #[test]
    fn a_pid_with_another_pidfs_inode_is_another_process() {
        let same_tick = |_| Some(Some(7));
        assert!(alive(&owner(Some(7), Some(100)), same_tick, |_| Some(
            Some(100)
        )));
        assert!(!alive(&owner(Some(7), Some(100)), same_tick, |_| Some(
            Some(101)
        )));
        assert!(
            !alive(&owner(Some(7), Some(100)), same_tick, |_| None),
            "gone since"
        );
        assert!(!alive(&owner(Some(6), Some(100)), same_tick, |_| Some(
            Some(100)
        )));
    }

    #[test]
    fn an_inode_unknown_on_either_side_leaves_the_start_time_to_judge() {
        let started = |_| Some(Some(7));
        let no_inode = |_: u32| -> Option<Option<u64>> { panic!("no inode is recorded") };
        assert!(alive(&owner(Some(7), None), started, no_inode));
        assert!(alive(&owner(Some(7), Some(100)), started, |_| Some(None)));
        assert!(!alive(&owner(Some(8), None), started, no_inode));
        assert!(!alive(
            &owner(Some(7), Some(100)),
            |_| None,
            |_| Some(Some(100))
        ));
    }
}

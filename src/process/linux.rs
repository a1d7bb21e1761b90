//! Linux: a process's start time from `/proc/PID/stat` (taken back to the host's
//! boot time from the caller's time namespace), its pidfs inode from a pidfd (Linux
//! 6.9+), and the caller's PID namespace from `/proc/self/ns/pid`.

use std::io::Read;
use std::sync::{Mutex, PoisonError};

/// `None`: no such process, or no thread of it runs. `Some(None)`: it runs, but its
/// start time could not be read. `Some(Some(t))`: it runs and started at `t` ticks
/// after boot.
pub(super) fn start_time(pid: u32) -> Option<Option<u64>> {
    inspect(pid).map(|(start_time, _)| start_time)
}

/// As [`start_time`], with whether the process is a kernel thread, from one read of
/// `/proc/PID/stat`.
pub(super) fn inspect(pid: u32) -> Option<(Option<u64>, bool)> {
    // /proc/PID of another namespace's /proc is another process: ask the kernel.
    if own_pid_namespace().is_none() {
        return super::exists(pid).then_some((None, false));
    }
    let mut buf = [0u8; 1024];
    match std::fs::File::open(format!("/proc/{pid}/stat")).and_then(|mut file| file.read(&mut buf))
    {
        // Counted from the boot time of the reader's time namespace: taken back to
        // the host's, so that readers in any time namespace agree.
        Ok(len) => {
            let stat = &buf[..len];
            let start_time =
                parse_stat(stat)?.map(|t| t.wrapping_add_signed(-own_boottime_offset()));
            Some((start_time, is_kernel_thread(stat)))
        }
        // /proc may hide other users' processes (hidepid): ask the kernel instead.
        Err(_) => super::exists(pid).then_some((None, false)),
    }
}

/// The inode number of a pidfd of process `pid` (a thread-group leader), where pidfds
/// are files of pidfs (Linux 6.9+): there, each process gets its own inode number,
/// from a 64-bit counter never reused until reboot, whatever pid it has, so it tells
/// apart two processes that had the same pid within one clock tick, which their start
/// times cannot. It is the same seen from any PID namespace.
///
/// `None`: no such process. `Some(None)`: unknown (an older kernel, where every pidfd
/// shares one inode; a 32-bit one, where pidfs inode numbers may wrap; or the pid is
/// not a thread-group leader's). `Some(Some(inode))`: the process's inode.
pub(super) fn pidfs_inode(pid: u32) -> Option<Option<u64>> {
    const PID_FS_MAGIC: i64 = 0x5049_4446;
    if !cfg!(target_pointer_width = "64") {
        return Some(None);
    }
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)?;
    let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(pidfd) => pidfd,
        Err(rustix::io::Errno::SRCH) => return None,
        Err(_) => return Some(None),
    };
    // f_type's width and sign differ between platforms, hence the cast.
    #[allow(clippy::unnecessary_cast)]
    let on_pidfs = rustix::fs::fstatfs(&pidfd).is_ok_and(|fs| fs.f_type as i64 == PID_FS_MAGIC);
    if !on_pidfs {
        return Some(None);
    }
    Some(rustix::fs::fstat(&pidfd).ok().map(|stat| stat.st_ino))
}

/// Whether the process of this `/proc/PID/stat` is a kernel thread: `PF_KTHREAD` in
/// its flags (field 9).
fn is_kernel_thread(stat: &[u8]) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return false;
    };
    std::str::from_utf8(&stat[close + 1..])
        .ok()
        .and_then(|rest| rest.split_ascii_whitespace().nth(6)?.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// The boot-time offset of the caller's time namespace, in clock ticks (0 outside
/// one): what the kernel adds to the start times it shows the caller.
fn own_boottime_offset() -> i64 {
    static CACHED: Mutex<Option<(u32, i64)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut cached = CACHED.lock().unwrap_or_else(PoisonError::into_inner);
    match *cached {
        Some((of, offset)) if of == pid => offset,
        _ => {
            let offset = std::fs::read_to_string("/proc/self/timens_offsets")
                .ok()
                .and_then(|text| parse_boottime_offset(&text))
                .unwrap_or(0);
            *cached = Some((pid, offset));
            offset
        }
    }
}

/// The `boottime SECS NANOS` line of `/proc/self/timens_offsets`, in clock ticks.
fn parse_boottime_offset(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("boottime"))?;
    let mut fields = line.split_ascii_whitespace().skip(1);
    let secs: i64 = fields.next()?.parse().ok()?;
    let nanos: i64 = fields.next()?.parse().ok()?;
    let ticks_per_sec = ticks_per_second();
    let nanos_per_tick = 1_000_000_000 / ticks_per_sec;
    secs.checked_mul(ticks_per_sec)?
        .checked_add(nanos.checked_add(nanos_per_tick / 2)? / nanos_per_tick)
}

/// Clock ticks per second, the unit of start times in `/proc/PID/stat`.
fn ticks_per_second() -> i64 {
    match i64::try_from(rustix::param::clock_ticks_per_second()) {
        Ok(ticks) if ticks > 0 && ticks <= 1_000_000_000 => ticks,
        _ => 100,
    }
}

/// Fields after the command name, which is in parentheses and may itself hold spaces
/// and parentheses: so split after the last `)`.
fn parse_stat(stat: &[u8]) -> Option<Option<u64>> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // Fields 3 (the state) onwards.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |number: usize| fields.get(number - 3).copied();
    // A zombie ('Z') or dead ('X') thread-group leader holds no sockets, unless other
    // threads of it still run: then the leader's thread alone has exited (it called
    // `pthread_exit`), and field 20, the thread count, still counts them.
    let state = field(3)?;
    let threads: u64 = field(20).and_then(|n| n.parse().ok()).unwrap_or(1);
    if (state == "Z" || state == "X") && threads <= 1 {
        return None;
    }
    Some(field(22).and_then(|t| t.parse().ok()))
}

/// The inode of the caller's PID namespace; `None` if unknown, or if `/proc` is not
/// the one of that namespace (then pids read there are another namespace's).
pub(super) fn own_pid_namespace() -> Option<u64> {
    // Read once per process; the pid is compared, since a forked child may be in a
    // namespace of its own.
    static CACHED: Mutex<Option<(u32, Option<u64>)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut cached = CACHED.lock().unwrap_or_else(PoisonError::into_inner);
    match *cached {
        Some((of, namespace)) if of == pid => namespace,
        _ => {
            let namespace = read_own_pid_namespace(pid);
            *cached = Some((pid, namespace));
            namespace
        }
    }
}

/// The inode of the caller's PID namespace, to record in its leases: read through
/// `/proc/self` even where `/proc` is another namespace's (a PID namespace entered
/// without mounting its own), since `self` there is still the caller. A lease that
/// recorded none would be judged by its pid in every namespace.
pub(super) fn recorded_pid_namespace() -> Option<u64> {
    own_pid_namespace().or_else(|| {
        rustix::fs::stat("/proc/self/ns/pid")
            .ok()
            .map(|stat| stat.st_ino)
    })
}

fn read_own_pid_namespace(pid: u32) -> Option<u64> {
    let proc_self = rustix::fs::readlink("/proc/self", Vec::new()).ok()?;
    if proc_self.to_bytes() != pid.to_string().as_bytes() {
        return None;
    }
    rustix::fs::stat("/proc/self/ns/pid")
        .ok()
        .map(|stat| stat.st_ino)
}

#[cfg(test)]
mod tests {
    use super::parse_stat;

    #[test]
    fn start_time_is_read_after_an_awkward_command_name() {
        let stat = b"42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(stat), Some(Some(987654)));
    }

    #[test]
    fn zombies_are_not_running() {
        let stat = b"42 (x) Z 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(stat), None);
    }

    #[test]
    fn a_zombie_leader_with_live_threads_is_running() {
        let stat = b"42 (x) Z 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 10";
        assert_eq!(parse_stat(stat), Some(Some(987654)));
    }

    #[test]
    fn a_time_namespace_offset_is_read_in_clock_ticks() {
        let ticks = super::parse_boottime_offset("monotonic 5 0\nboottime 100000 0\n");
        let per_sec = super::ticks_per_second();
        assert_eq!(ticks, Some(100_000 * per_sec));
        assert_eq!(
            super::parse_boottime_offset("boottime -2 0"),
            Some(-2 * per_sec)
        );
    }

    #[test]
    fn a_pidfs_inode_names_one_process() {
        let me = super::pidfs_inode(std::process::id());
        assert!(me.is_some(), "this process exists");
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep runs");
        let child_inode = super::pidfs_inode(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(child_inode.is_some(), "the child existed");
        // Where pidfs is there, the two differ; elsewhere both are unknown.
        assert!(
            me.flatten().is_none() || me != child_inode,
            "{me:?} {child_inode:?}"
        );
        assert_eq!(me, super::pidfs_inode(std::process::id()), "stable");
    }

    #[test]
    fn this_process_has_a_start_time_and_a_namespace() {
        assert!(matches!(
            super::start_time(std::process::id()),
            Some(Some(_))
        ));
        assert!(super::own_pid_namespace().is_some());
    }
}

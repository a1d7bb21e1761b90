//! Whose lease a command may end or hand on without `--force`: its own, its shell's,
//! and those of whatever that shell started, but not another shell's running job.

use std::io::Read;

/// How many parents to climb before giving up (a pid chain this deep is a loop).
const MAX_DEPTH: usize = 4096;

/// Whether `holder` is this command, its parent (the shell it runs in), or a
/// descendant of that parent. When the parent is init (pid 1), or is in another
/// session (a launcher, not a shell), only this command counts: every process
/// descends from init, and everything a launcher started from it. A process of
/// another PID namespace is never kin: its pid names another process here, or none.
pub(crate) fn is_kin(holder: portlease::ProcessId) -> bool {
    if !holder.is_in_own_pid_namespace() {
        return false;
    }
    let pid = holder.pid;
    let me = std::process::id();
    if pid == me {
        return true;
    }
    let Some(shell) = rustix::process::getppid().map(|p| p.as_raw_pid().unsigned_abs()) else {
        return false;
    };
    if shell <= 1 || !same_session(shell) {
        return false;
    }
    let mut current = pid;
    for _ in 0..MAX_DEPTH {
        if current == shell {
            return true;
        }
        match parent_of(current) {
            Some(parent) if parent > 1 => current = parent,
            _ => return false,
        }
    }
    false
}

/// Whether `shell` is in this command's session. A parent in another session is no
/// shell but a launcher of sessions (a terminal multiplexer's server, a user service
/// manager): everything it started would count as this command's kin.
fn same_session(shell: u32) -> bool {
    matches!(
        (stat_field(std::process::id(), SESSION), stat_field(shell, SESSION)),
        (Some(mine), Some(its)) if mine == its
    )
}

/// The parent pid of `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    stat_field(pid, PARENT)
}

/// Fields of `/proc/PID/stat` after the command name, from 0 (the state letter).
const PARENT: usize = 1;
/// The session id: 0 where the session's leader is outside this PID namespace (a
/// container entered from a shell), which `getsid` reads alike but some wrappers of
/// it reject.
const SESSION: usize = 3;

/// Field `index` of `/proc/PID/stat`, counted after the command name (which may
/// itself hold spaces and parentheses).
fn stat_field(pid: u32, index: usize) -> Option<u32> {
    let mut buf = [0u8; 1024];
    let len = std::fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut file| file.read(&mut buf))
        .ok()?;
    let stat = &buf[..len];
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(index)?.parse().ok()
}

/// A lease the command may not touch without `--force`.
#[derive(Debug, thiserror::Error)]
#[error(
    "port {key} is held by pid {pid}{command}, a running process outside this shell: \
     {verb} it from there, or add --force"
)]
pub(crate) struct Refused {
    key: String,
    pid: u32,
    /// " (its command line)", where it can be read; " in another PID namespace"
    /// for a process of another one (its pid names none, or another, here).
    command: String,
    /// "release" or "hand on".
    verb: &'static str,
}

/// Turns the library's refusal into the command's, naming the holder's command line
/// and what was refused (`verb`: "release", "hand on"); any other error is passed on.
pub(crate) fn explain(error: portlease::Error, verb: &'static str) -> crate::error::Error {
    match error {
        portlease::Error::HeldByProcess {
            key,
            pid,
            in_other_pid_namespace,
        } => Refused {
            key,
            pid,
            command: if in_other_pid_namespace {
                " in another PID namespace".to_owned()
            } else {
                crate::sockets::command_of(pid).map_or_else(String::new, |c| {
                    // Shortened: the message is one line.
                    format!(" ({})", c.chars().take(80).collect::<String>())
                })
            },
            verb,
        }
        .into(),
        other => crate::error::Error::Library(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_command_and_its_children_are_kin_and_init_is_not() {
        let here = |pid| portlease::ProcessId::of_running(pid).expect("it runs");
        assert!(is_kin(portlease::ProcessId::current()));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        // Judged before the assertion, so that a failure leaves no `sleep` behind.
        let child_is_kin = is_kin(here(child.id()));
        let _ = child.kill();
        let _ = child.wait();
        assert!(child_is_kin, "a child descends from our parent");
        assert!(!is_kin(here(1)));
    }
}

//! Who asks, and for whom: the client's credentials as the kernel gives them
//! (`SO_PEERCRED`), and whether the pid it names is a process it may ask for.
//!
//! A client may ask for a process it could signal (kill(2)'s rule: the process's real
//! or saved uid is the client's uid); root may ask for any. Never for a kernel thread
//! (it never exits, so its lease would never end), a thread that is not a process,
//! or the server itself. A client in a PID namespace of its own names pids as that
//! namespace counts them; only its own can be mapped back, so it may ask only for
//! itself.

use std::io::Read;

/// `PF_KTHREAD` in the flags of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// A client, as the kernel saw it connect.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer {
    pub(super) uid: u32,
    pub(super) pid: u32,
}

impl Peer {
    /// The credentials of the process at the other end of `socket`.
    pub(super) fn of(socket: &impl std::os::fd::AsFd) -> std::io::Result<Peer> {
        use std::os::fd::AsRawFd;
        // Read into a plain struct: the kernel reports pid 0 for a client in a PID
        // namespace this server cannot see, which rustix's `UCred` (a non-zero pid)
        // cannot hold.
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `cred` and `len` are valid for SO_PEERCRED to fill, and `len` says
        // how large `cred` is.
        let failed = unsafe {
            libc::getsockopt(
                socket.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                std::ptr::from_mut(&mut cred).cast(),
                &mut len,
            )
        } != 0;
        if failed {
            return Err(std::io::Error::last_os_error());
        }
        let pid = u32::try_from(cred.pid).ok().filter(|&pid| pid != 0);
        let pid = pid.ok_or_else(|| {
            std::io::Error::other(
                "the client is in a PID namespace this server cannot see (outside the server's)",
            )
        })?;
        Ok(Peer { uid: cred.uid, pid })
    }
}

/// What `/proc` says of a process.
struct Target {
    /// The thread group (process) it belongs to.
    tgid: u32,
    real_uid: u32,
    saved_uid: u32,
    kernel_thread: bool,
}

/// Parses the pid a client sent; the error is the reason to refuse it, for the log.
pub(super) fn parse_pid(request: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(request).map_err(|_| "the request is not text".to_string())?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("an empty request".into());
    }
    trimmed
        .parse()
        .map_err(|_| format!("request {text:?} is not a pid"))
}

/// Whether `peer` may have a lease for `pid`: `Ok(pid)`, or the reason it may not.
pub(super) fn check(peer: Peer, pid: i64) -> Result<u32, String> {
    let pid = in_my_namespace(peer, pid)?;
    match pid {
        ..=0 => return Err(format!("pid {pid} is not a process")),
        1 => {
            return Err(
                "pid 1: the client was reparented to init, so its lease would never end".into(),
            );
        }
        _ => {}
    }
    let pid = u32::try_from(pid).map_err(|_| format!("pid {pid} is out of range"))?;
    let me = std::process::id();
    if pid == me {
        return Err(format!("pid {pid} is this server"));
    }
    let target = inspect(pid).ok_or_else(|| format!("pid {pid}: no such process"))?;
    if target.kernel_thread {
        return Err(format!(
            "pid {pid} is a kernel thread, which never exits: its lease would never end"
        ));
    }
    if target.tgid == me {
        return Err(format!("pid {pid} is this server"));
    }
    if target.tgid != pid {
        return Err(format!(
            "pid {pid} is a thread of process {}: send the process's pid",
            target.tgid
        ));
    }
    if peer.uid != 0 && peer.uid != target.real_uid && peer.uid != target.saved_uid {
        return Err(format!(
            "pid {pid} belongs to uid {}: a client may ask only for its own user's processes",
            target.real_uid
        ));
    }
    Ok(pid)
}

/// The pid a client names, as this server's PID namespace counts it. A client in a
/// namespace of its own (a container) counts pids there; only its own pid can be
/// mapped back (its innermost `NSpid`), and read as the host's it would name some
/// other process, whose lease would end while the client still used the port.
fn in_my_namespace(peer: Peer, pid: i64) -> Result<i64, String> {
    let client = read_small(&format!("/proc/{}/status", peer.pid)).and_then(|s| nspids(&s));
    let server = read_small("/proc/self/status").and_then(|s| nspids(&s));
    match (client, server) {
        (Some(client), Some(server)) if client.len() > server.len() => {
            if client.last() == Some(&pid) {
                Ok(i64::from(peer.pid))
            } else {
                Err(format!(
                    "pid {pid} is counted in the client's own PID namespace, which this server \
                     cannot map: a client in another PID namespace may ask only for itself"
                ))
            }
        }
        _ => Ok(pid),
    }
}

/// A process's pid in each PID namespace it is in, outermost first (`NSpid:`).
fn nspids(status: &str) -> Option<Vec<i64>> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))?;
    line.split_ascii_whitespace()
        .map(|pid| pid.parse().ok())
        .collect()
}

/// The real uid of process `pid`, if it runs.
pub(super) fn uid_of(pid: u32) -> Option<u32> {
    inspect(pid).map(|target| target.real_uid)
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` when there is no such
/// process (or it is a zombie).
fn inspect(pid: u32) -> Option<Target> {
    let stat = read_small(&format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may itself hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // The flags are field 9; the state was field 3.
    let flags: u64 = fields.nth(5)?.parse().ok()?;
    let status = read_small(&format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::split_ascii_whitespace)
    };
    let tgid = field("Tgid:")?.next()?.parse().ok()?;
    let mut uids = field("Uid:")?.map(|uid| uid.parse::<u32>().ok());
    let real_uid = uids.next()??;
    let _effective = uids.next()??;
    let saved_uid = uids.next()??;
    Some(Target {
        tgid,
        real_uid,
        saved_uid,
        kernel_thread: flags & PF_KTHREAD != 0,
    })
}

fn read_small(path: &str) -> Option<String> {
    let mut text = String::with_capacity(2048);
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_string(&mut text))
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Peer {
        Peer {
            uid: rustix::process::getuid().as_raw(),
            pid: std::process::id(),
        }
    }

    #[test]
    fn requests_must_be_pids() {
        assert_eq!(parse_pid(b"42\n"), Ok(42));
        assert_eq!(parse_pid(b" 42 "), Ok(42));
        assert!(parse_pid(b"\n").expect_err("refused").contains("empty"));
        assert!(
            parse_pid(b"x\n")
                .expect_err("refused")
                .contains("not a pid")
        );
        assert!(
            parse_pid(b"\xff\n")
                .expect_err("refused")
                .contains("not text")
        );
    }

    #[test]
    fn the_server_and_its_threads_are_refused() {
        assert!(
            check(me(), i64::from(std::process::id()))
                .expect_err("refused")
                .contains("this server")
        );
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        if tid.unsigned_abs() != std::process::id() {
            assert!(
                check(me(), i64::from(tid))
                    .expect_err("refused")
                    .contains("this server")
            );
        }
    }

    #[test]
    fn a_child_of_the_same_user_is_granted() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        assert_eq!(check(me(), i64::from(child.id())), Ok(child.id()));
        let other = Peer {
            uid: me().uid + 1,
            pid: 1,
        };
        assert!(
            check(other, i64::from(child.id()))
                .expect_err("refused")
                .contains("belongs to uid")
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

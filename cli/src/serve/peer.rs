//! Who asks, and for whom: the client's credentials as the kernel gives them
//! (`SO_PEERCRED`), and whether the pid it names is a process it may ask for.
//!
//! A client may ask for a process it could signal (kill(2)'s rule: the process's real
//! or saved uid is the client's uid); root may ask for any. Never for a kernel thread
//! (it never exits, so its lease would never end), a thread that is not a process,
//! or the server itself. A client in a nested PID namespace may ask for itself by its
//! own namespace's pid; one the server cannot see at all is refused.

use std::io::Read;

/// `PF_KTHREAD` in the flags of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// A client, as the kernel saw it connect.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer {
    pub(super) uid: u32,
    /// 0 when the client is in a PID namespace the server cannot see.
    pub(super) pid: u32,
}

impl Peer {
    /// The credentials of the process at the other end of `socket`.
    /// `pid` is 0 when the client is in a PID namespace the server cannot see.
    pub(super) fn of(socket: &impl std::os::fd::AsFd) -> std::io::Result<Peer> {
        use std::os::fd::AsRawFd;
        let mut cred = Ucred::default();
        let mut len =
            libc::socklen_t::try_from(size_of::<Ucred>()).map_err(std::io::Error::other)?;
        // SAFETY: the descriptor is open for the call (borrowed from `socket`); `cred`
        // is a writable `struct ucred` (three 32-bit integers, the kernel's layout) of
        // `len` bytes, of which the kernel writes at most `len`; and any bytes it writes
        // are valid values of its plain integer fields, pid 0 included.
        let result = unsafe {
            libc::getsockopt(
                socket.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&raw mut cred).cast(),
                &mut len,
            )
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if len as usize != size_of::<Ucred>() {
            return Err(std::io::Error::other(format!(
                "SO_PEERCRED gave {len} bytes, not {}",
                size_of::<Ucred>()
            )));
        }
        Ok(Peer {
            uid: cred.uid,
            // Never negative; 0 (and anything else odd) is "not visible".
            pid: u32::try_from(cred.pid).unwrap_or(0),
        })
    }
}

/// `struct ucred`, as `SO_PEERCRED` fills it: plain integers, since the kernel writes
/// pid 0 for a peer in a PID namespace the reader cannot see.
#[repr(C)]
#[derive(Default)]
struct Ucred {
    pid: i32,
    uid: u32,
    /// Not needed: a client's rights go by its uid.
    _gid: u32,
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
    if peer.pid == 0 {
        return Err(
            "the client is in a PID namespace this server cannot see (its pid is 0 \
                    here), so neither its pid nor its processes' can be checked: run the \
                    server in the client's PID namespace or one above it"
                .into(),
        );
    }
    if pid <= 0 {
        return Err(format!("pid {pid} is not a process"));
    }
    let pid = u32::try_from(pid).map_err(|_| format!("pid {pid} is out of range"))?;
    let pid = seen_from_here(peer, pid)?;
    if pid == 1 {
        return Err(
            "pid 1: the client was reparented to init, so its lease would never end".into(),
        );
    }
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

/// The pid, in the server's PID namespace, of the process a client names `claimed`.
///
/// A client in another (nested) PID namespace names pids of its own namespace. The
/// server can tell which process such a pid is only for the client itself: its `NSpid:`
/// line lists its pid in each namespace from the server's down to its own.
fn seen_from_here(peer: Peer, claimed: u32) -> Result<u32, String> {
    let Ok(theirs) = std::fs::read_link(format!("/proc/{}/ns/pid", peer.pid)) else {
        // Gone, or not ours to inspect (another user's, for a server that is not
        // root): judged as a pid of the server's namespace.
        return Ok(claimed);
    };
    if std::fs::read_link("/proc/self/ns/pid").is_ok_and(|ours| ours == theirs) {
        return Ok(claimed);
    }
    let innermost = read_small(&format!("/proc/{}/status", peer.pid)).and_then(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("NSpid:"))?
            .split_ascii_whitespace()
            .next_back()?
            .parse::<u32>()
            .ok()
    });
    if innermost == Some(claimed) {
        return Ok(peer.pid);
    }
    Err(format!(
        "pid {claimed} is in the client's PID namespace, where this server can name only \
         the client itself (pid {} here): ask from the process the port is for, or run \
         the server in the client's PID namespace",
        peer.pid
    ))
}

/// The real uid of process `pid`, if it runs.
pub(super) fn uid_of(pid: u32) -> Option<u32> {
    inspect(pid).map(|target| target.real_uid)
}

/// Reads `/proc/PID/status` (and `/proc/PID/stat` on kernels before 6.10, whose
/// status does not say whether the process is a kernel thread); `None` when there is
/// no such process (or it is a zombie).
fn inspect(pid: u32) -> Option<Target> {
    let status = read_small(&format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::split_ascii_whitespace)
    };
    let state = field("State:")?.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let tgid = field("Tgid:")?.next()?.parse().ok()?;
    let mut uids = field("Uid:")?.map(|uid| uid.parse::<u32>().ok());
    let real_uid = uids.next()??;
    let _effective = uids.next()??;
    let saved_uid = uids.next()??;
    let kernel_thread = match field("Kthread:").and_then(|mut value| value.next()) {
        Some(flag) => flag != "0",
        None => kernel_thread_by_stat(pid)?,
    };
    Some(Target {
        tgid,
        real_uid,
        saved_uid,
        kernel_thread,
    })
}

/// Whether `pid` is a kernel thread, by the flags in `/proc/PID/stat`.
fn kernel_thread_by_stat(pid: u32) -> Option<bool> {
    let stat = read_small(&format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may itself hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    // The flags are field 9; the command name was field 2.
    let flags: u64 = after.split_ascii_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_KTHREAD != 0)
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
    fn credentials_come_from_the_socket() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        let peer = Peer::of(&ours).expect("credentials");
        assert_eq!((peer.uid, peer.pid), (me().uid, me().pid));
        let unseen = Peer { uid: 0, pid: 0 };
        assert!(
            check(unseen, i64::from(std::process::id()))
                .expect_err("refused")
                .contains("cannot see")
        );
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
    fn kernel_threads_are_told_by_status_and_by_stat_alike() {
        // kthreadd is pid 2 where this pid namespace shows the kernel's threads.
        let comm = std::fs::read_to_string("/proc/2/comm").unwrap_or_default();
        if comm.trim() == "kthreadd" {
            assert_eq!(kernel_thread_by_stat(2), Some(true));
            assert_eq!(inspect(2).map(|t| t.kernel_thread), Some(true));
        }
        let me = std::process::id();
        assert_eq!(kernel_thread_by_stat(me), Some(false));
        assert_eq!(inspect(me).map(|t| t.kernel_thread), Some(false));
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

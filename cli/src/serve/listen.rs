//! The server's socket: the one systemd passes (socket activation), or one bound on
//! the address given, abstract (`@name`) or a path made private.
//!
//! An abstract name has no owner and no permissions: whoever binds it first, any local
//! user, answers every client that connects to it, and a server that comes later
//! cannot start. So a name already taken is an error that names the process holding
//! it (by its credentials, which the kernel gives whoever connects) and the cure on a
//! host shared between users: a socket path in a directory only this user can write.

use std::io::ErrorKind;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The listening socket, and what to clean up after it.
pub(super) struct Socket {
    pub(super) listener: UnixListener,
    /// A path socket this server bound, removed when it stops.
    bound_path: Option<PathBuf>,
    /// Whether systemd passed it.
    activated: bool,
}

impl Socket {
    /// Where it listens, for the log.
    pub(super) fn describe(&self) -> String {
        let address = match self.listener.local_addr() {
            Ok(addr) => describe_addr(&addr),
            Err(e) => format!("an unknown address ({e})"),
        };
        if self.activated {
            format!("{address} (the socket passed by systemd)")
        } else {
            address
        }
    }

    /// Removes the path socket this server bound, if any (not one systemd passed:
    /// systemd owns that).
    pub(super) fn remove_path(&self) {
        if let Some(path) = &self.bound_path
            && let Err(e) = std::fs::remove_file(path)
        {
            log::warn!("cannot remove the socket {}: {e}", path.display());
        }
    }
}

fn describe_addr(addr: &SocketAddr) -> String {
    if let Some(name) = addr.as_abstract_name() {
        format!("@{}", String::from_utf8_lossy(name))
    } else if let Some(path) = addr.as_pathname() {
        path.display().to_string()
    } else {
        "an unnamed socket".into()
    }
}

/// The socket systemd passed, else one bound on `address`; non-blocking either way.
pub(super) fn open(address: &str) -> anyhow::Result<Socket> {
    let socket = match activated()? {
        Some(listener) => Socket {
            listener,
            bound_path: None,
            activated: true,
        },
        None => bind(address)?,
    };
    socket
        .listener
        .set_nonblocking(true)
        .context("cannot make the server socket non-blocking")?;
    Ok(socket)
}

/// The listening socket of systemd's socket activation: `LISTEN_PID` names this
/// process and `LISTEN_FDS` counts the descriptors from 3 on. `None` when not
/// activated.
fn activated() -> anyhow::Result<Option<UnixListener>> {
    let for_me = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse::<i32>().ok());
    let count = match (for_me, count) {
        (true, Some(count)) if count >= 1 => count,
        _ => return Ok(None),
    };
    if count > 1 {
        log::warn!("systemd passed {count} sockets; serving the first (descriptor 3) only");
    }
    // SAFETY: systemd's protocol hands this process descriptor 3; it is only
    // borrowed here to check what it is.
    let borrowed = unsafe { BorrowedFd::borrow_raw(LISTEN_FDS_START) };
    let what = "the socket passed by systemd (LISTEN_FDS, descriptor 3)";
    let kind = rustix::net::sockopt::socket_type(borrowed)
        .map_err(|e| anyhow!("{what} is not usable: {e}"))?;
    let listening = rustix::net::sockopt::socket_acceptconn(borrowed)
        .map_err(|e| anyhow!("{what} is not usable: {e}"))?;
    let unix = matches!(
        rustix::net::getsockname(borrowed).map(|a| a.address_family()),
        Ok(rustix::net::AddressFamily::UNIX)
    );
    if kind != rustix::net::SocketType::STREAM || !listening || !unix {
        bail!(
            "{what} is not a listening Unix stream socket: set ListenStream= to @NAME or a \
             path in the .socket unit"
        );
    }
    rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| anyhow!("cannot set close-on-exec on {what}: {e}"))?;
    // SAFETY: checked above to be an open socket, which nothing else in this process
    // owns; ownership passes to the listener.
    let owned = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    Ok(Some(UnixListener::from(owned)))
}

/// Binds the server socket on `address`.
fn bind(address: &str) -> anyhow::Result<Socket> {
    if address.is_empty() {
        let message = "--address is empty: write @NAME for an abstract socket, or a path";
        return Err(crate::args::UsageError(message.into()).into());
    }
    if let Some(name) = address.strip_prefix('@') {
        let addr = SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| anyhow!("{address:?} is not a usable abstract socket name: {e}"))?;
        let listener = UnixListener::bind_addr(&addr).map_err(|e| match e.kind() {
            ErrorKind::AddrInUse => anyhow!(
                "{address} is taken: {} listens on it. An abstract name belongs to whoever \
                 binds it first, and any local user may: stop that process if it is yours, \
                 else (and on any host shared with other users) serve on a socket path in a \
                 directory only you can write, e.g. --address {}, and set \
                 PORTSERVER_ADDRESS to that path",
                holder(rustix::net::SocketAddrUnix::new_abstract_name(
                    name.as_bytes()
                )),
                private_path_example()
            ),
            _ => anyhow!("cannot listen on {address}: {e}"),
        })?;
        return Ok(Socket {
            listener,
            bound_path: None,
            activated: false,
        });
    }
    let path = PathBuf::from(address);
    prepare_socket_path(&path)?;
    let shown = path.display();
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .map_err(|e| anyhow!("cannot create a Unix socket: {e}"))?;
    let addr = socket2::SockAddr::unix(&path)
        .map_err(|e| anyhow!("cannot use {shown} as an address: {e}"))?;
    socket
        .bind(&addr)
        .map_err(|e| anyhow!("cannot bind {shown}: {e}"))?;
    // Only its owner may connect; set before it listens, so nobody could yet.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| anyhow!("cannot restrict {shown} to its owner: {e}"))?;
    socket
        .listen(128)
        .map_err(|e| anyhow!("cannot listen on {shown}: {e}"))?;
    Ok(Socket {
        listener: socket.into(),
        bound_path: Some(path),
        activated: false,
    })
}

/// Makes room for a path socket: creates its directory (0700) if missing, replaces a
/// socket left by a crashed server, and refuses to steal a live one or to remove
/// anything that is not a socket.
fn prepare_socket_path(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| anyhow!("cannot create {}: {e}", parent.display()))?;
    }
    warn_if_shared(path);
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; remove it or choose another --address",
            path.display()
        );
    }
    match UnixStream::connect(path) {
        Ok(stream) => bail!(
            "a server is already listening on {}: {}; stop it, or choose another --address",
            path.display(),
            describe_peer(super::peer::Peer::of(&stream))
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            log::info!(
                "replacing the stale socket {} left by a server that is gone",
                path.display()
            );
            std::fs::remove_file(path).map_err(|e| anyhow!("cannot remove {}: {e}", path.display()))
        }
        Err(e) => Err(anyhow!(
            "cannot tell whether {} is in use: {e}",
            path.display()
        )),
    }
}

/// Warns when another user could take or replace the socket `path`: its directory
/// is writable by others, or theirs.
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Ok(meta) = std::fs::metadata(&dir) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    let others_write = meta.mode() & 0o022 != 0;
    let theirs = meta.uid() != me && meta.uid() != 0;
    if others_write || theirs {
        log::warn!(
            "the directory {} of the socket is {} (mode {:o}, owner uid {}): another user \
             could take the name {} first, or put their own server there; on a host shared \
             with other users, use a directory only you can write (a missing one is created \
             0700)",
            dir.display(),
            if theirs {
                "another user's"
            } else {
                "writable by other users"
            },
            meta.mode() & 0o7777,
            meta.uid(),
            path.display()
        );
    }
}

/// Who listens on `addr`, as the kernel tells a client that connects (`SO_PEERCRED`:
/// the listener's pid and uid), for an error message.
fn holder(addr: rustix::io::Result<rustix::net::SocketAddrUnix>) -> String {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let unknown = |why: &str| format!("a process this server cannot name ({why})");
    let Ok(addr) = addr else {
        return unknown("the address is not usable");
    };
    // Without blocking: a listener whose queue is full must not stall the start.
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let socket =
        match rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None) {
            Ok(socket) => socket,
            Err(e) => return unknown(&format!("cannot create a socket to ask: {e}")),
        };
    if let Err(e) = rustix::net::connect(&socket, &addr) {
        return unknown(&format!("connecting to it failed: {e}"));
    }
    describe_peer(super::peer::Peer::of(&socket))
}

/// The listener at the other end of a connection, by its credentials.
fn describe_peer(peer: std::io::Result<super::peer::Peer>) -> String {
    match peer {
        Ok(peer) if peer.pid == 0 => format!(
            "a process of uid {} in a PID namespace this one cannot see",
            peer.uid
        ),
        Ok(peer) => {
            let command = crate::sockets::command_of(peer.pid)
                .map_or_else(String::new, |command| format!(" ({command})"));
            let yours = if peer.uid == rustix::process::getuid().as_raw() {
                " (you)"
            } else {
                " (another user)"
            };
            format!("pid {}{command} of uid {}{yours}", peer.pid, peer.uid)
        }
        Err(e) => {
            format!("a process this server cannot name (its credentials cannot be read: {e})")
        }
    }
}

/// A socket path in a directory only this user may write, for the advice to use one:
/// under `$XDG_RUNTIME_DIR` (the user's own, 0700), else under the home directory.
fn private_path_example() -> String {
    let under = |var: &str, rest: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(rest))
    };
    under("XDG_RUNTIME_DIR", "portlease/portserver.sock")
        .or_else(|| under("HOME", ".portlease/portserver.sock"))
        .map_or_else(
            || "/PRIVATE/DIR/portserver.sock".into(),
            |path| path.display().to_string(),
        )
}

//! Which processes hold a port: the sockets in `/proc/net/{tcp,tcp6,udp,udp6}`, matched
//! to their processes through the socket inodes in `/proc/PID/fd` (Linux; only the
//! processes the caller may inspect are found).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// One socket bound to a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundSocket {
    /// "tcp" or "udp".
    pub protocol: String,
    /// The local address it is bound to.
    pub address: SocketAddr,
    /// The TCP state (LISTEN, ESTABLISHED, TIME_WAIT, ...); "BOUND" for UDP.
    pub state: String,
    /// The process holding it, when it could be found.
    pub pid: Option<u32>,
    /// That process's command line.
    pub command: Option<String>,
}

/// Every socket on this host (in this network namespace) bound to `port`.
pub fn sockets_on_port(port: u16) -> Vec<BoundSocket> {
    let mut found = Vec::new();
    let mut inodes = Vec::new();
    for (file, protocol) in [
        ("tcp", "tcp"),
        ("tcp6", "tcp"),
        ("udp", "udp"),
        ("udp6", "udp"),
    ] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/net/{file}")) else {
            continue;
        };
        for line in table.lines().skip(1) {
            if let Some((address, state, inode)) =
                parse_line(line).filter(|(a, ..)| a.port() == port)
            {
                found.push(BoundSocket {
                    protocol: protocol.into(),
                    address,
                    state: state_name(protocol, state).into(),
                    pid: None,
                    command: None,
                });
                inodes.push(inode);
            }
        }
    }
    let owners = owners_of(&inodes);
    for (socket, inode) in found.iter_mut().zip(&inodes) {
        if let Some(&pid) = owners.get(inode) {
            socket.pid = Some(pid);
            socket.command = command_of(pid);
        }
    }
    found
}

/// `local_address`, state and inode of one line of a `/proc/net` table.
fn parse_line(line: &str) -> Option<(SocketAddr, u8, u64)> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let (ip, port) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((SocketAddr::new(ip, port), state, inode))
}

fn state_name(protocol: &str, state: u8) -> &'static str {
    if protocol == "udp" {
        return "BOUND";
    }
    match state {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// The pid holding each socket inode, from the `socket:[INODE]` links in `/proc/*/fd`.
fn owners_of(inodes: &[u64]) -> HashMap<u64, u32> {
    let mut owners = HashMap::new();
    let wanted: Vec<u64> = inodes.iter().copied().filter(|&i| i != 0).collect();
    if wanted.is_empty() {
        return owners;
    }
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(inode) = inode.filter(|i| wanted.contains(i)) {
                owners.insert(inode, pid);
            }
        }
        if owners.len() == wanted.len() {
            break;
        }
    }
    owners
}

/// The command line of `pid` (its name, where the command line is empty), where it
/// can be read.
pub(crate) fn command_of(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if words.is_empty() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        return Some(comm.trim_end().to_owned());
    }
    Some(words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_lines_are_decoded() {
        let v4 = "   0: 0100007F:2710 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0";
        let (addr, state, inode) = parse_line(v4).expect("a tcp line");
        assert_eq!(addr, "127.0.0.1:10000".parse().expect("address"));
        assert_eq!((state, inode), (0x0A, 4242));
        let v6 = "   0: 00000000000000000000000001000000:2711 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0";
        assert_eq!(
            parse_line(v6).map(|l| l.0),
            Some("[::1]:10001".parse().expect("address"))
        );
    }

    #[test]
    fn a_listener_of_this_process_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let found = sockets_on_port(port);
        assert!(
            found
                .iter()
                .any(|s| s.state == "LISTEN" && s.pid == Some(std::process::id())),
            "{found:?}"
        );
    }
}

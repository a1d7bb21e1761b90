//! Linux: a process's start time from `/proc/PID/stat`.

use std::io::Read;

/// `None`: no such process, or a zombie. `Some(None)`: it runs, but its start time
/// could not be read. `Some(Some(t))`: it runs and started at `t` ticks after boot.
pub(super) fn start_time(pid: u32) -> Option<Option<u64>> {
    let mut buf = [0u8; 1024];
    let len = std::fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut file| file.read(&mut buf))
        .ok()?;
    parse_stat(&buf[..len])
}

/// Fields after the command name, which is in parentheses and may itself hold spaces
/// and parentheses: so split after the last `)`.
fn parse_stat(stat: &[u8]) -> Option<Option<u64>> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the state: a zombie ('Z') or dead ('X') process holds no sockets.
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 22 is the start time; fields 4..=21 lie between.
    Some(fields.nth(18).and_then(|t| t.parse().ok()))
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
    fn this_process_has_a_start_time() {
        assert!(matches!(
            super::start_time(std::process::id()),
            Some(Some(_))
        ));
    }
}

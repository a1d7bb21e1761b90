//! Values as people write them, and the rules they follow, checked once for every
//! front end (the command's arguments, `$PORTLEASE_RANGE`, the Python package's
//! arguments), with errors that say what was wrong and what to write instead.
//!
//! - Text: [`port`], [`range`], [`ranges`], [`host`], and [`socket_names`] for
//!   `LISTEN_FDNAMES`.
//! - Numbers that another language already holds (the Python package's ints and
//!   floats): the [`Rule`]s [`PORT`], [`PID`], [`COUNT`] and [`SECONDS`], whose
//!   refusals name the argument and show the value as its caller wrote it.
//! - The seed's ranges: [`SeedRange`], read as AIDB's seed allocator reads them.
//!
//! The defaults every front end shares are the crate's: [`DEFAULT_RANGE`](crate::DEFAULT_RANGE),
//! [`DEFAULT_LOCK_TIMEOUT`](crate::DEFAULT_LOCK_TIMEOUT), [`DEFAULT_TTL`](crate::DEFAULT_TTL),
//! [`SEED_LEASE_SECS`](crate::SEED_LEASE_SECS) and the file names
//! ([`REGISTRY_FILE`](crate::REGISTRY_FILE), [`LOCK_FILE`](crate::LOCK_FILE)); the
//! seed's default range is [`SEED_RANGE_START`] and [`SEED_RANGE_SIZE`].

mod rule;
mod seed;

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

pub use rule::{COUNT, MAX_COUNT, MAX_PID, MAX_SECONDS, PID, PORT, Rule, SECONDS};
pub use seed::{SEED_RANGE_SIZE, SEED_RANGE_START, SeedRange, SeedRefusal};

/// A port number, 1-65535, as decimal text.
///
/// # Errors
/// What is wrong with `text`, and what to write.
pub fn port(text: &str) -> Result<u16, String> {
    let number: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a port number: write a number from 1 to 65535"))?;
    PORT.accept(number.into())
        .ok_or_else(|| format!("{number} is not a port: ports run from 1 to 65535"))
}

/// An inclusive range, `START-END`.
///
/// # Errors
/// What is wrong with `text`, and what to write.
pub fn range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (start, end) = text
        .split_once('-')
        .filter(|(s, e)| !s.is_empty() && !e.is_empty())
        .ok_or_else(|| format!("range {text:?} is not START-END: {RANGE_HINT}"))?;
    let start = port(start).map_err(|e| format!("range {text:?}: {e}"))?;
    let end = port(end).map_err(|e| format!("range {text:?}: {e}"))?;
    range_between(start, end)
}

const RANGE_HINT: &str = "write START-END, both ports from 1 to 65535, e.g. 20000-20999";

/// The inclusive range from `start` to `end`, however it was written (text, a pair of
/// numbers).
///
/// # Errors
/// A range that runs backwards (`start` above `end`), saying what to write.
pub fn range_between(start: u16, end: u16) -> Result<RangeInclusive<u16>, String> {
    if start > end {
        return Err(format!("range {start}-{end} runs backwards: {RANGE_HINT}"));
    }
    Ok(start..=end)
}

/// Ranges as `$PORTLEASE_RANGE` writes them: `START-END[,START-END]...`.
///
/// # Errors
/// What is wrong with the first range that is not one.
pub fn ranges(text: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
    text.split(',').map(|part| range(part.trim())).collect()
}

/// An IP address, or `localhost` in any case: 127.0.0.1, which the bind check tries
/// together with `::1`. The one place a front end's `localhost` is read.
///
/// # Errors
/// What is wrong with `text`, and what to write.
pub fn host(text: &str) -> Result<IpAddr, String> {
    if text.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    text.parse().map_err(|_| {
        format!("{text:?} is not an IP address: write one (e.g. 127.0.0.1 or ::1) or localhost")
    })
}

/// The `LISTEN_FDNAMES` of `count` sockets passed as systemd passes them: `names`, one
/// per socket, or `port0`, `port1`, ... when there are none.
///
/// # Errors
/// A count of names that is not `count`, or a name that `LISTEN_FDNAMES` cannot carry
/// (empty, or with `:`, `=` or NUL), saying what to write.
pub fn socket_names(count: usize, names: &[&str]) -> Result<Vec<String>, String> {
    if names.is_empty() {
        return Ok((0..count).map(|i| format!("port{i}")).collect());
    }
    if names.len() != count {
        return Err(format!(
            "{} socket names for {count} ports: give one name per port, or none",
            names.len()
        ));
    }
    if let Some(bad) = names
        .iter()
        .find(|n| n.is_empty() || n.contains([':', '\0', '=']))
    {
        return Err(format!(
            "socket name {bad:?} cannot be passed in LISTEN_FDNAMES: use letters, digits and _"
        ));
    }
    Ok(names.iter().map(|n| (*n).to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges_are_checked() {
        assert_eq!(port("8080"), Ok(8080));
        for bad in [
            "0",
            "65536",
            "-1",
            "abc",
            "",
            "８０",
            "¹²",
            "99999999999999999999",
        ] {
            assert!(port(bad).is_err(), "{bad}");
        }
        assert_eq!(range("20000-20009"), Ok(20000..=20009));
        assert_eq!(range(" 20000 - 20009 "), Ok(20000..=20009));
        for bad in [
            "5-3",
            "10000-",
            "-5",
            "70000-80000",
            "1-2-3",
            "x",
            "¹²³⁴⁵-¹²³⁴⁶",
        ] {
            assert!(range(bad).is_err(), "{bad}");
        }
        assert_eq!(ranges("1-2, 5-6"), Ok(vec![1..=2, 5..=6]));
        assert!(ranges("1-2,").is_err());
    }

    #[test]
    fn a_range_running_backwards_says_so_however_written() {
        assert_eq!(range_between(3, 3), Ok(3..=3));
        let from_text = range("5-3").expect_err("backwards");
        assert_eq!(Err(from_text), range_between(5, 3));
        assert!(
            range_between(5, 3)
                .expect_err("backwards")
                .contains("runs backwards")
        );
    }

    #[test]
    fn socket_names_are_given_or_numbered_and_must_fit_listen_fdnames() {
        assert_eq!(socket_names(2, &[]).expect("numbered"), ["port0", "port1"]);
        assert_eq!(socket_names(1, &["web"]).expect("given"), ["web"]);
        assert!(socket_names(2, &["web"]).is_err());
        for bad in ["a:b", "a=b", "", "a\0b"] {
            assert!(socket_names(1, &[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn localhost_in_any_case_is_127_0_0_1() {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for text in ["localhost", "LOCALHOST", "LocalHost"] {
            assert_eq!(host(text), Ok(loopback), "{text}");
        }
        assert_eq!(host("::1"), Ok("::1".parse().expect("an address")));
        assert_eq!(
            host("10.1.2.3"),
            Ok("10.1.2.3".parse().expect("an address"))
        );
        for bad in [
            "example.invalid",
            "",
            " 127.0.0.1",
            "localhost.",
            "not an address",
        ] {
            let message = host(bad).expect_err(bad);
            assert!(message.contains("is not an IP address"), "{message}");
        }
    }
}

//! Parsers for the values the subcommands take, with errors that say what to write,
//! and the lease options `alloc` and `exec` share.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use portlease::{Owner, Protocol, Request};

/// A mistake in the arguments, found after clap parsed them.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// A port number, 1-65535.
pub(crate) fn parse_port(text: &str) -> Result<u16, String> {
    let number: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a port number: write a number from 1 to 65535"))?;
    match u16::try_from(number) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!("{number} is not a port: ports run from 1 to 65535")),
    }
}

/// A lease's token as `alloc --json` prints it: three hexadecimal numbers joined by
/// `-` (the owner's pid, the time in nanoseconds and a counter, as the library makes
/// them), e.g. `1a2b-17d0c3e4f5a6b7c8-0`.
pub(crate) fn parse_token(text: &str) -> Result<String, String> {
    let widths = [8, 32, 16];
    let parts: Vec<&str> = text.split('-').collect();
    let well_formed = parts.len() == widths.len()
        && parts.iter().zip(widths).all(|(part, width)| {
            !part.is_empty()
                && part.len() <= width
                && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
    if well_formed {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a lease token: a token is three hexadecimal numbers joined by \
             '-', as `portlease alloc --json` prints it in \"token\""
        ))
    }
}

/// An inclusive range, `START-END`.
pub(crate) fn parse_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let hint = "write START-END, both ports from 1 to 65535, e.g. 20000-20999";
    let (start, end) = text
        .split_once('-')
        .filter(|(s, e)| !s.is_empty() && !e.is_empty())
        .ok_or_else(|| format!("range {text:?} is not START-END: {hint}"))?;
    let start = parse_port(start).map_err(|e| format!("range {text:?}: {e}"))?;
    let end = parse_port(end).map_err(|e| format!("range {text:?}: {e}"))?;
    if start > end {
        return Err(format!("range {text:?} runs backwards: {hint}"));
    }
    Ok(start..=end)
}

/// A positive number of seconds (fractions allowed), or 0.
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs = text.trim().parse::<f64>().ok();
    if secs.is_some_and(|secs| secs < 0.0) {
        return Err(format!(
            "{text} seconds is negative: write 0 or more, e.g. 30 or 0.5"
        ));
    }
    secs.and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("{text:?} is not a number of seconds: write e.g. 30 or 0.5"))
}

/// An IP address, or `localhost` (127.0.0.1, which is checked together with ::1).
pub(crate) fn parse_host(text: &str) -> Result<IpAddr, String> {
    if text.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    text.parse().map_err(|_| {
        format!("{text:?} is not an IP address: write one (e.g. 127.0.0.1 or ::1) or localhost")
    })
}

/// The variable that sets the default ranges of `alloc` and `exec`.
pub(crate) const RANGE_ENV: &str = "PORTLEASE_RANGE";

/// Ranges as `$PORTLEASE_RANGE` writes them: `START-END[,START-END]...`.
fn parse_ranges(text: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
    text.split(',')
        .map(|part| parse_range(part.trim()))
        .collect()
}

/// A TTL: seconds above 0, or `none` for the owner's lifetime.
pub(crate) fn parse_ttl(text: &str) -> Result<Ttl, String> {
    if text == "none" {
        return Ok(Ttl(None));
    }
    match parse_seconds(text) {
        Ok(ttl) if !ttl.is_zero() => Ok(Ttl(Some(ttl))),
        _ => Err(format!(
            "TTL {text:?}: write a number of seconds above 0, or `none` for as long as the owner lives"
        )),
    }
}

/// A parsed `--ttl` (clap wants a named type for an `Option` value).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ttl(pub(crate) Option<Duration>);

/// The options that shape a lease, shared by `alloc` and `exec`.
#[derive(clap::Args, Debug)]
pub(crate) struct LeaseOptions {
    /// How many ports to lease
    #[arg(long, short = 'n', value_name = "N")]
    pub(crate) count: Option<usize>,
    /// Lease the ports as one block of consecutive ports
    #[arg(long)]
    pub(crate) block: bool,
    /// An inclusive range to search (repeatable) [default: $PORTLEASE_RANGE, e.g. 20000-20999,30000-30099, else 10000-10999]
    #[arg(long = "range", short = 'r', value_name = "START-END", value_parser = parse_range, allow_hyphen_values = true)]
    pub(crate) ranges: Vec<RangeInclusive<u16>>,
    /// Try this port first
    #[arg(long, value_name = "PORT", value_parser = parse_port, allow_hyphen_values = true)]
    pub(crate) prefer: Option<u16>,
    /// Never hand out this port (repeatable)
    #[arg(long, value_name = "PORT", value_parser = parse_port, allow_hyphen_values = true)]
    pub(crate) exclude: Vec<u16>,
    /// The protocols the ports must be free for
    #[arg(long, value_name = "PROTO", default_value = "tcp", value_parser = PossibleValuesParser::new(["tcp", "udp", "both"]).try_map(|text| parse_protocol(&text)))]
    pub(crate) proto: Protocol,
    /// Check the ports on this address only (plus ::1 for 127.0.0.1) [default: every address]
    #[arg(long, value_name = "ADDR", value_parser = parse_host)]
    pub(crate) host: Option<IpAddr>,
    /// How long the lease lives, in seconds, or `none` for as long as its owner lives
    #[arg(long, value_name = "SECS|none", value_parser = parse_ttl, allow_hyphen_values = true)]
    pub(crate) ttl: Option<Ttl>,
    /// A label, shown by `list` and usable by `release --label` (at most 4096 bytes)
    #[arg(long, value_name = "TEXT")]
    pub(crate) label: Option<String>,
}

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    text.parse().map_err(|e: portlease::Error| e.to_string())
}

impl LeaseOptions {
    /// The request these options describe, for `owner` with `default_ttl` unless
    /// `--ttl` says otherwise; with no `--range`, the ranges of `$PORTLEASE_RANGE`.
    ///
    /// # Errors
    /// A `$PORTLEASE_RANGE` that is not a list of ranges.
    pub(crate) fn request(
        &self,
        owner: Owner,
        default_ttl: Option<Duration>,
        source: &str,
    ) -> Result<Request, UsageError> {
        let mut request = Request::new()
            .count(self.count.unwrap_or(1))
            .block(self.block)
            .protocol(self.proto)
            .owner(owner)
            .ttl(self.ttl.map_or(default_ttl, |ttl| ttl.0))
            .source(source);
        for range in self.ranges()? {
            request = request.range(range);
        }
        for &port in &self.exclude {
            request = request.exclude(port);
        }
        if let Some(port) = self.prefer {
            request = request.prefer(port);
        }
        if let Some(host) = self.host {
            request = request.host(host);
        }
        if let Some(label) = &self.label {
            request = request.label(label.clone());
        }
        Ok(request)
    }

    /// The `--range`s given, else those of `$PORTLEASE_RANGE`, else none (the
    /// library's default).
    fn ranges(&self) -> Result<Vec<RangeInclusive<u16>>, UsageError> {
        if !self.ranges.is_empty() {
            return Ok(self.ranges.clone());
        }
        match std::env::var(RANGE_ENV) {
            Ok(text) if !text.trim().is_empty() => parse_ranges(&text).map_err(|e| {
                UsageError(format!(
                    "${RANGE_ENV}: {e}; separate several ranges with commas"
                ))
            }),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(Vec::new()),
            Err(std::env::VarError::NotUnicode(_)) => Err(UsageError(format!(
                "${RANGE_ENV} is not text: write START-END[,START-END]..."
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges_are_checked() {
        assert_eq!(parse_port("8080"), Ok(8080));
        for bad in ["0", "65536", "-1", "abc", ""] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_range("10-20"), Ok(10..=20));
        for bad in ["5-3", "10000-", "-5", "70000-80000", "1-2-3", "x"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_ranges("1-2, 5-9"), Ok(vec![1..=2, 5..=9]));
        assert!(parse_ranges("1-2,").is_err());
    }

    #[test]
    fn tokens_have_the_shape_the_library_gives_them() {
        for good in ["1a2b-17d0c3e4f5a6b7c8-0", "ffffffff-0-ffffffffffffffff"] {
            assert_eq!(parse_token(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "garbage",
            "1-2",
            "1-2-3-4",
            "1--3",
            "1-2-G",
            "1A-2-3",
            "123456789-2-3",
            " 1-2-3",
        ] {
            assert!(parse_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_are_addresses_or_localhost() {
        assert_eq!(
            parse_host("localhost"),
            Ok("127.0.0.1".parse().expect("an address"))
        );
        assert_eq!(parse_host("::1"), Ok("::1".parse().expect("an address")));
        assert!(parse_host("example.invalid").is_err());
    }

    #[test]
    fn negative_seconds_say_so() {
        let message = parse_seconds("-1").expect_err("refused");
        assert!(message.contains("negative"), "{message}");
    }

    #[test]
    fn ttls_are_positive_or_none() {
        assert!(matches!(parse_ttl("none"), Ok(Ttl(None))));
        assert!(matches!(parse_ttl("1.5"), Ok(Ttl(Some(d))) if d == Duration::from_millis(1500)));
        for bad in ["-5", "0", "abc", "inf", "NaN"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}

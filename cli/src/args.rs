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

/// A port number, 1-65535 (the library's parser, as every front end's).
pub(crate) use portlease::parse::port as parse_port;
/// An inclusive range, `START-END` (the library's parser).
pub(crate) use portlease::parse::range as parse_range;

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

/// A number of seconds (fractions allowed), 0 or more: as long as a `Duration` holds
/// (about 1.8e19), since a huge lock or request timeout means "wait for ever", which
/// the library takes without overflow.
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs = text.trim().parse::<f64>().ok();
    if secs.is_some_and(|secs| secs < 0.0) {
        return Err(format!(
            "{text} seconds is negative: write 0 or more, e.g. 30 or 0.5"
        ));
    }
    secs.and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| {
            format!("{text:?} is not a number of seconds: write a finite number, e.g. 30 or 0.5")
        })
}

/// An IP address, or `localhost` (the library's parser, as every front end's).
pub(crate) use portlease::parse::host as parse_host;

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
    /// An inclusive range to search (repeatable) [default: $PORTLEASE_RANGE, e.g. 20000-20999,30000-30099, else 15000-24999]
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
    /// `--ttl` says otherwise; with no `--range`, the library's default ranges
    /// (`$PORTLEASE_RANGE`, else [`portlease::DEFAULT_RANGE`]).
    ///
    /// # Errors
    /// None today; kept for the checks only the command can make.
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
        for range in &self.ranges {
            request = request.range(range.clone());
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
}

#[cfg(test)]
mod tests {
    use super::*;

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

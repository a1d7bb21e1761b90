//! What a caller asks for: which ports, how many, for whom and for how long.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::MAX_TEXT_BYTES;
use crate::pick::{Candidates, Want};

/// The range searched when a request names none and [`RANGE_ENV`] is unset: the same
/// for the library, the command (`alloc`, `exec`, `serve`'s pool), and the Python
/// package (its leases, its pytest fixtures, `pick_unused_port`). It is portpicker's
/// portserver pool, and lies apart from the seed's default (10000-10999), which
/// keeps its own registry (`~/.aidb`), so that processes of both on their defaults
/// never draw the same ports from two registries, and below Linux's ephemeral range
/// (32768-60999 by default), from which outgoing connections take ports.
pub const DEFAULT_RANGE: RangeInclusive<u16> = 15000..=24999;

/// The environment variable that replaces [`DEFAULT_RANGE`] for every front end:
/// `START-END[,START-END]...`, e.g. `20000-20999,30000-30099`.
pub const RANGE_ENV: &str = "PORTLEASE_RANGE";

/// The ranges a request searches when it names none: [`RANGE_ENV`]'s if it is set
/// (and not empty), else [`DEFAULT_RANGE`].
///
/// # Errors
/// [`Error::InvalidRequest`] when [`RANGE_ENV`] is set to something that is not a
/// list of ranges, saying what to write.
pub fn default_ranges() -> Result<Vec<RangeInclusive<u16>>> {
    match std::env::var(RANGE_ENV) {
        Ok(text) if !text.trim().is_empty() => crate::parse::ranges(&text).map_err(|e| {
            Error::invalid(format!(
                "${RANGE_ENV}: {e}; separate several ranges with commas, or unset it for \
                 the default {}",
                describe_range(&DEFAULT_RANGE)
            ))
        }),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(vec![DEFAULT_RANGE]),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::invalid(format!(
            "${RANGE_ENV} is not text: write START-END[,START-END]..."
        ))),
    }
}
/// How long a lease owned by no process ([`Owner::Nobody`]) lives unless the request
/// says otherwise: the seed's 300 s. A lease owned by a process has no TTL unless
/// given one: it lives as long as its owner.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Which protocols a port must be free for (and is leased for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP only (the default).
    #[default]
    Tcp,
    /// UDP only.
    Udp,
    /// Both TCP and UDP.
    Both,
}

impl Protocol {
    /// The name used in the registry and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Both => "both",
        }
    }

    pub(crate) fn tcp(self) -> bool {
        self != Protocol::Udp
    }

    pub(crate) fn udp(self) -> bool {
        self != Protocol::Tcp
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(text: &str) -> Result<Protocol> {
        match text {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "both" => Ok(Protocol::Both),
            _ => Err(Error::invalid(format!(
                "unknown protocol {text:?}: use tcp, udp or both"
            ))),
        }
    }
}

/// Whose lease it is: the lease ends when its owner process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Owner {
    /// The calling process (the default).
    #[default]
    CurrentProcess,
    /// Another running process, e.g. a child that will bind the port.
    Process(u32),
    /// A process already looked up with [`ProcessId::of_running`](crate::ProcessId::of_running),
    /// so allocation need not look it up again (a server that checks its clients'
    /// processes on one thread and allocates on another). The lease ends when that
    /// very process (pid and start time) ends; one that has ended already gets a lease
    /// that is stale at once.
    Running(crate::ProcessId),
    /// No process: the lease lives by its TTL alone ([`DEFAULT_TTL`] unless told), for
    /// callers that exit before the port is used.
    Nobody,
}

/// A request for ports, built step by step and handed to
/// [`Allocator::allocate`](crate::Allocator::allocate).
///
/// ```
/// use portlease::{Owner, Protocol, Request};
/// use std::time::Duration;
///
/// let request = Request::new()
///     .range(20000..=20099)
///     .prefer(20042)
///     .count(2)
///     .protocol(Protocol::Both)
///     .owner(Owner::Nobody)
///     .ttl(Some(Duration::from_secs(60)))
///     .label("integration db");
/// # let _ = request;
/// ```
#[derive(Debug, Clone)]
// On the type, so every builder method returning one is covered (as reqwest does).
#[must_use = "a Request does nothing until it is passed to Allocator::allocate, and its \
              builder methods return the changed request rather than change it in place"]
pub struct Request {
    pub(crate) preferred: Option<u16>,
    /// The ranges to search: [`default_ranges`] until the caller names any.
    pub(crate) ranges: Vec<RangeInclusive<u16>>,
    /// Whether `ranges` are still the default ones, which a first
    /// [`range`](Request::range) replaces.
    pub(crate) default_ranges: bool,
    /// What is wrong with `$PORTLEASE_RANGE`, if the default ranges came from it and
    /// it is no list of ranges (refused unless the request names its own ranges).
    pub(crate) default_ranges_error: Option<String>,
    pub(crate) excluded: BTreeSet<u16>,
    pub(crate) count: usize,
    pub(crate) block: bool,
    pub(crate) protocol: Protocol,
    pub(crate) host: Option<IpAddr>,
    pub(crate) owner: Owner,
    pub(crate) ttl: Option<Duration>,
    /// Whether `ttl` was set; if not, see [`Request::effective_ttl`].
    pub(crate) ttl_set: bool,
    pub(crate) label: Option<String>,
    pub(crate) source: String,
    pub(crate) max_per_owner: Option<usize>,
    /// How long a seed entry counts as held after its timestamp, while this request
    /// is served; `None` for the seed's default, [`SEED_LEASE_SECS`](crate::SEED_LEASE_SECS).
    pub(crate) seed_lease: Option<Duration>,
}

impl Default for Request {
    fn default() -> Request {
        let (ranges, default_ranges_error) = match default_ranges() {
            Ok(ranges) => (ranges, None),
            Err(e) => (vec![DEFAULT_RANGE], Some(e.to_string())),
        };
        Request {
            preferred: None,
            ranges,
            default_ranges: true,
            default_ranges_error,
            excluded: BTreeSet::new(),
            count: 1,
            block: false,
            protocol: Protocol::Tcp,
            host: None,
            owner: Owner::CurrentProcess,
            ttl: None,
            ttl_set: false,
            label: None,
            source: "library".into(),
            max_per_owner: None,
            seed_lease: None,
        }
    }
}

impl Request {
    /// One TCP port from the default ranges ([`default_ranges`]: `$PORTLEASE_RANGE`,
    /// else 15000-24999), owned by the calling process: the lease lasts while that
    /// process runs (or until released), with no TTL.
    pub fn new() -> Request {
        Request::default()
    }

    /// Try this port first; when it is taken, fall back to the ranges.
    pub fn prefer(mut self, port: u16) -> Request {
        self.preferred = Some(port);
        self
    }

    /// Search this inclusive range. The first call replaces the default range;
    /// later calls add more ranges, searched in order.
    pub fn range(mut self, range: RangeInclusive<u16>) -> Request {
        if self.default_ranges {
            self.ranges.clear();
            self.default_ranges = false;
        }
        self.ranges.push(range);
        self
    }

    /// Search exactly these ranges, in order, replacing any given before: for callers
    /// that hold their ranges as a list (a configuration file, another language's
    /// arguments). An empty list is refused by
    /// [`Allocator::allocate`](crate::Allocator::allocate) with
    /// [`Error::InvalidRequest`], never read as the default range.
    pub fn set_ranges(mut self, ranges: impl IntoIterator<Item = RangeInclusive<u16>>) -> Request {
        self.ranges = ranges.into_iter().collect();
        self.default_ranges = false;
        self
    }

    /// Never hand out this port.
    pub fn exclude(mut self, port: u16) -> Request {
        self.excluded.insert(port);
        self
    }

    /// How many ports to lease at once (default 1), all in one transaction.
    pub fn count(mut self, count: usize) -> Request {
        self.count = count;
        self
    }

    /// Lease the ports as one block of consecutive ports.
    pub fn block(mut self, block: bool) -> Request {
        self.block = block;
        self
    }

    /// Which protocols the ports must be free for (default TCP).
    pub fn protocol(mut self, protocol: Protocol) -> Request {
        self.protocol = protocol;
        self
    }

    /// Check the ports on this address only (plus `::1` when it is `127.0.0.1`), as
    /// the seed does. By default they are checked on the wildcard addresses `0.0.0.0`
    /// and `[::]`, which catches a server on any local address.
    pub fn host(mut self, host: IpAddr) -> Request {
        self.host = Some(host);
        self
    }

    /// Whose lease it is (default: the calling process).
    pub fn owner(mut self, owner: Owner) -> Request {
        self.owner = owner;
        self
    }

    /// How long the lease lives unless renewed; `None` for as long as its owner
    /// process lives. Default: `None` for a lease owned by a process, [`DEFAULT_TTL`]
    /// for one owned by nobody.
    pub fn ttl(mut self, ttl: Option<Duration>) -> Request {
        self.ttl = ttl;
        self.ttl_set = true;
        self
    }

    /// A label shown by `portlease list`, and by which leases can be released together;
    /// at most [`MAX_TEXT_BYTES`] bytes.
    pub fn label(mut self, label: impl Into<String>) -> Request {
        self.label = Some(label.into());
        self
    }

    /// Which tool asked (recorded in the lease; default "library"); at most
    /// [`MAX_TEXT_BYTES`] bytes.
    pub fn source(mut self, source: impl Into<String>) -> Request {
        self.source = source.into();
        self
    }

    /// Refuse the request when the owner already holds this many leases.
    pub fn max_per_owner(mut self, limit: usize) -> Request {
        self.max_per_owner = Some(limit);
        self
    }

    /// How long an entry written by AIDB's seed allocator (a `pid` and a `timestamp`,
    /// no `owner`) counts as held after its timestamp while this request is served:
    /// older ones are reclaimed, as a seed allocator made with this `lease_timeout`
    /// reclaims them. Default [`SEED_LEASE_SECS`](crate::SEED_LEASE_SECS) (300 s), the
    /// seed's own default. portlease's own leases keep their rules (owner, TTL).
    pub fn seed_lease(mut self, lease: Duration) -> Request {
        self.seed_lease = Some(lease);
        self
    }

    /// How long a seed entry counts as held while this request is served, in seconds.
    pub(crate) fn seed_lease_secs(&self) -> f64 {
        self.seed_lease
            .map_or(crate::record::SEED_LEASE_SECS, |lease| lease.as_secs_f64())
    }

    /// The ranges searched: the ones given, or the default ones ([`default_ranges`]).
    pub fn ranges(&self) -> &[RangeInclusive<u16>] {
        &self.ranges
    }

    /// The TTL the lease gets: the one set with [`ttl`](Request::ttl), else none for a
    /// lease owned by a process and [`DEFAULT_TTL`] for one owned by nobody.
    pub fn effective_ttl(&self) -> Option<Duration> {
        match (self.ttl_set, self.owner) {
            (true, _) => self.ttl,
            (false, Owner::Nobody) => Some(DEFAULT_TTL),
            (false, _) => None,
        }
    }

    /// Logs a warning when the preferred port lies outside the ranges (see
    /// [`preferred_outside_ranges`](Request::preferred_outside_ranges)).
    pub(crate) fn warn_if_preferred_outside(&self) {
        if let Some(warning) = self.preferred_outside_ranges() {
            log::warn!("{warning}");
        }
    }

    /// The warning due when the preferred port lies outside the ranges: it is still
    /// tried first (as the seed tries it), but a caller who meant the ranges as a
    /// fence should know. Never refused: the seed's callers rely on it. The library
    /// logs it; a front end with a warning channel of its own (Python's `warnings`)
    /// shows it there too.
    pub fn preferred_outside_ranges(&self) -> Option<String> {
        let port = self.preferred?;
        if self.ranges.iter().any(|range| range.contains(&port)) {
            return None;
        }
        Some(format!(
            "preferred port {port} is outside the ranges searched ({}): it is tried first \
             all the same; drop the preference or widen the ranges if that is not meant",
            self.describe_ranges()
        ))
    }

    /// Checks the request on its own, before any lock is taken.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.count == 0 {
            return Err(Error::invalid("a count of 0 ports: ask for at least 1"));
        }
        if let (true, Some(error)) = (self.default_ranges, &self.default_ranges_error) {
            return Err(Error::invalid(error.clone()));
        }
        if self.ranges.is_empty() {
            return Err(Error::invalid(
                "an empty list of ranges: name at least one range to search (or set none, \
                 for the default ones)",
            ));
        }
        if self.preferred == Some(0) || self.excluded.contains(&0) {
            return Err(Error::invalid("port 0 is not a port: use 1-65535"));
        }
        for range in self.ranges() {
            if *range.start() == 0 {
                return Err(Error::invalid(format!(
                    "range {}: port 0 is not a port, start at 1 or above",
                    describe_range(range)
                )));
            }
            if range.start() > range.end() {
                return Err(Error::invalid(format!(
                    "range {}: its start is above its end; write START-END with START <= END",
                    describe_range(range)
                )));
            }
        }
        for (what, text) in [
            ("label", self.label.as_deref()),
            ("source", Some(&*self.source)),
        ] {
            check_text(what, text)?;
        }
        check_ttl(self.effective_ttl())?;
        if self.effective_ttl().is_none() && self.owner == Owner::Nobody {
            return Err(Error::invalid(
                "a lease with no owner process needs a TTL, or it would never end",
            ));
        }
        let available = match self.ranges() {
            // One range, nothing excluded: no need to list its ports to count them.
            [range] if self.excluded.is_empty() => range_len(range),
            _ => self.candidates().len(),
        };
        if self.count > available {
            return Err(Error::invalid(format!(
                "{} ports asked for, but {} holds only {available} (after exclusions)",
                self.count,
                self.describe_ranges()
            )));
        }
        if self.block && self.count > self.ranges().iter().map(range_len).max().unwrap_or(0) {
            return Err(Error::invalid(format!(
                "a block of {} consecutive ports does not fit in {}",
                self.count,
                self.describe_ranges()
            )));
        }
        Ok(())
    }

    /// Every port the ranges offer, minus exclusions.
    pub(crate) fn candidates(&self) -> Candidates {
        Candidates::new(self.ranges(), &self.excluded)
    }

    /// What the request wants of its candidates, for [`pick`](crate::pick::pick).
    pub(crate) fn want(&self) -> Want<'_> {
        Want {
            preferred: self.preferred,
            count: self.count,
            block: self.block,
            excluded: &self.excluded,
        }
    }

    /// The ranges as people write them: "10000-10999, 20000-20099".
    pub fn describe_ranges(&self) -> String {
        let ranges: Vec<String> = self.ranges().iter().map(describe_range).collect();
        ranges.join(", ")
    }
}

/// Refuses free text longer than [`MAX_TEXT_BYTES`]: it is written into the lease's
/// entry, and a registry every party can read must stay bounded.
fn check_text(what: &str, text: Option<&str>) -> Result<()> {
    match text {
        Some(text) if text.len() > MAX_TEXT_BYTES => Err(Error::invalid(format!(
            "a {what} of {} bytes: the most a {what} may hold is {MAX_TEXT_BYTES} bytes \
             (UTF-8); shorten it",
            text.len()
        ))),
        _ => Ok(()),
    }
}

/// Refuses a TTL of 0, which would end a lease as it is made.
pub(crate) fn check_ttl(ttl: Option<Duration>) -> Result<()> {
    if ttl == Some(Duration::ZERO) {
        return Err(Error::invalid("a TTL of 0 s would end the lease at once"));
    }
    Ok(())
}

fn range_len(range: &RangeInclusive<u16>) -> usize {
    range.clone().count()
}

fn describe_range(range: &RangeInclusive<u16>) -> String {
    format!("{}-{}", range.start(), range.end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(request: Request) -> String {
        match request.validate() {
            Err(Error::InvalidRequest(message)) => message,
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert!(invalid(Request::new().count(0)).contains("count of 0"));
        let (start, end) = (5, 3);
        assert!(invalid(Request::new().range(start..=end)).contains("5-3"));
        assert!(invalid(Request::new().range(0..=3)).contains("port 0"));
        assert!(invalid(Request::new().prefer(0)).contains("port 0"));
        assert!(invalid(Request::new().range(1..=3).count(4)).contains("only 3"));
        assert!(
            invalid(
                Request::new()
                    .range(1..=3)
                    .range(5..=6)
                    .count(4)
                    .block(true)
            )
            .contains("block of 4")
        );
        assert!(invalid(Request::new().owner(Owner::Nobody).ttl(None)).contains("TTL"));
        assert!(invalid(Request::new().set_ranges([])).contains("empty list of ranges"));
        assert!(invalid(Request::new().range(1..=3).set_ranges([])).contains("empty list"));
        assert!(Request::new().set_ranges([1..=3]).validate().is_ok());
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(invalid(Request::new().label(long.clone())).contains("4096 bytes"));
        assert!(invalid(Request::new().source(long)).contains("source"));
    }

    #[test]
    fn a_preferred_port_outside_the_ranges_is_warned_of() {
        let request = Request::new().range(13605..=13609);
        assert_eq!(
            request.clone().prefer(13606).preferred_outside_ranges(),
            None
        );
        let warning = request.prefer(13600).preferred_outside_ranges();
        assert!(
            warning.as_deref().is_some_and(|w| w
                .starts_with("preferred port 13600 is outside the ranges searched (13605-13609)")),
            "{warning:?}"
        );
    }

    #[test]
    fn the_default_lease_lasts_while_its_owner_runs() {
        assert_eq!(Request::new().effective_ttl(), None);
        assert_eq!(
            Request::new().owner(Owner::Process(1)).effective_ttl(),
            None
        );
        assert_eq!(
            Request::new().owner(Owner::Nobody).effective_ttl(),
            Some(DEFAULT_TTL)
        );
        let short = Some(Duration::from_secs(5));
        assert_eq!(Request::new().ttl(short).effective_ttl(), short);
    }
}

//! How AIDB's seed allocator reads `allocate(preferred, range_start, range_size)`, for
//! the front ends that stand in for it ([`allocate_port`](crate::allocate_port) and the
//! Python package's `portlease.aidb`): one rule, where each once had its own.

use std::fmt;
use std::ops::RangeInclusive;

/// The first port of the seed's default range (`DEFAULT_PORT_RANGE_START`).
pub const SEED_RANGE_START: u16 = 10_000;

/// How many ports the seed's default range holds (`DEFAULT_PORT_RANGE_SIZE`).
pub const SEED_RANGE_SIZE: u16 = 1_000;

/// A range as the seed reads it: `range_size` ports from `range_start`, tried in order
/// after the preferred port.
///
/// The seed tried `preferred`, then `range_start .. range_start + range_size - 1`, each
/// by binding it. So an empty range (a size of 0 or less) tries the preferred port
/// alone; a range that runs past 65535 is tried up to 65535, and only then fails where
/// the seed's `bind()` raised `OverflowError` (as does one starting below 0, at its first
/// port, and a preferred port that is no port); and the seed's exhaustion names the
/// range as `START-END`, END one past its last port. Numbers are `i128`, so that the
/// messages echo exactly what a caller in another language wrote.
///
/// ```
/// use portlease::parse::SeedRange;
///
/// let range = SeedRange::new(65530, 10);
/// assert_eq!(range.check(None), Ok(None));
/// assert_eq!(range.searched(None), Some(65530..=65535));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRange {
    start: i128,
    size: i128,
}

/// Why a seed allocation fails, as the seed failed; each says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeedRefusal {
    /// A number that is no port (past 65535, or below 0) would be tried: where the
    /// seed's `bind()` raised `OverflowError`.
    OutsidePorts(String),
    /// Port 0 would be leased (the seed's `bind()` takes 0 for whatever port the
    /// system picks).
    PortZero(String),
    /// Every port tried is taken (the seed's `RuntimeError`): the message starts as the
    /// seed's, `No available ports in range START-END`.
    Exhausted {
        /// The message.
        message: String,
        /// The ranges searched, as [`Error::Exhausted`](crate::Error::Exhausted) names them.
        ranges: String,
    },
}

impl fmt::Display for SeedRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedRefusal::OutsidePorts(message)
            | SeedRefusal::PortZero(message)
            | SeedRefusal::Exhausted { message, .. } => f.write_str(message),
        }
    }
}

impl SeedRange {
    /// `range_size` ports from `range_start`, as the seed's arguments say.
    pub fn new(range_start: i128, range_size: i128) -> SeedRange {
        SeedRange {
            start: range_start,
            size: range_size,
        }
    }

    /// The preferred port as a port, once it and the range are checked as the seed
    /// would meet them, before anything is tried.
    ///
    /// # Errors
    /// [`SeedRefusal::OutsidePorts`] for a preferred port past 65535 or below 0;
    /// [`SeedRefusal::PortZero`] for port 0 as the preferred port or as the first
    /// port of a range that holds any.
    pub fn check(&self, preferred: Option<i128>) -> Result<Option<u16>, SeedRefusal> {
        let Some(preferred) = preferred else {
            return self.check_start().map(|()| None);
        };
        let port = u16::try_from(preferred).map_err(|_| {
            SeedRefusal::OutsidePorts(format!(
                "preferred port {preferred} is no port: ports run from 1 to 65535; give one \
                 of those, or None"
            ))
        })?;
        if port == 0 {
            return Err(port_zero());
        }
        self.check_start().map(|()| Some(port))
    }

    fn check_start(&self) -> Result<(), SeedRefusal> {
        if self.size > 0 && self.start == 0 {
            return Err(port_zero());
        }
        Ok(())
    }

    /// The ports to search, in order: the range's ports up to 65535, or the preferred
    /// port alone when the range holds none; `None` when there is nothing to try
    /// ([`empty`](SeedRange::empty) says so).
    pub fn searched(&self, preferred: Option<u16>) -> Option<RangeInclusive<u16>> {
        self.ports().or(preferred.map(|port| port..=port))
    }

    /// The range's ports that are ports, up to 65535.
    fn ports(&self) -> Option<RangeInclusive<u16>> {
        if self.size <= 0 {
            return None;
        }
        let first = u16::try_from(self.start).ok()?;
        // The last is at least the first, so one that is no u16 is past 65535.
        let last = u16::try_from(self.end() - 1).unwrap_or(u16::MAX);
        Some(first..=last)
    }

    /// Whether the seed goes on, past the range's ports, to a number that is no port.
    fn overflows(&self) -> bool {
        self.size > 0 && (self.start < 0 || self.end() - 1 > i128::from(u16::MAX))
    }

    /// One past the last port, as the seed's message writes the range.
    fn end(&self) -> i128 {
        self.start.saturating_add(self.size)
    }

    /// What an allocation that found every port taken fails with (`cause` says what
    /// was found, `ranges` what was searched): the seed's `OverflowError` when it would
    /// have gone on past the ports, else its exhaustion.
    pub fn exhausted(&self, cause: &dyn fmt::Display, ranges: String) -> SeedRefusal {
        let (start, end) = (self.start, self.end());
        if self.overflows() {
            return SeedRefusal::OutsidePorts(format!(
                "range {start}-{end} runs outside 1-65535 and no port of it within is free: \
                 give a range_start and range_size that stay within 1-65535"
            ));
        }
        SeedRefusal::Exhausted {
            message: format!(
                "No available ports in range {start}-{end}: {cause}; release ports, or give \
                 a wider range"
            ),
            ranges,
        }
    }

    /// The failure of a request with nothing to try: no preferred port, and a range
    /// that holds no port.
    pub fn empty(&self) -> SeedRefusal {
        let (start, size) = (self.start, self.size);
        self.exhausted(
            &format!("range_size {size} from {start} holds no port"),
            format!("{start}-{}", self.end() - 1),
        )
    }
}

fn port_zero() -> SeedRefusal {
    SeedRefusal::PortZero("port 0 is no port to lease: give ports from 1 to 65535".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outside(refusal: SeedRefusal) -> bool {
        matches!(refusal, SeedRefusal::OutsidePorts(_))
    }

    #[test]
    fn a_range_is_tried_up_to_65535_and_only_then_overflows() {
        let range = SeedRange::new(65530, 10);
        assert_eq!(range.searched(None), Some(65530..=65535));
        assert!(outside(range.exhausted(&"taken", String::new())));
        let within = SeedRange::new(14610, 1);
        assert_eq!(within.searched(None), Some(14610..=14610));
        match within.exhausted(&"taken", "14610-14610".into()) {
            SeedRefusal::Exhausted { message, ranges } => {
                assert!(message.starts_with("No available ports in range 14610-14611: taken"));
                assert_eq!(ranges, "14610-14610");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_range_tries_the_preferred_port_alone() {
        for size in [0, -3] {
            let range = SeedRange::new(14611, size);
            assert_eq!(range.check(Some(14612)), Ok(Some(14612)));
            assert_eq!(range.searched(Some(14612)), Some(14612..=14612));
            assert_eq!(range.searched(None), None);
            assert!(range.empty().to_string().starts_with(&format!(
                "No available ports in range 14611-{}:",
                14611 + size
            )));
        }
    }

    #[test]
    fn numbers_that_are_no_ports_fail_as_the_seeds_bind_did() {
        let range = SeedRange::new(14620, 2);
        for preferred in [70000, -1, 1 << 64] {
            assert!(outside(range.check(Some(preferred)).expect_err("no port")));
        }
        for start in [-1, 65536, 1 << 64] {
            let range = SeedRange::new(start, 5);
            assert_eq!(range.check(None), Ok(None));
            assert_eq!(range.searched(None), None);
            assert!(outside(range.empty()), "{start}");
            assert!(range.empty().to_string().contains(&start.to_string()));
        }
        assert_eq!(
            SeedRange::new(70000, 5).searched(Some(14621)),
            Some(14621..=14621)
        );
    }

    #[test]
    fn port_0_is_refused_where_it_would_be_leased() {
        let zero = |refusal| matches!(refusal, Err(SeedRefusal::PortZero(_)));
        assert!(zero(SeedRange::new(14600, 5).check(Some(0))));
        assert!(zero(SeedRange::new(0, 5).check(None)));
        // A range of no ports from 0 tries nothing there.
        assert_eq!(SeedRange::new(0, 0).check(Some(14600)), Ok(Some(14600)));
    }
}

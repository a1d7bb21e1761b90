//! The rules numbers follow when another language already holds them as numbers (the
//! Python package's ints and floats): one rule, and one wording of its refusal, for
//! every front end.

use std::fmt;
use std::time::Duration;

/// The largest pid Linux gives (`pid_t` is a signed 32-bit number).
pub const MAX_PID: u32 = i32::MAX.unsigned_abs();

/// The longest duration accepted, in seconds (about 31 billion years): longer is a
/// mistake, and would overflow the clocks it is added to.
pub const MAX_SECONDS: f64 = 1e18;

/// The most ports one request may ask for: every port there is.
pub const MAX_COUNT: usize = 65_535;

/// A rule a number must follow, and what its refusal says: "`what` must be `wanted`,
/// not `value`".
///
/// Whole numbers are `i128`, wide enough to hold, exactly, any number a caller in
/// another language writes where a port, pid or count is meant; a caller whose number
/// is wider still passes the farthest `i128` of its sign, which every rule refuses.
///
/// ```
/// use portlease::parse::PORT;
///
/// assert_eq!(PORT.check("preferred", 8080), Ok(8080));
/// assert_eq!(
///     PORT.check("preferred", 70000),
///     Err("preferred must be a port number from 1 to 65535, not 70000".to_owned())
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Rule<N, T> {
    wanted: &'static str,
    accept: fn(N) -> Option<T>,
}

impl<N: Copy + fmt::Display, T> Rule<N, T> {
    /// What a value must be, as refusals say it, e.g. "a port number from 1 to 65535".
    pub fn wanted(&self) -> &'static str {
        self.wanted
    }

    /// `value` as the rule takes it, or `None` when it breaks the rule.
    pub fn accept(&self, value: N) -> Option<T> {
        (self.accept)(value)
    }

    /// `value` as the rule takes it.
    ///
    /// # Errors
    /// The refusal, naming the value `what` (an argument's name, say).
    pub fn check(&self, what: &str, value: N) -> Result<T, String> {
        self.accept(value).ok_or_else(|| self.refusal(what, &value))
    }

    /// The refusal of `shown`: a value as its caller writes values (another language's
    /// `repr`), which may be no number at all.
    pub fn refusal(&self, what: &str, shown: &dyn fmt::Display) -> String {
        format!("{what} must be {}, not {shown}", self.wanted)
    }
}

/// A port: 1-65535.
pub const PORT: Rule<i128, u16> = Rule {
    wanted: "a port number from 1 to 65535",
    accept: |number| u16::try_from(number).ok().filter(|&port| port != 0),
};

/// A process id: 1-[`MAX_PID`].
pub const PID: Rule<i128, u32> = Rule {
    wanted: "a process id (an int from 1 to 2147483647)",
    accept: |number| {
        u32::try_from(number)
            .ok()
            .filter(|pid| (1..=MAX_PID).contains(pid))
    },
};

/// How many ports to lease: 1-[`MAX_COUNT`].
pub const COUNT: Rule<i128, usize> = Rule {
    wanted: "a number of ports from 1 to 65535",
    accept: |number| {
        usize::try_from(number)
            .ok()
            .filter(|count| (1..=MAX_COUNT).contains(count))
    },
};

/// A duration in seconds: finite, from 0 to [`MAX_SECONDS`] (fractions allowed). A
/// TTL of 0 passes here, and is refused by the request (it would end the lease at
/// once); a lock timeout of 0 tries the lock once.
pub const SECONDS: Rule<f64, Duration> = Rule {
    wanted: "a finite number of seconds from 0 to 1e18",
    accept: |secs| {
        if (0.0..=MAX_SECONDS).contains(&secs) {
            // -0.0 is in the range, and is no time at all.
            Duration::try_from_secs_f64(secs.abs()).ok()
        } else {
            None
        }
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(PORT.accept(1), Some(1));
        assert_eq!(PORT.accept(65535), Some(65535));
        for bad in [0, -1, 65536, i128::MAX, i128::MIN] {
            assert_eq!(PORT.accept(bad), None, "{bad}");
        }
        assert_eq!(
            PORT.check("port", 0),
            Err("port must be a port number from 1 to 65535, not 0".to_owned())
        );
    }

    #[test]
    fn pids_are_positive_and_fit_pid_t() {
        assert_eq!(PID.accept(1), Some(1));
        assert_eq!(PID.accept(2_147_483_647), Some(MAX_PID));
        for bad in [0, -1, 2_147_483_648, 1 << 40] {
            assert_eq!(PID.accept(bad), None, "{bad}");
        }
        assert!(
            PID.check("owner", -1)
                .expect_err("refused")
                .contains("process id")
        );
    }

    #[test]
    fn counts_are_1_to_65535() {
        assert_eq!(COUNT.accept(1), Some(1));
        assert_eq!(COUNT.accept(65535), Some(65535));
        for bad in [0, -1, 65536, 1 << 64] {
            assert_eq!(COUNT.accept(bad), None, "{bad}");
        }
    }

    #[test]
    fn seconds_are_finite_and_from_0_to_1e18() {
        assert_eq!(SECONDS.accept(0.0), Some(Duration::ZERO));
        assert_eq!(SECONDS.accept(-0.0), Some(Duration::ZERO));
        assert_eq!(SECONDS.accept(2.5), Some(Duration::from_millis(2500)));
        assert_eq!(
            SECONDS.accept(1e18),
            Some(Duration::from_secs(1_000_000_000_000_000_000))
        );
        for bad in [
            -0.5,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            1.5e18,
        ] {
            assert_eq!(SECONDS.accept(bad), None, "{bad}");
        }
        assert_eq!(
            SECONDS.check("ttl", -1.0),
            Err("ttl must be a finite number of seconds from 0 to 1e18, not -1".to_owned())
        );
    }

    #[test]
    fn a_refusal_shows_the_value_as_its_caller_wrote_it() {
        assert_eq!(
            PORT.refusal("preferred", &"True"),
            "preferred must be a port number from 1 to 65535, not True"
        );
    }
}

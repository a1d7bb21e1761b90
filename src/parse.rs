//! Ports and ranges as people write them, parsed once for every front end (the
//! command's arguments, `$PORTLEASE_RANGE`, the Python package), with errors that
//! say what to write instead.

use std::ops::RangeInclusive;

/// A port number, 1-65535, as decimal text.
///
/// # Errors
/// What is wrong with `text`, and what to write.
pub fn port(text: &str) -> Result<u16, String> {
    let number: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a port number: write a number from 1 to 65535"))?;
    match u16::try_from(number) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!("{number} is not a port: ports run from 1 to 65535")),
    }
}

/// An inclusive range, `START-END`.
///
/// # Errors
/// What is wrong with `text`, and what to write.
pub fn range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let hint = "write START-END, both ports from 1 to 65535, e.g. 20000-20999";
    let (start, end) = text
        .split_once('-')
        .filter(|(s, e)| !s.is_empty() && !e.is_empty())
        .ok_or_else(|| format!("range {text:?} is not START-END: {hint}"))?;
    let start = port(start).map_err(|e| format!("range {text:?}: {e}"))?;
    let end = port(end).map_err(|e| format!("range {text:?}: {e}"))?;
    if start > end {
        return Err(format!("range {text:?} runs backwards: {hint}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges_are_checked() {
        assert_eq!(port("8080"), Ok(8080));
        for bad in ["0", "65536", "-1", "abc", "", "８０"] {
            assert!(port(bad).is_err(), "{bad}");
        }
        assert_eq!(range("20000-20009"), Ok(20000..=20009));
        for bad in ["5-3", "10000-", "-5", "70000-80000", "1-2-3", "x"] {
            assert!(range(bad).is_err(), "{bad}");
        }
        assert_eq!(ranges("1-2, 5-6"), Ok(vec![1..=2, 5..=6]));
        assert!(ranges("1-2,").is_err());
    }
}

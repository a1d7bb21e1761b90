//! Choosing ports, as pure functions: the preferred port if free, else next-fit
//! through the candidates from just after a cursor, wrapping around; single ports or
//! blocks of consecutive ones. Whether a port is free is the caller's question (a
//! closure): this module reads no registry, binds no socket and keeps no state.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

/// The ports a request may get: sorted, disjoint runs of consecutive ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidates {
    runs: Vec<(u16, u16)>,
}

impl Candidates {
    /// Every port `ranges` offer, minus `excluded`: sorted, without duplicates, as
    /// runs of consecutive ports (so no list of ports is built per request). A range
    /// whose start is above its end offers nothing.
    pub(crate) fn new(ranges: &[RangeInclusive<u16>], excluded: &BTreeSet<u16>) -> Candidates {
        let mut ranges: Vec<(u16, u16)> = ranges
            .iter()
            .filter(|range| range.start() <= range.end())
            .map(|range| (*range.start(), *range.end()))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some((_, last)) if u32::from(start) <= u32::from(*last) + 1 => {
                    *last = (*last).max(end);
                }
                _ => merged.push((start, end)),
            }
        }
        let mut runs = Vec::with_capacity(merged.len() + excluded.len());
        for (start, end) in merged {
            let mut from = start;
            let mut open = true;
            for &port in excluded.range(start..=end) {
                if port > from {
                    runs.push((from, port - 1));
                }
                match port.checked_add(1) {
                    Some(next) => from = next,
                    None => open = false,
                }
            }
            if open && from <= end {
                runs.push((from, end));
            }
        }
        Candidates { runs }
    }

    /// How many ports.
    pub(crate) fn len(&self) -> usize {
        self.runs
            .iter()
            .map(|&(start, end)| usize::from(end - start) + 1)
            .sum()
    }

    /// Every port in next-fit order: ascending from the first one after `cursor`,
    /// then wrapping around to the first.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "each port is within a run of u16 ports"
    )]
    pub(crate) fn next_fit(&self, cursor: Option<u16>) -> impl Iterator<Item = u16> + '_ {
        let after = cursor.map_or(0, |c| u32::from(c) + 1);
        let clip = move |&(start, end): &(u16, u16), low: u32, high: u32| {
            let from = u32::from(start).max(low);
            let to = u32::from(end).min(high);
            // Empty when from > to; both fit in u16 when it is not.
            (from..=to).map(|port| port as u16)
        };
        let tail = self
            .runs
            .iter()
            .flat_map(move |run| clip(run, after, u32::MAX));
        let head = self
            .runs
            .iter()
            .flat_map(move |run| clip(run, 0, after.saturating_sub(1)));
        let head = head.take(if after == 0 { 0 } else { usize::MAX });
        tail.chain(head)
    }

    /// Whether the `count` ports from `start` on are all candidates.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a block's count fits a range of ports: Request::validate refuses more"
    )]
    pub(crate) fn holds_block(&self, start: u16, count: usize) -> bool {
        let last = u32::from(start) + count as u32 - 1;
        let index = self
            .runs
            .partition_point(|&(run_start, _)| run_start <= start);
        index > 0 && {
            let (_, end) = self.runs[index - 1];
            u32::from(end) >= last
        }
    }
}

/// What a request wants of its candidates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want<'a> {
    /// Tried first, when not excluded (even outside the candidates' ranges).
    pub(crate) preferred: Option<u16>,
    /// How many ports; at least 1.
    pub(crate) count: usize,
    /// Whether the ports must be consecutive.
    pub(crate) block: bool,
    /// Ports never handed out, the preferred one included.
    pub(crate) excluded: &'a BTreeSet<u16>,
}

/// What could not be found among the candidates, as people say it: "port",
/// "3 ports", "block of 3 consecutive ports".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exhausted {
    pub(crate) wanted: String,
}

/// Chooses the ports `want` asks for: the preferred one (or the block from it) first,
/// then next-fit through `candidates` from just after `cursor`, wrapping around. A
/// port is taken only if `is_free` says so; a block only if each of its ports is.
///
/// The outer `Err` is `is_free`'s own error, passed on at once; the inner one says
/// that no choice fits.
#[expect(
    clippy::cast_possible_truncation,
    reason = "a block's count fits a range of ports: Request::validate refuses more"
)]
pub(crate) fn pick<E>(
    want: &Want<'_>,
    candidates: &Candidates,
    cursor: Option<u16>,
    mut is_free: impl FnMut(u16) -> Result<bool, E>,
) -> Result<Result<Vec<u16>, Exhausted>, E> {
    let count = want.count;
    let is_free = &mut is_free;
    if let Some(preferred) = want.preferred.filter(|p| !want.excluded.contains(p)) {
        if want.block {
            let block = preferred
                .checked_add(count as u16 - 1)
                .map(|last| preferred..=last);
            if let Some(block) = block
                && block.clone().all(|p| !want.excluded.contains(&p))
                && all_free(block.clone(), is_free)?
            {
                return Ok(Ok(block.collect()));
            }
        } else if is_free(preferred)? {
            let mut ports = vec![preferred];
            next_fit(candidates, cursor, |port| {
                if ports.len() < count && port != preferred && is_free(port)? {
                    ports.push(port);
                }
                Ok(ports.len() == count)
            })?;
            if ports.len() == count {
                return Ok(Ok(ports));
            }
        }
    }
    let mut ports = Vec::with_capacity(count);
    if want.block {
        next_fit(candidates, cursor, |start| {
            if candidates.holds_block(start, count)
                && all_free(start..=start + (count as u16 - 1), is_free)?
            {
                ports.extend(start..=start + (count as u16 - 1));
                return Ok(true);
            }
            Ok(false)
        })?;
    } else {
        next_fit(candidates, cursor, |port| {
            if is_free(port)? {
                ports.push(port);
            }
            Ok(ports.len() == count)
        })?;
    }
    if ports.len() == count {
        return Ok(Ok(ports));
    }
    Ok(Err(Exhausted {
        wanted: match (count, want.block) {
            (1, _) => "port".into(),
            (n, true) => format!("block of {n} consecutive ports"),
            (n, false) => format!("{n} ports"),
        },
    }))
}

/// Visits the candidates from the first one after `cursor`, wrapping around, until
/// `visit` returns true.
fn next_fit<E>(
    candidates: &Candidates,
    cursor: Option<u16>,
    mut visit: impl FnMut(u16) -> Result<bool, E>,
) -> Result<(), E> {
    for port in candidates.next_fit(cursor) {
        if visit(port)? {
            break;
        }
    }
    Ok(())
}

fn all_free<E>(
    ports: RangeInclusive<u16>,
    is_free: &mut impl FnMut(u16) -> Result<bool, E>,
) -> Result<bool, E> {
    for port in ports {
        if !is_free(port)? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;

    fn candidates(ranges: &[RangeInclusive<u16>], excluded: &[u16]) -> Candidates {
        Candidates::new(ranges, &excluded.iter().copied().collect())
    }

    fn order(candidates: &Candidates, cursor: Option<u16>) -> Vec<u16> {
        candidates.next_fit(cursor).collect()
    }

    /// A request for `count` ports (a block when `block`), preferring `preferred`.
    struct Ask {
        preferred: Option<u16>,
        count: usize,
        block: bool,
        excluded: BTreeSet<u16>,
    }

    impl Ask {
        fn ports(count: usize) -> Ask {
            Ask {
                preferred: None,
                count,
                block: false,
                excluded: BTreeSet::new(),
            }
        }

        fn block(count: usize) -> Ask {
            Ask {
                block: true,
                ..Ask::ports(count)
            }
        }

        fn prefer(self, port: u16) -> Ask {
            Ask {
                preferred: Some(port),
                ..self
            }
        }

        fn exclude(mut self, port: u16) -> Ask {
            self.excluded.insert(port);
            self
        }

        /// What `pick` chooses among `ranges` after `cursor`, with the ports in
        /// `taken` not free; and every port it asked about, in order.
        fn pick_in(
            &self,
            ranges: &[RangeInclusive<u16>],
            cursor: Option<u16>,
            taken: &[u16],
        ) -> (Result<Vec<u16>, Exhausted>, Vec<u16>) {
            let want = Want {
                preferred: self.preferred,
                count: self.count,
                block: self.block,
                excluded: &self.excluded,
            };
            let candidates = Candidates::new(ranges, &self.excluded);
            let mut asked = Vec::new();
            let picked = pick(&want, &candidates, cursor, |port| {
                asked.push(port);
                Ok::<bool, Infallible>(!taken.contains(&port))
            });
            match picked {
                Ok(picked) => (picked, asked),
            }
        }

        fn chooses(
            &self,
            ranges: &[RangeInclusive<u16>],
            cursor: Option<u16>,
            taken: &[u16],
        ) -> Vec<u16> {
            match self.pick_in(ranges, cursor, taken).0 {
                Ok(ports) => ports,
                Err(exhausted) => panic!("expected ports, got {exhausted:?}"),
            }
        }

        fn exhausts(
            &self,
            ranges: &[RangeInclusive<u16>],
            cursor: Option<u16>,
            taken: &[u16],
        ) -> String {
            match self.pick_in(ranges, cursor, taken).0 {
                Ok(ports) => panic!("expected none, got {ports:?}"),
                Err(exhausted) => exhausted.wanted,
            }
        }
    }

    #[test]
    fn candidates_skip_exclusions_and_duplicates() {
        let some = candidates(&[5..=7, 6..=8], &[7]);
        assert_eq!(order(&some, None), [5, 6, 8]);
        assert_eq!(some.len(), 3);
        assert_eq!(candidates(&[10000..=10999], &[]).len(), 1000);
        let edges = candidates(&[1..=3, 65534..=65535], &[1, 65535]);
        assert_eq!(order(&edges, None), [2, 3, 65534]);
        let apart = candidates(&[10..=12, 20..=21, 13..=13], &[]);
        assert_eq!(order(&apart, None), [10, 11, 12, 13, 20, 21]);
        let (start, end) = (5, 3);
        let backwards = candidates(&[start..=end], &[]);
        assert_eq!(backwards.len(), 0);
    }

    #[test]
    fn next_fit_starts_after_the_cursor_and_wraps() {
        let some = candidates(&[10..=14], &[12]);
        assert_eq!(order(&some, Some(11)), [13, 14, 10, 11]);
        assert_eq!(order(&some, Some(14)), [10, 11, 13, 14]);
        assert_eq!(order(&some, Some(3)), [10, 11, 13, 14]);
        assert_eq!(
            order(&candidates(&[65534..=65535], &[]), Some(65535)),
            [65534, 65535]
        );
    }

    #[test]
    fn blocks_must_lie_in_one_run() {
        let some = candidates(&[10..=14], &[12]);
        assert!(some.holds_block(10, 2));
        assert!(!some.holds_block(10, 3));
        assert!(some.holds_block(13, 2));
        assert!(!some.holds_block(14, 2));
        assert!(!some.holds_block(9, 1));
    }

    #[test]
    fn a_free_preferred_port_is_chosen_before_the_cursor() {
        assert_eq!(
            Ask::ports(1).prefer(15).chooses(&[10..=19], Some(11), &[]),
            [15]
        );
        // Even outside the ranges, as the seed does.
        assert_eq!(
            Ask::ports(1).prefer(99).chooses(&[10..=19], None, &[]),
            [99]
        );
    }

    #[test]
    fn a_taken_or_excluded_preferred_port_falls_back_to_next_fit() {
        let taken = Ask::ports(1).prefer(15);
        assert_eq!(taken.chooses(&[10..=19], Some(11), &[15]), [12]);
        let excluded = Ask::ports(1).prefer(15).exclude(15);
        let (picked, asked) = excluded.pick_in(&[10..=19], Some(14), &[]);
        assert_eq!(picked, Ok(vec![16]));
        assert!(!asked.contains(&15), "an excluded port is not even probed");
    }

    #[test]
    fn next_fit_takes_the_first_free_port_after_the_cursor() {
        let one = Ask::ports(1);
        assert_eq!(one.chooses(&[10..=19], None, &[]), [10]);
        assert_eq!(one.chooses(&[10..=19], Some(12), &[]), [13]);
        assert_eq!(one.chooses(&[10..=19], Some(12), &[13, 14]), [15]);
    }

    #[test]
    fn next_fit_wraps_around_past_the_last_candidate() {
        let one = Ask::ports(1);
        assert_eq!(one.chooses(&[10..=19], Some(19), &[]), [10]);
        assert_eq!(one.chooses(&[10..=19], Some(17), &[18, 19]), [10]);
        assert_eq!(one.chooses(&[10..=19], Some(17), &[18, 19, 10, 11]), [12]);
        // A cursor outside the ranges starts at the first candidate after it.
        assert_eq!(one.chooses(&[10..=12, 20..=22], Some(15), &[]), [20]);
        assert_eq!(one.chooses(&[10..=12, 20..=22], Some(40), &[]), [10]);
    }

    #[test]
    fn several_ports_are_distinct_free_and_in_next_fit_order() {
        let three = Ask::ports(3);
        assert_eq!(three.chooses(&[10..=19], Some(16), &[18]), [17, 19, 10]);
        assert_eq!(
            three.chooses(&[10..=12, 20..=22], Some(11), &[20]),
            [12, 21, 22]
        );
        // The preferred port first, the rest by next-fit, without it twice.
        let preferred = Ask::ports(3).prefer(14);
        assert_eq!(preferred.chooses(&[10..=19], Some(13), &[]), [14, 15, 16]);
        assert_eq!(preferred.chooses(&[10..=19], Some(18), &[10]), [14, 19, 11]);
    }

    #[test]
    fn several_ports_with_a_preferred_one_are_exhausted_without_enough_others() {
        // Only 14 and 15 are free: 3 ports cannot be had, with 14 first or without.
        let preferred = Ask::ports(3).prefer(14);
        assert_eq!(preferred.exhausts(&[14..=17], None, &[16, 17]), "3 ports");
    }

    #[test]
    fn a_block_is_consecutive_free_ports_within_one_range() {
        let block = Ask::block(3);
        assert_eq!(block.chooses(&[10..=19], None, &[]), [10, 11, 12]);
        assert_eq!(block.chooses(&[10..=19], Some(11), &[13]), [14, 15, 16]);
        // Every port of the chosen block was found free, none of a block passed over.
        let (picked, asked) = block.pick_in(&[10..=19], None, &[11]);
        assert_eq!(picked, Ok(vec![12, 13, 14]));
        assert_eq!(asked, [10, 11, 11, 12, 13, 14]);
    }

    #[test]
    fn a_block_never_crosses_a_range_end_or_an_exclusion() {
        let block = Ask::block(2);
        assert_eq!(block.chooses(&[10..=12, 20..=22], Some(11), &[]), [20, 21]);
        // At the top of the port space it wraps around rather than overflow.
        assert_eq!(
            block.chooses(&[65533..=65535], Some(65534), &[]),
            [65533, 65534]
        );
        let excluded = Ask::block(2).exclude(12);
        assert_eq!(excluded.chooses(&[10..=14], Some(10), &[]), [13, 14]);
    }

    #[test]
    fn a_preferred_block_is_taken_whole_or_not_at_all() {
        assert_eq!(
            Ask::block(3).prefer(15).chooses(&[10..=19], None, &[]),
            [15, 16, 17]
        );
        assert_eq!(
            Ask::block(3).prefer(15).chooses(&[10..=19], None, &[17]),
            [10, 11, 12]
        );
        let excluded = Ask::block(3).prefer(15).exclude(16);
        assert_eq!(excluded.chooses(&[10..=19], None, &[]), [10, 11, 12]);
        // A block from the preferred port past 65535 is no block.
        let overflowing = Ask::block(3).prefer(65534);
        assert_eq!(overflowing.chooses(&[10..=19], None, &[]), [10, 11, 12]);
    }

    #[test]
    fn exhaustion_says_what_was_wanted() {
        assert_eq!(
            Ask::ports(1).exhausts(&[10..=12], Some(11), &[10, 11, 12]),
            "port"
        );
        assert_eq!(
            Ask::ports(2).exhausts(&[10..=12], None, &[10, 11]),
            "2 ports"
        );
        assert_eq!(
            Ask::block(2).exhausts(&[10..=13], None, &[11, 13]),
            "block of 2 consecutive ports"
        );
        assert_eq!(
            Ask::block(2).exhausts(&[10..=10, 12..=12], None, &[]),
            "block of 2 consecutive ports"
        );
    }

    #[test]
    fn a_failing_check_stops_the_search_with_its_error() {
        let want = Want {
            preferred: None,
            count: 1,
            block: false,
            excluded: &BTreeSet::new(),
        };
        let mut asked = 0;
        let picked = pick(&want, &candidates(&[10..=19], &[]), None, |_| {
            asked += 1;
            Err("no such address")
        });
        assert_eq!(picked, Err("no such address"));
        assert_eq!(asked, 1);
    }
}

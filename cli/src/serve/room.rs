//! Sharing the connection table between users: who makes room for a newcomer.
//!
//! The table holds the connections still being read (`--max-connections`). A user
//! (a uid, as the kernel tells it) may hold at most its share of it
//! (`--max-connections-per-uid`, half the table by default): its newcomer beyond that
//! takes the place of its own oldest idle connection. When the table is full, the
//! newcomer takes the place of the oldest idle connection of the user holding the
//! most, counting the newcomer with its user; a newcomer whose user would then hold no
//! fewer than every other is refused instead (among equals, the first come keeps its
//! place). So one user's many or silent connections cost that user alone: another
//! user's newcomer always finds room while it holds fewer than the flooding user.
//!
//! Idle: nothing received yet (each connection is read as soon as it is accepted, so
//! a client that sent its request at once is never idle). An idle connection goes
//! before one that is sending, an older one before a younger.

use std::collections::HashMap;
use std::time::Instant;

/// A connection, as making room sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seat {
    pub(super) uid: u32,
    /// Nothing received yet.
    pub(super) idle: bool,
    pub(super) opened: Instant,
}

/// Why a connection is closed to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Crowding {
    /// Its user holds its whole share of the table (`--max-connections-per-uid`).
    OwnShare,
    /// The table is full (`--max-connections`) and its user holds the most.
    TableFull,
}

/// What to do with a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// There is room: take it.
    Take,
    /// Close the connection at this index in the table, then take the newcomer.
    Replace {
        index: usize,
        /// The user whose connection goes, and how many it holds.
        uid: u32,
        held: usize,
        why: Crowding,
    },
    /// No room that the newcomer's user is owed: close the newcomer.
    Refuse,
}

/// Whether a newcomer of user `uid` gets a place in a table of `seats` that holds at
/// most `max` connections, at most `per_uid` of them one user's.
pub(super) fn admit<S>(
    table: &[S],
    seat: impl Fn(&S) -> Seat,
    uid: u32,
    max: usize,
    per_uid: usize,
) -> Admission {
    let mut held: HashMap<u32, usize> = HashMap::new();
    for s in table {
        *held.entry(seat(s).uid).or_default() += 1;
    }
    let own = held.get(&uid).copied().unwrap_or(0);
    if own >= per_uid {
        return replace(table, &seat, uid, own, Crowding::OwnShare);
    }
    if table.len() < max {
        return Admission::Take;
    }
    // The user holding the most, counting the newcomer with its own; on a tie, the
    // newcomer's user gives way.
    let (top, most) = held
        .iter()
        .filter(|&(&other, _)| other != uid)
        .map(|(&other, &n)| (other, n))
        .max_by_key(|&(other, n)| (n, std::cmp::Reverse(other)))
        .unwrap_or((uid, 0));
    if most > own + 1 {
        replace(table, &seat, top, most, Crowding::TableFull)
    } else if own > 0 {
        replace(table, &seat, uid, own, Crowding::TableFull)
    } else {
        Admission::Refuse
    }
}

/// Replaces the first idle, else the oldest, connection of `uid`.
fn replace<S>(
    table: &[S],
    seat: &impl Fn(&S) -> Seat,
    uid: u32,
    held: usize,
    why: Crowding,
) -> Admission {
    let victim = table
        .iter()
        .enumerate()
        .map(|(index, s)| (index, seat(s)))
        .filter(|(_, s)| s.uid == uid)
        .min_by_key(|(_, s)| (!s.idle, s.opened));
    match victim {
        Some((index, _)) => Admission::Replace {
            index,
            uid,
            held,
            why,
        },
        // Only with a share of 0, which the command line refuses.
        None => Admission::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A table of seats opened one millisecond apart, in order.
    fn table(seats: &[(u32, bool)]) -> Vec<Seat> {
        let start = Instant::now();
        seats
            .iter()
            .enumerate()
            .map(|(i, &(uid, idle))| Seat {
                uid,
                idle,
                opened: start + Duration::from_millis(i as u64),
            })
            .collect()
    }

    fn admit_to(seats: &[Seat], uid: u32, max: usize, per_uid: usize) -> Admission {
        admit(seats, |s| *s, uid, max, per_uid)
    }

    #[test]
    fn room_is_taken_while_there_is_some() {
        let seats = table(&[(1, true), (2, true)]);
        assert_eq!(admit_to(&seats, 3, 4, 2), Admission::Take);
        assert_eq!(admit_to(&seats, 1, 4, 2), Admission::Take);
    }

    #[test]
    fn a_user_at_its_share_gives_up_its_own_oldest_idle_connection() {
        let seats = table(&[(1, false), (2, true), (1, true), (1, true)]);
        let replaced = admit_to(&seats, 1, 10, 3);
        assert_eq!(
            replaced,
            Admission::Replace {
                index: 2,
                uid: 1,
                held: 3,
                why: Crowding::OwnShare
            }
        );
        // None idle: the oldest.
        let seats = table(&[(2, true), (1, false), (1, false)]);
        assert!(matches!(
            admit_to(&seats, 1, 10, 2),
            Admission::Replace { index: 1, .. }
        ));
    }

    #[test]
    fn a_full_table_makes_room_from_the_user_holding_the_most() {
        let seats = table(&[(1, true), (1, true), (1, true), (2, true)]);
        assert_eq!(
            admit_to(&seats, 3, 4, 4),
            Admission::Replace {
                index: 0,
                uid: 1,
                held: 3,
                why: Crowding::TableFull
            }
        );
        // Uid 2 would hold 2 to uid 1's 3: uid 1 still gives way.
        assert!(matches!(
            admit_to(&seats, 2, 4, 4),
            Admission::Replace { uid: 1, .. }
        ));
        // Uid 1's newcomer takes the place of uid 1's own.
        assert!(matches!(
            admit_to(&seats, 1, 4, 4),
            Admission::Replace {
                uid: 1,
                index: 0,
                ..
            }
        ));
    }

    #[test]
    fn among_equals_the_first_come_keeps_its_place() {
        let seats = table(&[(1, true), (2, true)]);
        assert_eq!(admit_to(&seats, 3, 2, 2), Admission::Refuse);
        // A user already there takes the place of its own.
        assert!(matches!(
            admit_to(&seats, 2, 2, 2),
            Admission::Replace {
                uid: 2,
                index: 1,
                ..
            }
        ));
    }
}

//! The names of the files in a registry directory, in one place.
//!
//! The first two are shared with the seed (the Python module portlease grew from), so
//! they are part of the on-disk protocol: renaming one splits the two tools' registries.
//! This module depends on nothing, so any other (the error messages among them) may
//! name a file without knowing the module that reads or writes it.

use std::time::Duration;

/// The registry file, shared with the seed: one JSON object keyed by decimal port.
pub const REGISTRY_FILE: &str = "port_registry.json";

/// The lock file, shared with the seed: `flock`ed around every read-modify-write,
/// never renamed or deleted.
pub const LOCK_FILE: &str = "port_registry.lock";

/// portlease's own request board: shared memory in which processes post their requests
/// for whoever holds the lock to serve.
pub const BOARD_FILE: &str = "port_registry.queue";

/// The largest registry every party reads, in bytes (64 MiB). portlease refuses a
/// write that would make the registry larger (a real one holds at most 65535
/// entries of a few hundred bytes), and reads a larger one, written by someone
/// else, only in part: it salvages the entries in its first [`MAX_REGISTRY_BYTES`]
/// / 4 bytes and keeps the whole file aside.
pub const MAX_REGISTRY_BYTES: u64 = 64 << 20;

/// The most bytes (UTF-8) of free text a request may write into an entry: its
/// label, and its source. Longer text is refused with
/// [`Error::InvalidRequest`](crate::Error::InvalidRequest).
pub const MAX_TEXT_BYTES: usize = 4096;

/// Where a new registry is written before it is renamed over the old one.
pub(crate) const TEMP_FILE: &str = "port_registry.json.tmp";

/// The name under which a damaged registry's original bytes are kept, made unique by
/// the time (since the Unix epoch) at which it was found damaged.
pub(crate) fn corrupt_file(since_epoch: Duration) -> String {
    format!(
        "{REGISTRY_FILE}.corrupt-{}.{:09}",
        since_epoch.as_secs(),
        since_epoch.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_registry_is_kept_beside_it_under_a_name_that_sorts_by_time() {
        let earlier = corrupt_file(Duration::new(1_700_000_000, 5));
        let later = corrupt_file(Duration::new(1_700_000_000, 40));
        assert_eq!(earlier, "port_registry.json.corrupt-1700000000.000000005");
        assert!(earlier < later);
    }
}

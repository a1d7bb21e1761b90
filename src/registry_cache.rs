//! The registry as an allocator's last transaction left it, kept for its next one.
//!
//! Reading the registry costs parsing every entry; a server that runs transaction
//! after transaction on a registry no one else writes meanwhile parses the same text
//! again and again. So a transaction that ends well keeps its registry together with
//! the exact bytes of the file it left (written, or read and unchanged). The next one
//! still reads the file under the lock, and takes the kept registry only if the bytes
//! it reads are byte for byte those: any difference (another process wrote, in place
//! or not, of whatever size) means a normal read. Nothing is judged by a timestamp,
//! an inode or a size. A transaction that fails keeps nothing.

use std::sync::Mutex;

use crate::directory::RegistryDir;
use crate::registry::Registry;

/// The registry kept, with the bytes of the file it is the reading of.
struct Kept {
    bytes: Vec<u8>,
    registry: Registry,
}

/// At most one kept registry, shared by an allocator's clones; a transaction takes it
/// (it is not copied), so two transactions never share one.
#[derive(Default)]
pub(crate) struct RegistryCache {
    kept: Mutex<Keeping>,
}

/// What is kept: the registry, and a buffer to read the next file into (the kept
/// bytes of the time before), so that a server reads and writes a registry of
/// hundreds of kilobytes again and again without asking for memory each time.
#[derive(Default)]
struct Keeping {
    registry: Option<Kept>,
    spare: Vec<u8>,
}

impl std::fmt::Debug for RegistryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCache").finish_non_exhaustive()
    }
}

impl RegistryCache {
    /// The registry that `bytes`, just read from the file in `dir`, hold: the kept
    /// one if it was kept with exactly these bytes, else read from them. Either way
    /// nothing stays kept.
    pub(crate) fn registry_of(&self, bytes: &[u8], dir: &RegistryDir) -> Registry {
        let Ok(mut kept) = self.kept.lock() else {
            // A poisoned lock holds nothing worth taking.
            return Registry::read(bytes, dir);
        };
        if let Some(Kept {
            bytes: was,
            registry,
        }) = kept.registry.take()
        {
            let same = was == bytes;
            kept.spare = was;
            if same {
                return registry;
            }
        }
        drop(kept);
        Registry::read(bytes, dir)
    }

    /// A buffer to read the registry file into: the bytes kept before last, emptied.
    pub(crate) fn buffer(&self) -> Vec<u8> {
        self.kept
            .lock()
            .map(|mut kept| std::mem::take(&mut kept.spare))
            .unwrap_or_default()
    }

    /// Keeps `registry` as the reading of a file holding exactly `bytes`. A salvaged
    /// registry is not kept: reading its file again salvages it again.
    pub(crate) fn keep(&self, bytes: Vec<u8>, mut registry: Registry) {
        if registry.was_damaged() {
            return;
        }
        registry.forget_given_records();
        if let Ok(mut kept) = self.kept.lock() {
            kept.registry = Some(Kept { bytes, registry });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, RegistryDir) {
        let temp = tempfile::tempdir().expect("a temp dir");
        let dir = RegistryDir::prepare(temp.path()).expect("the registry dir");
        (temp, dir)
    }

    fn keys(registry: &Registry) -> Vec<&str> {
        registry.entries.keys().map(String::as_str).collect()
    }

    #[test]
    fn the_kept_registry_serves_only_the_very_same_bytes_and_only_once() {
        let (_temp, dir) = dir();
        let first = br#"{"26310": {"pid": 1, "timestamp": 1.0}}"#;
        // Same length, one digit apart: as a writer changing the file in place might.
        let changed = br#"{"26311": {"pid": 1, "timestamp": 1.0}}"#;
        let cache = RegistryCache::default();
        // Kept with bytes it is not the reading of, to tell a hit from a read.
        let marker = Registry::read(br#"{"marker": {}}"#, &dir);
        cache.keep(first.to_vec(), marker);
        assert_eq!(keys(&cache.registry_of(changed, &dir)), ["26311"]);
        assert_eq!(
            keys(&cache.registry_of(first, &dir)),
            ["26310"],
            "a miss drops what was kept"
        );

        cache.keep(first.to_vec(), Registry::read(br#"{"marker": {}}"#, &dir));
        assert_eq!(keys(&cache.registry_of(first, &dir)), ["marker"], "a hit");
        assert_eq!(
            keys(&cache.registry_of(first, &dir)),
            ["26310"],
            "taken, not copied"
        );
    }

    #[test]
    fn a_salvaged_registry_is_not_kept() {
        let (_temp, dir) = dir();
        let damaged = br#"{"26312": {"pid": 1, "timestamp": 1.0}, "26313": garb"#;
        let cache = RegistryCache::default();
        let salvaged = Registry::read(damaged, &dir);
        assert!(salvaged.was_damaged());
        cache.keep(damaged.to_vec(), salvaged);
        assert!(cache.registry_of(damaged, &dir).was_damaged(), "read again");
    }
}

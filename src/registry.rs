//! The on-disk registry: `port_registry.json`, read whole and replaced atomically.
//!
//! The format is the seed's: one JSON object whose keys are decimal ports and whose
//! values are objects with at least `pid` and `timestamp`. Whatever else is in the file
//! (entries and fields portlease does not understand) is kept as it is.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, linkat, renameat, unlinkat};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::directory::RegistryDir;
use crate::error::{Error, Result};
use crate::files::{create_for_writing, open_for_reading};
use crate::record::{LeaseRecord, Record, SEED_LEASE_SECS, unix_now};
use crate::salvage;

use crate::layout::{MAX_REGISTRY_BYTES, REGISTRY_FILE, TEMP_FILE, corrupt_file};

/// How much of a registry past [`MAX_REGISTRY_BYTES`] is salvaged: the entries in
/// its first quarter. What that salvage writes back is bounded by construction well
/// within the limit (each entry read grows by a few bytes of punctuation at most, and
/// the placeholders, one per distinct port key of up to five digits, take under
/// 20 MiB), so the registry it leaves takes new leases again.
const SALVAGE_PREFIX: usize = (MAX_REGISTRY_BYTES / 4) as usize;

/// One entry: its text as read (written back byte for byte unless portlease changes
/// it), and what portlease makes of it, worked out when first asked: a transaction
/// that meets few entries reads few.
pub(crate) struct Entry {
    raw: Box<RawValue>,
    record: OnceCell<Record>,
    /// Whether `record` was set from a lease rather than read from `raw`: a registry
    /// kept for the next transaction forgets such records, so that every record it
    /// holds is what its text says (as a registry read anew would have it).
    record_given: bool,
}

impl<'de> serde::Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Entry, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Entry::read)
    }
}

impl Entry {
    fn read(raw: Box<RawValue>) -> Entry {
        Entry {
            raw,
            record: OnceCell::new(),
            record_given: false,
        }
    }

    /// A new entry for a lease.
    pub(crate) fn new(lease: LeaseRecord) -> Entry {
        let raw = to_raw(&lease.to_value());
        Entry {
            raw,
            record: OnceCell::from(Record::Lease(lease)),
            record_given: true,
        }
    }

    /// What the entry says.
    pub(crate) fn record(&self) -> &Record {
        self.record.get_or_init(|| Record::parse(self.raw.get()))
    }

    /// Rewrites portlease's fields with `lease`, keeping every field it does not know
    /// (another tool's, or a newer portlease's).
    pub(crate) fn update(&mut self, lease: LeaseRecord) {
        let mut fields: Map<String, Value> =
            serde_json::from_str(self.raw.get()).unwrap_or_default();
        if let Value::Object(ours) = lease.to_value() {
            fields.extend(ours);
        }
        self.raw = to_raw(&Value::Object(fields));
        self.record = OnceCell::from(Record::Lease(lease));
        self.record_given = true;
    }
}

fn to_raw(value: &Value) -> Box<RawValue> {
    // A Value always serializes, and its text is valid JSON.
    serde_json::value::to_raw_value(value)
        .unwrap_or_else(|_| unreachable!("a JSON value serializes"))
}

/// The registry's entries, keyed as in the file.
pub(crate) struct Registry {
    pub(crate) entries: BTreeMap<String, Entry>,
    /// What was wrong with the file read, if it did not parse whole: its original is
    /// kept aside before the salvaged registry replaces it.
    damaged: Option<Damage>,
}

/// A registry file that did not read whole, and how its original is kept aside.
enum Damage {
    /// Damaged bytes, all read: they are written aside.
    Bytes(Vec<u8>),
    /// A file past [`MAX_REGISTRY_BYTES`], read only in part: the file itself is
    /// kept aside under a second name (a hard link), without reading it whole.
    Oversize,
}

impl Registry {
    /// Reads the bytes of the registry file in `dir` into `bytes` (emptied first, its
    /// room reused): none for a missing file. At most [`MAX_REGISTRY_BYTES`] + 1 bytes
    /// are read: a file past the limit is read in part (and salvaged from there).
    pub(crate) fn read_bytes(dir: &RegistryDir, bytes: &mut Vec<u8>) -> Result<()> {
        bytes.clear();
        let path = dir.join(REGISTRY_FILE);
        let Some(file) = open_for_reading(dir, REGISTRY_FILE)? else {
            return Ok(());
        };
        let size = file
            .metadata()
            .map_err(|e| Error::io("cannot inspect", &path, e))?
            .len();
        let room = size.min(MAX_REGISTRY_BYTES + 1);
        bytes.reserve(usize::try_from(room).unwrap_or(0).max(4096));
        file.take(MAX_REGISTRY_BYTES + 1)
            .read_to_end(bytes)
            .map_err(|e| Error::io("cannot read the registry", &path, e))?;
        Ok(())
    }

    /// The registry these bytes (of the file in `dir`) hold; empty ones are an empty
    /// registry, damaged ones give every entry that can still be read.
    pub(crate) fn read(bytes: &[u8], dir: &RegistryDir) -> Registry {
        Registry::parse(bytes, &dir.join(REGISTRY_FILE), dir.writable())
    }

    /// Reads `bytes` (of the file at `path`); `writes` says whether the reader will
    /// write a salvage back, and so keep a damaged original aside.
    fn parse(bytes: &[u8], path: &Path, writes: bool) -> Registry {
        // Straight into entries: a server reads the whole registry once a transaction,
        // and a sound registry needs no salvage.
        if bytes.is_empty() {
            return Registry {
                entries: BTreeMap::new(),
                damaged: None,
            };
        }
        let oversize = bytes.len() as u64 > MAX_REGISTRY_BYTES;
        if !oversize && let Ok(entries) = serde_json::from_slice(bytes) {
            return Registry {
                entries,
                damaged: None,
            };
        }
        let salvaged = if oversize {
            salvage::read(&bytes[..SALVAGE_PREFIX], unix_now())
        } else {
            let whole = salvage::read(bytes, unix_now());
            if salvage_size(&whole) as u64 > MAX_REGISTRY_BYTES {
                // Written back it would pass the limit (each entry gains a few bytes of
                // punctuation, a placeholder more): salvage what fits by construction.
                salvage::read(&bytes[..SALVAGE_PREFIX.min(bytes.len())], unix_now())
            } else {
                whole
            }
        };
        let entries = salvaged
            .entries
            .into_iter()
            .map(|(key, raw)| (key, Entry::read(raw)))
            .collect::<BTreeMap<_, _>>();
        if !salvaged.damaged && !oversize {
            return Registry {
                entries,
                damaged: None,
            };
        }
        let kept = if writes {
            format!("its original will be kept beside it as {REGISTRY_FILE}.corrupt-<time>")
        } else {
            format!(
                "its original is not kept aside: this reader writes nothing, and the next \
                 process that writes the registry keeps it beside it as \
                 {REGISTRY_FILE}.corrupt-<time>"
            )
        };
        let what = if oversize {
            format!(
                "is larger than {} MiB, more than any registry holds: salvaged from its first \
                 {} MiB",
                MAX_REGISTRY_BYTES >> 20,
                SALVAGE_PREFIX >> 20
            )
        } else {
            format!("is damaged ({} bytes)", bytes.len())
        };
        log::warn!(
            "the registry {} {what}: kept {} entries whole, held {} unreadable ones as \
             placeholders (their ports stay leased for {SEED_LEASE_SECS} s), and lost {} \
             damaged stretches that named no entry; {kept}",
            path.display(),
            entries.len() - salvaged.placeholders,
            salvaged.placeholders,
            salvaged.skipped,
        );
        Registry {
            entries,
            damaged: Some(if oversize {
                Damage::Oversize
            } else {
                Damage::Bytes(bytes.to_vec())
            }),
        }
    }

    /// Whether the file read was damaged and salvaged.
    pub(crate) fn was_damaged(&self) -> bool {
        self.damaged.is_some()
    }

    /// Replaces the registry in `dir` with these entries: written to a temporary file
    /// in the same directory, then renamed over the old one, so a reader (or a crash)
    /// sees the old registry or the new one, never a mix. A damaged original is first
    /// kept aside, so nothing it held is lost. A registry that would be larger than
    /// [`MAX_REGISTRY_BYTES`] is not written ([`Error::TooLarge`]). On any error the
    /// directory is left as it was: no temporary file, no copy kept aside.
    /// Returns the bytes written, encoded in `buffer` (its room reused).
    pub(crate) fn save(&mut self, dir: &RegistryDir, buffer: Vec<u8>) -> Result<Vec<u8>> {
        let mut text = buffer;
        self.encode_into(&mut text);
        if text.len() as u64 > MAX_REGISTRY_BYTES {
            return Err(Error::TooLarge {
                path: dir.join(REGISTRY_FILE),
                size: text.len() as u64,
            });
        }
        let aside = match &self.damaged {
            Some(damage) => Some(keep_aside(dir, damage)?),
            None => None,
        };
        let replaced = write_new_file(dir, TEMP_FILE, &text, false).and_then(|()| {
            renameat(dir.fd(), TEMP_FILE, dir.fd(), REGISTRY_FILE).map_err(|e| {
                remove_quietly(dir, TEMP_FILE);
                Error::io(
                    "cannot replace the registry",
                    dir.join(REGISTRY_FILE),
                    e.into(),
                )
            })
        });
        if let Err(error) = replaced {
            if let Some(aside) = &aside {
                // The original is still in place: its copy would only be litter.
                remove_quietly(dir, aside);
            }
            return Err(error);
        }
        if let Some(aside) = aside {
            log::warn!(
                "kept the damaged registry's original as {}",
                dir.join(&aside).display()
            );
        }
        self.damaged = None;
        Ok(text)
    }

    /// Forgets the records set from leases, to be read from their text when next
    /// asked: then the registry is exactly what reading its file anew gives.
    pub(crate) fn forget_given_records(&mut self) {
        for entry in self.entries.values_mut() {
            if entry.record_given {
                entry.record = OnceCell::new();
                entry.record_given = false;
            }
        }
    }

    /// The file's text: one entry per line, each as it was read unless changed.
    fn encode_into(&self, text: &mut Vec<u8>) {
        let size: usize = self
            .entries
            .iter()
            .map(|(k, e)| k.len() + e.raw.get().len() + 8)
            .sum();
        text.clear();
        text.reserve(size + 4);
        text.push(b'{');
        for (i, (key, entry)) in self.entries.iter().enumerate() {
            text.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
            if needs_no_escape(key) {
                text.push(b'"');
                text.extend_from_slice(key.as_bytes());
                text.push(b'"');
            } else {
                // Writing a string into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *text, key);
            }
            text.extend_from_slice(b": ");
            text.extend_from_slice(entry.raw.get().as_bytes());
        }
        text.extend_from_slice(b"\n}\n");
    }

    /// The file's text.
    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let mut text = Vec::new();
        self.encode_into(&mut text);
        text
    }
}

/// Whether JSON writes `key` as it is between its quotes: it holds no control
/// character, quote or backslash (a port's digits, nearly always).
fn needs_no_escape(key: &str) -> bool {
    key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Keeps the damaged original aside under a new name, which it returns: its bytes
/// written anew, or, for a file too large to have been read whole, the file itself
/// linked under that name (it stays whole there once the salvage replaces it).
fn keep_aside(dir: &RegistryDir, damage: &Damage) -> Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let name = corrupt_file(now);
    match damage {
        Damage::Bytes(original) => write_new_file(dir, &name, original, true)?,
        Damage::Oversize => {
            linkat(dir.fd(), REGISTRY_FILE, dir.fd(), &name, AtFlags::empty()).map_err(|e| {
                Error::io(
                    "cannot keep the oversized registry aside as",
                    dir.join(&name),
                    e.into(),
                )
            })?;
        }
    }
    Ok(name)
}

/// Writes `bytes` as the new file `name`; if writing (not opening) fails, the file
/// is removed again, so a failed write leaves nothing behind.
fn write_new_file(dir: &RegistryDir, name: &str, bytes: &[u8], exclusive: bool) -> Result<()> {
    create_for_writing(dir, name, exclusive)?
        .write_all(bytes)
        .map_err(|e| {
            remove_quietly(dir, name);
            Error::io("cannot write", dir.join(name), e)
        })
}

/// Removes a file portlease made in `dir`, on the way out of an error that says
/// what failed; a failure to remove it would not say more.
fn remove_quietly(dir: &RegistryDir, name: &str) {
    if let Err(e) = unlinkat(dir.fd(), name, AtFlags::empty()) {
        log::debug!("could not remove {}: {e}", dir.join(name).display());
    }
}

/// How many bytes the salvaged entries take once written, as
/// [`Registry::encode_into`] writes them.
fn salvage_size(salvaged: &salvage::Salvaged) -> usize {
    let key_size = |key: &str| {
        if needs_no_escape(key) {
            key.len() + 2
        } else {
            serde_json::to_string(key).map_or(key.len() * 6 + 2, |quoted| quoted.len())
        }
    };
    salvaged
        .entries
        .iter()
        .map(|(key, raw)| 2 + key_size(key) + 2 + raw.get().len())
        .sum::<usize>()
        + 4
}

#[cfg(test)]
mod round_trip {
    use super::*;

    #[test]
    fn entries_are_written_back_byte_for_byte() {
        let text = br#"{"10000": {"pid": 1, "timestamp": 1795973039.2655141, "x": [1,  2]}, "note": "kept"}"#;
        let registry = Registry::parse(text, Path::new("test"), true);
        let encoded = String::from_utf8(registry.encode()).expect("UTF-8");
        assert!(
            encoded
                .contains(r#""10000": {"pid": 1, "timestamp": 1795973039.2655141, "x": [1,  2]}"#),
            "{encoded}"
        );
        let again: Value = serde_json::from_str(&encoded).expect("valid JSON");
        let odd = "a \"key\"\\ with\tescapes, é";
        let escaped: BTreeMap<String, Entry> =
            [(odd.to_string(), Entry::read(to_raw(&Value::Null)))].into();
        let registry = Registry {
            entries: escaped,
            damaged: None,
        };
        let read: Value = serde_json::from_slice(&registry.encode()).expect("valid JSON");
        assert!(read.get(odd).is_some(), "{read}");
        assert_eq!(
            again,
            serde_json::from_slice::<Value>(text).expect("valid JSON")
        );
    }

    #[test]
    fn a_salvage_that_would_pass_the_limit_is_cut_to_one_that_fits() {
        // Compact entries, near the limit, then damage: written back one a line, each
        // grows by a few bytes, and the whole would pass the limit.
        let value = format!("\"{}\"", "v".repeat(4 << 10));
        let mut text = String::from("{");
        let mut i = 0;
        while (text.len() + value.len() + 32) as u64 <= MAX_REGISTRY_BYTES - 64 {
            text.push_str(&format!("\"k{i}\":{value},"));
            i += 1;
        }
        text.push_str("garbage");
        let whole = salvage::read(text.as_bytes(), 0.0);
        assert!(
            salvage_size(&whole) as u64 > MAX_REGISTRY_BYTES,
            "the case is real"
        );
        let registry = Registry::parse(text.as_bytes(), Path::new("test"), true);
        assert!(registry.was_damaged());
        let written = registry.encode();
        assert!(written.len() as u64 <= MAX_REGISTRY_BYTES);
        // The estimate is the size written, give or take the first entry's comma.
        let estimate = salvage_size(&salvage::read(&written, 0.0));
        assert!((written.len()..=written.len() + 1).contains(&estimate));
        assert!(registry.entries.len() > 3000, "the first quarter's entries");
    }
}

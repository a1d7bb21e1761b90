//! The on-disk registry: `port_registry.json`, read whole and replaced atomically.
//!
//! The format is the seed's: one JSON object whose keys are decimal ports and whose
//! values are objects with at least `pid` and `timestamp`. Whatever else is in the file
//! (entries and fields portlease does not understand) is kept as it is.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::renameat;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::directory::RegistryDir;
use crate::error::{Error, Result};
use crate::files::{create_for_writing, open_for_reading};
use crate::record::{LeaseRecord, Record, SEED_LEASE_SECS, unix_now};
use crate::salvage;

use crate::layout::{REGISTRY_FILE, TEMP_FILE, corrupt_file};

/// A registry larger than this is not one (a real one holds at most 65535 entries of
/// a few hundred bytes): it is refused rather than read into memory.
const MAX_REGISTRY_BYTES: u64 = 64 << 20;

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
    /// The original bytes of a file that did not parse whole; they are kept aside
    /// before the salvaged registry replaces them.
    damaged: Option<Vec<u8>>,
}

impl Registry {
    /// Reads the bytes of the registry file in `dir` into `bytes` (emptied first, its
    /// room reused): none for a missing file.
    pub(crate) fn read_bytes(dir: &RegistryDir, bytes: &mut Vec<u8>) -> Result<()> {
        bytes.clear();
        let path = dir.join(REGISTRY_FILE);
        let Some(file) = open_for_reading(dir, REGISTRY_FILE)? else {
            return Ok(());
        };
        let too_big = || Error::Unsafe {
            path: path.clone(),
            reason: format!(
                "it is larger than {} MiB, far more than any registry, so it is not one; move \
                 it away (portlease starts a new one)",
                MAX_REGISTRY_BYTES >> 20
            ),
        };
        let size = file
            .metadata()
            .map_err(|e| Error::io("cannot inspect", &path, e))?
            .len();
        if size > MAX_REGISTRY_BYTES {
            return Err(too_big());
        }
        bytes.reserve(usize::try_from(size).unwrap_or(0).max(4096));
        file.take(MAX_REGISTRY_BYTES + 1)
            .read_to_end(bytes)
            .map_err(|e| Error::io("cannot read the registry", &path, e))?;
        if bytes.len() as u64 > MAX_REGISTRY_BYTES {
            return Err(too_big());
        }
        Ok(())
    }

    /// The registry these bytes (of the file in `dir`) hold; empty ones are an empty
    /// registry, damaged ones give every entry that can still be read.
    pub(crate) fn read(bytes: &[u8], dir: &RegistryDir) -> Registry {
        Registry::parse(bytes, &dir.join(REGISTRY_FILE))
    }

    fn parse(bytes: &[u8], path: &Path) -> Registry {
        // Straight into entries: a server reads the whole registry once a transaction,
        // and a sound registry needs no salvage.
        if bytes.is_empty() {
            return Registry {
                entries: BTreeMap::new(),
                damaged: None,
            };
        }
        if let Ok(entries) = serde_json::from_slice(bytes) {
            return Registry {
                entries,
                damaged: None,
            };
        }
        let salvaged = salvage::read(bytes, unix_now());
        let entries = salvaged
            .entries
            .into_iter()
            .map(|(key, raw)| (key, Entry::read(raw)))
            .collect::<BTreeMap<_, _>>();
        if !salvaged.damaged {
            return Registry {
                entries,
                damaged: None,
            };
        }
        log::warn!(
            "the registry {} is damaged ({} bytes): kept {} entries whole, held {} unreadable \
             ones as placeholders (their ports stay leased for {SEED_LEASE_SECS} s), and lost \
             {} damaged stretches that named no entry; its original bytes will be kept \
             beside it as {REGISTRY_FILE}.corrupt-<time>",
            path.display(),
            bytes.len(),
            entries.len() - salvaged.placeholders,
            salvaged.placeholders,
            salvaged.skipped,
        );
        Registry {
            entries,
            damaged: Some(bytes.to_vec()),
        }
    }

    /// Whether the file read was damaged and salvaged.
    pub(crate) fn was_damaged(&self) -> bool {
        self.damaged.is_some()
    }

    /// Replaces the registry in `dir` with these entries: written to a temporary file
    /// in the same directory, then renamed over the old one, so a reader (or a crash)
    /// sees the old registry or the new one, never a mix. A damaged original is first
    /// kept aside, so nothing it held is lost.
    /// Returns the bytes written, encoded in `buffer` (its room reused).
    pub(crate) fn save(&mut self, dir: &RegistryDir, buffer: Vec<u8>) -> Result<Vec<u8>> {
        if let Some(original) = &self.damaged {
            let aside = keep_aside(dir, original)?;
            log::warn!(
                "kept the damaged registry's original bytes as {}",
                aside.display()
            );
            self.damaged = None;
        }
        let mut text = buffer;
        self.encode_into(&mut text);
        write_new_file(dir, TEMP_FILE, &text, false)?;
        renameat(dir.fd(), TEMP_FILE, dir.fd(), REGISTRY_FILE).map_err(|e| {
            Error::io(
                "cannot replace the registry",
                dir.join(REGISTRY_FILE),
                e.into(),
            )
        })?;
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

fn keep_aside(dir: &RegistryDir, original: &[u8]) -> Result<PathBuf> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let name = corrupt_file(now);
    write_new_file(dir, &name, original, true)?;
    Ok(dir.join(&name))
}

fn write_new_file(dir: &RegistryDir, name: &str, bytes: &[u8], exclusive: bool) -> Result<()> {
    create_for_writing(dir, name, exclusive)?
        .write_all(bytes)
        .map_err(|e| Error::io("cannot write", dir.join(name), e))
}

#[cfg(test)]
mod round_trip {
    use super::*;

    #[test]
    fn entries_are_written_back_byte_for_byte() {
        let text = br#"{"10000": {"pid": 1, "timestamp": 1795973039.2655141, "x": [1,  2]}, "note": "kept"}"#;
        let registry = Registry::parse(text, Path::new("test"));
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
}

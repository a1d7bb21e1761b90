//! The on-disk registry: `port_registry.json`, read whole and replaced atomically.
//!
//! The format is the seed's: one JSON object whose keys are decimal ports and whose
//! values are objects with at least `pid` and `timestamp`. Whatever else is in the file
//! (entries and fields portlease does not understand) is kept as it is.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::files::{open_no_follow, refuse_link_or};
use crate::record::{LeaseRecord, Record};

/// The registry file, shared with the seed.
pub const REGISTRY_FILE: &str = "port_registry.json";
/// The lock file, shared with the seed: flock'ed, never renamed or deleted.
pub const LOCK_FILE: &str = "port_registry.lock";
/// Where a new registry is written before it is renamed over the old one.
const TEMP_FILE: &str = "port_registry.json.tmp";

/// One entry: its text as read (written back byte for byte unless portlease changes
/// it), and what portlease makes of it, worked out when first asked: a transaction
/// that meets few entries reads few.
pub(crate) struct Entry {
    raw: Box<RawValue>,
    record: OnceCell<Record>,
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
        }
    }

    /// A new entry for a lease.
    pub(crate) fn new(lease: LeaseRecord) -> Entry {
        let raw = to_raw(&lease.to_value());
        Entry {
            raw,
            record: OnceCell::from(Record::Lease(lease)),
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
    /// Reads the registry in `dir`; a missing or empty file is an empty registry, a
    /// damaged one gives every entry that can still be read.
    pub(crate) fn load(dir: &Path) -> Result<Registry> {
        let path = dir.join(REGISTRY_FILE);
        let bytes = match open_no_follow(&path, OpenOptions::new().read(true)) {
            Ok(mut file) => {
                let mut bytes = Vec::with_capacity(4096);
                file.read_to_end(&mut bytes)
                    .map_err(|e| Error::io("cannot read the registry", &path, e))?;
                bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(refuse_link_or(e, "cannot open the registry", &path)),
        };
        Ok(Registry::parse(bytes, &path))
    }

    fn parse(bytes: Vec<u8>, path: &Path) -> Registry {
        let read = |pairs: BTreeMap<String, Box<RawValue>>| -> BTreeMap<String, Entry> {
            pairs
                .into_iter()
                .map(|(key, raw)| (key, Entry::read(raw)))
                .collect()
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Registry {
                entries: BTreeMap::new(),
                damaged: None,
            };
        }
        // Straight into entries: a server reads the whole registry once a transaction.
        if let Ok(entries) = serde_json::from_slice(&bytes) {
            return Registry {
                entries,
                damaged: None,
            };
        }
        let entries = read(salvage(&bytes));
        log::warn!(
            "the registry {} is damaged ({} bytes); salvaged {} entries from it, and its \
             original bytes will be kept beside it as {REGISTRY_FILE}.corrupt-<time>",
            path.display(),
            bytes.len(),
            entries.len()
        );
        Registry {
            entries,
            damaged: Some(bytes),
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
    pub(crate) fn save(&mut self, dir: &Path) -> Result<()> {
        if let Some(original) = &self.damaged {
            let aside = keep_aside(dir, original)?;
            log::warn!(
                "kept the damaged registry's original bytes as {}",
                aside.display()
            );
            self.damaged = None;
        }
        let temp = dir.join(TEMP_FILE);
        write_new_file(
            &temp,
            &self.encode(),
            OpenOptions::new().write(true).create(true).truncate(true),
        )?;
        let path = dir.join(REGISTRY_FILE);
        std::fs::rename(&temp, &path).map_err(|e| Error::io("cannot replace the registry", path, e))
    }

    /// The file's text: one entry per line, each as it was read unless changed.
    fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .entries
            .iter()
            .map(|(k, e)| k.len() + e.raw.get().len() + 8)
            .sum();
        let mut text = Vec::with_capacity(size + 4);
        text.push(b'{');
        for (i, (key, entry)) in self.entries.iter().enumerate() {
            text.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut text, key);
            text.extend_from_slice(b": ");
            text.extend_from_slice(entry.raw.get().as_bytes());
        }
        text.extend_from_slice(b"\n}\n");
        text
    }
}

/// Reads `{ "key": value, ... }` pair by pair and keeps every pair read whole before
/// the first fault: a truncated file keeps the entries before the cut.
fn salvage(bytes: &[u8]) -> BTreeMap<String, Box<RawValue>> {
    let mut entries = BTreeMap::new();
    let mut rest = skip_whitespace(bytes);
    let Some(after_brace) = rest.strip_prefix(b"{") else {
        return entries;
    };
    rest = after_brace;
    loop {
        rest = skip_whitespace(rest);
        let Some((key, after_key)) = next_json::<String>(rest) else {
            return entries;
        };
        let Some(after_colon) = skip_whitespace(after_key).strip_prefix(b":") else {
            return entries;
        };
        let Some((value, after_value)) = next_json::<Box<RawValue>>(after_colon) else {
            return entries;
        };
        entries.insert(key, value);
        match skip_whitespace(after_value).split_first() {
            Some((b',', after_comma)) => rest = after_comma,
            _ => return entries,
        }
    }
}

/// Parses one JSON value at the start of `bytes`; returns it and what follows.
fn next_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<(T, &[u8])> {
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<T>();
    let value = stream.next()?.ok()?;
    Some((value, &bytes[stream.byte_offset()..]))
}

fn skip_whitespace(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn keep_aside(dir: &Path, original: &[u8]) -> Result<PathBuf> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let aside = dir.join(format!(
        "{REGISTRY_FILE}.corrupt-{}.{:09}",
        now.as_secs(),
        now.subsec_nanos()
    ));
    write_new_file(
        &aside,
        original,
        OpenOptions::new().write(true).create_new(true),
    )?;
    Ok(aside)
}

fn write_new_file(path: &Path, bytes: &[u8], options: &mut OpenOptions) -> Result<()> {
    let mut file =
        open_no_follow(path, options).map_err(|e| refuse_link_or(e, "cannot create", path))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("cannot write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(entries: &BTreeMap<String, Box<RawValue>>) -> Vec<&str> {
        entries.keys().map(String::as_str).collect()
    }

    #[test]
    fn a_truncated_registry_keeps_the_entries_before_the_cut() {
        let text = br#"{"10000": {"pid": 1, "timestamp": 2.0}, "10001": {"pid": 3, "timest"#;
        assert_eq!(keys(&salvage(text)), ["10000"]);
    }

    #[test]
    fn garbage_salvages_nothing() {
        assert!(salvage(b"\x00\xffnot json").is_empty());
    }

    #[test]
    fn trailing_garbage_keeps_every_entry() {
        let text = br#"{"1": {"pid": 1}, "x": [1, 2]} trailing"#;
        assert_eq!(keys(&salvage(text)), ["1", "x"]);
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;

    #[test]
    fn entries_are_written_back_byte_for_byte() {
        let text = br#"{"10000": {"pid": 1, "timestamp": 1795973039.2655141, "x": [1,  2]}, "note": "kept"}"#;
        let registry = Registry::parse(text.to_vec(), Path::new("test"));
        let encoded = String::from_utf8(registry.encode()).expect("UTF-8");
        assert!(
            encoded
                .contains(r#""10000": {"pid": 1, "timestamp": 1795973039.2655141, "x": [1,  2]}"#),
            "{encoded}"
        );
        let again: Value = serde_json::from_str(&encoded).expect("valid JSON");
        assert_eq!(
            again,
            serde_json::from_slice::<Value>(text).expect("valid JSON")
        );
    }
}

//! The on-disk registry: `port_registry.json`, read whole and replaced atomically.
//!
//! The format is the seed's: one JSON object whose keys are decimal ports and whose
//! values are objects with at least `pid` and `timestamp`. Whatever else is in the file
//! (entries and fields portlease does not understand) is kept as it is.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The registry file, shared with the seed.
pub const REGISTRY_FILE: &str = "port_registry.json";
/// The lock file, shared with the seed: flock'ed, never renamed or deleted.
pub const LOCK_FILE: &str = "port_registry.lock";
/// Where a new registry is written before it is renamed over the old one.
const TEMP_FILE: &str = "port_registry.json.tmp";

/// The registry's entries, keyed as in the file.
pub(crate) struct Registry {
    pub(crate) entries: Map<String, Value>,
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
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Registry {
                entries: Map::new(),
                damaged: None,
            };
        }
        if let Ok(entries) = serde_json::from_slice::<Map<String, Value>>(&bytes) {
            return Registry {
                entries,
                damaged: None,
            };
        }
        let entries = salvage(&bytes);
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
        let mut bytes = serde_json::to_vec_pretty(&self.entries).map_err(|e| {
            Error::io(
                "cannot encode the registry",
                dir.join(REGISTRY_FILE),
                e.into(),
            )
        })?;
        bytes.push(b'\n');
        let temp = dir.join(TEMP_FILE);
        write_new_file(
            &temp,
            &bytes,
            OpenOptions::new().write(true).create(true).truncate(true),
        )?;
        let path = dir.join(REGISTRY_FILE);
        std::fs::rename(&temp, &path).map_err(|e| Error::io("cannot replace the registry", path, e))
    }
}

/// Reads `{ "key": value, ... }` pair by pair and keeps every pair read whole before
/// the first fault: a truncated file keeps the entries before the cut.
fn salvage(bytes: &[u8]) -> Map<String, Value> {
    let mut entries = Map::new();
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
        let Some((value, after_value)) = next_json::<Value>(after_colon) else {
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
    let mut file = open_no_follow(path, options.mode(0o600))
        .map_err(|e| refuse_link_or(e, "cannot create", path))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("cannot write", path, e))
}

fn open_no_follow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    options
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn refuse_link_or(e: io::Error, action: &'static str, path: &Path) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        Error::Unsafe {
            path: path.to_path_buf(),
            reason: "it is a symbolic link; portlease never follows links in its directory, \
                     so remove it"
                .into(),
        }
    } else {
        Error::io(action, path, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(entries: &Map<String, Value>) -> Vec<&str> {
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

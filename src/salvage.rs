//! Reading a registry file that is not plain JSON: every entry that can be read on
//! its own is kept, wherever the damage is.
//!
//! - What Python's `json` module writes and reads is accepted: a leading UTF-8 BOM,
//!   and `NaN`, `Infinity`, `-Infinity`, kept as the largest finite numbers (`NaN`
//!   as the largest positive one: like it, never more than 300 s before now), which
//!   the seed's 300 s rule judges as it judged the originals. Not as `null`: the
//!   seed's `now - timestamp` fails on it, and with it every allocation.
//! - Bytes that are not UTF-8 are replaced (U+FFFD), so a bad byte in a label costs
//!   the label's byte, not the entry.
//! - After a damaged stretch, reading picks up again at the next `"<digits>":` key at
//!   depth 1 of an object (or at the start of a line, where portlease and the seed
//!   write their top-level keys), so a bad entry costs that entry alone, and two
//!   objects back to back both count. Where damage throws off the depth or the
//!   quoting (a file on one line, or indented deeper), an entry is also found by its
//!   shape alone: a port key, an object that reads whole, then `,` or `}`.
//! - An entry whose key can be read but whose value cannot is kept as a placeholder
//!   in the seed's format, which holds its port for the seed's 300 s from now: its
//!   owner may well be alive, and its port must not go out again at once.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::value::RawValue;

use crate::record::SEED_LEASE_SECS;

/// What a registry's bytes gave.
#[derive(Default)]
pub(crate) struct Salvaged {
    /// Every entry read, placeholders included, keyed as in the file.
    pub(crate) entries: BTreeMap<String, Box<RawValue>>,
    /// Whether anything was lost or replaced: then the original bytes are kept aside.
    pub(crate) damaged: bool,
    /// How many entries are placeholders for values that could not be read.
    pub(crate) placeholders: usize,
    /// How many damaged stretches named no entry that could be read.
    pub(crate) skipped: usize,
}

/// Reads the registry's bytes; `now` (Unix seconds) dates placeholders.
pub(crate) fn read(bytes: &[u8], now: f64) -> Salvaged {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = String::from_utf8_lossy(bytes);
    let invalid_utf8 = matches!(text, Cow::Owned(_));
    let text = replace_non_finite(&text);
    if text.bytes().all(|b| b.is_ascii_whitespace()) {
        return Salvaged {
            damaged: invalid_utf8,
            ..Salvaged::default()
        };
    }
    if let Ok(entries) = serde_json::from_str(&text) {
        return Salvaged {
            entries,
            damaged: invalid_utf8,
            ..Salvaged::default()
        };
    }
    let mut salvaged = resynchronising(&text, now);
    salvaged.damaged = true;
    salvaged
}

/// A key found by a scan: the key, where its value starts, and where the key starts.
type FoundKey = (String, usize, usize);

/// Reads `{ "key": value, ... }` pair by pair; after a fault, scans on for the next
/// port key and reads on from there.
fn resynchronising(text: &str, now: f64) -> Salvaged {
    let bytes = text.as_bytes();
    let mut out = Salvaged::default();
    let mut placeholders = BTreeSet::new();
    let mut pos = skip_whitespace(bytes, 0);
    let mut depth = 0;
    // Whether a key may follow right here (after `{` or `,`), with no scanning.
    let mut key_expected = false;
    if bytes.get(pos) == Some(&b'{') {
        pos += 1;
        depth = 1;
        key_expected = true;
    }
    // Whether the stretch being scanned began at an unreadable value (counted there).
    let mut after_placeholder = false;
    // The next entry found by its shape, and where the search began: kept while
    // still ahead, so that many faults do not each scan the rest of the file.
    let mut entry_ahead: Option<(usize, Option<(FoundKey, bool)>)> = None;
    // How many bytes the search by shape may still read: a few times the file, so
    // that no damage makes reading it slower than linear.
    let mut shape_budget = bytes.len().saturating_mul(8).saturating_add(1 << 20);
    loop {
        let direct = if key_expected {
            key_here(text, pos)
        } else {
            None
        };
        let (key, value_start, known_unreadable) = match direct {
            Some((key, value_start)) => (key, value_start, false),
            None => {
                // Depth and quoting are guessed from the bytes, and damage can throw
                // both off to the end of a file not written one entry per line: so a
                // whole entry found by its shape alone counts too, if it comes first.
                if entry_ahead.as_ref().is_some_and(|(from, found)| {
                    *from > pos
                        || found
                            .as_ref()
                            .is_some_and(|((_, _, start), _)| *start < pos)
                }) {
                    entry_ahead = None;
                }
                let by_shape = entry_ahead
                    .get_or_insert_with(|| (pos, scan_for_entry(text, pos, &mut shape_budget)))
                    .1
                    .clone();
                // Only a key before the one found by shape matters: so the scan by
                // depth stops there, and no fault makes it read the rest of the file.
                let limit = by_shape
                    .as_ref()
                    .map_or(bytes.len(), |((_, _, start), _)| *start + 1);
                let found = match (scan_for_key(bytes, pos, depth, limit), by_shape) {
                    (Some(key), Some((entry, readable))) if entry.2 < key.2 => {
                        Some((entry, readable))
                    }
                    (Some(key), _) => Some((key, true)),
                    (None, entry) => entry,
                };
                let stretch_end = found
                    .as_ref()
                    .map_or(bytes.len(), |((_, _, start), _)| *start);
                if !after_placeholder && !is_filler(&bytes[pos..stretch_end]) {
                    out.skipped += 1;
                }
                match found {
                    Some(((key, value_start, _), readable)) => (key, value_start, !readable),
                    None => break,
                }
            }
        };
        after_placeholder = false;
        let value = if known_unreadable {
            None
        } else {
            next_value(&text[value_start..]).filter(|(raw, _)| !holds_entries(raw))
        };
        match value {
            Some((raw, len)) => {
                placeholders.remove(&key);
                out.entries.insert(key, raw);
                pos = skip_whitespace(bytes, value_start + len);
                (key_expected, depth) = match bytes.get(pos) {
                    Some(b',') => (true, 1),
                    Some(b'}') => (false, 0),
                    None => break,
                    Some(_) => (false, 1),
                };
                if key_expected || depth == 0 {
                    pos += 1;
                }
            }
            None => {
                if let Entry::Vacant(vacant) = out.entries.entry(key.clone()) {
                    vacant.insert(placeholder(now));
                    placeholders.insert(key);
                }
                pos = value_start;
                depth = 1;
                key_expected = false;
                after_placeholder = true;
            }
        }
    }
    out.placeholders = placeholders.len();
    out
}

/// A key and its colon right at `pos` (after whitespace): the key and where its
/// value starts.
fn key_here(text: &str, pos: usize) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let start = skip_whitespace(bytes, pos);
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<String>();
    let key = stream.next()?.ok()?;
    let colon = skip_whitespace(bytes, start + stream.byte_offset());
    (bytes.get(colon) == Some(&b':')).then(|| (key, colon + 1))
}

/// Scans from `pos` (at object depth `depth`) for the next key that names a port:
/// `"<digits>":` at depth 1, or at the start of a line, starting before `limit`.
/// Returns the key, where its value starts and where the key starts.
fn scan_for_key(
    bytes: &[u8],
    mut pos: usize,
    mut depth: usize,
    limit: usize,
) -> Option<(String, usize, usize)> {
    while pos < limit.min(bytes.len()) {
        match bytes[pos] {
            b'"' => {
                let end = string_end(bytes, pos);
                let content = &bytes[pos + 1..end.saturating_sub(1).max(pos + 1)];
                let colon = skip_whitespace(bytes, end);
                let is_port_key = !content.is_empty()
                    && content.len() <= 5
                    && content.iter().all(u8::is_ascii_digit)
                    && bytes.get(end - 1) == Some(&b'"')
                    && bytes.get(colon) == Some(&b':');
                if is_port_key && (depth == 1 || starts_line(bytes, pos)) {
                    let key = String::from_utf8_lossy(content).into_owned();
                    return Some((key, colon + 1, pos));
                }
                pos = end;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        pos += 1;
    }
    None
}

/// The longest entry the search by shape reads (a real one is a few hundred bytes).
const MAX_ENTRY_BYTES: usize = 64 << 10;

/// Scans from `pos` for the next entry by its shape alone, whatever the depth or
/// quoting the bytes before it suggest: `"<digits>":` and an object, which either
/// reads whole and is followed by `,`, `}` or the end, or does not read (then its
/// key is still held, by a placeholder). A JSON string cannot hold such a key (its
/// quotes would be escaped), so outside damage only a real entry, or one nested in
/// another entry's value, matches. Each candidate's value is read for at most
/// [`MAX_ENTRY_BYTES`], all of them for at most `budget` bytes in all. Returns what
/// [`scan_for_key`] does, and whether the value read.
fn scan_for_entry(text: &str, mut pos: usize, budget: &mut usize) -> Option<(FoundKey, bool)> {
    let bytes = text.as_bytes();
    while let Some(offset) = bytes.get(pos..)?.iter().position(|&b| b == b'"') {
        let start = pos + offset;
        pos = start + 1;
        let digits = bytes[pos..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if !(1..=5).contains(&digits) || bytes.get(pos + digits) != Some(&b'"') {
            continue;
        }
        let colon = skip_whitespace(bytes, pos + digits + 1);
        if bytes.get(colon) != Some(&b':') {
            continue;
        }
        let value_start = colon + 1;
        if bytes.get(skip_whitespace(bytes, value_start)) != Some(&b'{') {
            continue;
        }
        if *budget == 0 {
            return None;
        }
        let end = value_start
            .saturating_add((*budget).min(MAX_ENTRY_BYTES))
            .min(bytes.len());
        *budget -= end - value_start;
        let key = || String::from_utf8_lossy(&bytes[pos..pos + digits]).into_owned();
        let mut stream = serde_json::Deserializer::from_slice(&bytes[value_start..end])
            .into_iter::<serde::de::IgnoredAny>();
        if !matches!(stream.next(), Some(Ok(_))) {
            return Some(((key(), value_start, start), false));
        }
        let after = skip_whitespace(bytes, value_start + stream.byte_offset());
        if matches!(bytes.get(after), None | Some(b',' | b'}')) {
            return Some(((key(), value_start, start), true));
        }
    }
    None
}

/// Where the string starting at `start` (a quote) ends: after its closing quote, or
/// at a line break, which a JSON string cannot hold (so a lost quote costs one line).
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut pos = start + 1;
    while pos < bytes.len() {
        match bytes[pos] {
            b'\\' => pos += 2,
            b'"' => return pos + 1,
            b'\n' => return pos,
            _ => pos += 1,
        }
    }
    bytes.len()
}

/// Whether `pos` is the first thing on its line, after at most two spaces (how
/// portlease and the seed's `indent=2` write top-level keys). It looks back three
/// bytes at most: looking back to the line's start from every key of a long line
/// would take quadratic time.
fn starts_line(bytes: &[u8], pos: usize) -> bool {
    let indent = bytes[..pos]
        .iter()
        .rev()
        .take(3)
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    indent <= 2 && (indent == pos || bytes[pos - indent - 1] == b'\n')
}

/// Whether a skipped stretch held nothing but JSON's own punctuation and whitespace.
fn is_filler(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_whitespace() || matches!(b, b',' | b'{' | b'}'))
}

/// Whether a value holds what looks like registry entries (a port key with an
/// object value) among its own fields: an entry whose closing brace was lost reads
/// whole by swallowing the entries after it, which must be read as entries instead.
/// No entry portlease or the seed writes has such a field.
fn holds_entries(raw: &RawValue) -> bool {
    serde_json::from_str::<BTreeMap<String, &RawValue>>(raw.get()).is_ok_and(|fields| {
        fields.iter().any(|(key, value)| {
            (1..=5).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_digit())
                && value.get().starts_with('{')
        })
    })
}

/// One JSON value at the start of `text`, and its length.
fn next_value(text: &str) -> Option<(Box<RawValue>, usize)> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Box<RawValue>>();
    let value = stream.next()?.ok()?;
    Some((value, stream.byte_offset()))
}

/// An entry in the seed's format that holds its port for the seed's 300 s from now.
fn placeholder(now: f64) -> Box<RawValue> {
    let value = serde_json::json!({
        "pid": 0,
        "timestamp": now,
        "salvaged": format!(
            "this entry could not be read; its port is held for {SEED_LEASE_SECS} s from \
             its salvage"
        ),
    });
    serde_json::value::to_raw_value(&value)
        .unwrap_or_else(|_| unreachable!("a JSON value serializes"))
}

/// Replaces Python's `NaN`, `Infinity` and `-Infinity` outside strings with JSON.
fn replace_non_finite(text: &str) -> Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        if bytes[pos] == b'"' {
            pos = string_end(bytes, pos);
            continue;
        }
        let word_start = pos == 0 || !is_word(bytes[pos - 1]);
        let token = [
            ("-Infinity", "-1.7976931348623157e308"),
            ("Infinity", "1.7976931348623157e308"),
            ("NaN", "1.7976931348623157e308"),
        ]
        .into_iter()
        .find(|(token, _)| {
            bytes[pos..].starts_with(token.as_bytes())
                && !bytes.get(pos + token.len()).is_some_and(|&b| is_word(b))
        });
        match token {
            Some((token, replacement)) if word_start => {
                out.push_str(&text[copied..pos]);
                out.push_str(replacement);
                pos += token.len();
                copied = pos;
            }
            _ => pos += 1,
        }
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
}

fn skip_whitespace(bytes: &[u8], pos: usize) -> usize {
    bytes[pos.min(bytes.len())..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(bytes.len(), |i| pos + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &[u8]) -> Vec<String> {
        read(text, 0.0).entries.into_keys().collect()
    }

    #[test]
    fn a_truncated_registry_keeps_the_entries_before_the_cut_and_holds_the_cut_one() {
        let text = br#"{"10000": {"pid": 1, "timestamp": 2.0}, "10001": {"pid": 3, "timest"#;
        let salvaged = read(text, 0.0);
        assert_eq!(salvaged.placeholders, 1);
        assert_eq!(keys(text), ["10000", "10001"]);
    }

    #[test]
    fn garbage_salvages_nothing() {
        assert!(keys(b"\x00\xffnot json").is_empty());
    }

    #[test]
    fn trailing_garbage_keeps_every_entry() {
        let text = br#"{"1": {"pid": 1}, "x": [1, 2]} trailing"#;
        assert_eq!(keys(text), ["1", "x"]);
    }

    #[test]
    fn a_bad_token_costs_its_entry_alone() {
        let text = br#"{"1": {"pid": 1, BROKEN}, "2": {"pid": 2}, "3": {"a": {"4": 1}}}"#;
        let salvaged = read(text, 0.0);
        assert_eq!(keys(text), ["1", "2", "3"]);
        assert_eq!(salvaged.placeholders, 1);
    }

    #[test]
    fn python_non_finite_numbers_and_a_bom_are_read() {
        let text =
            "\u{feff}{\"1\": {\"pid\": 1, \"t\": NaN, \"u\": -Infinity, \"label\": \"NaN\"}}";
        let salvaged = read(text.as_bytes(), 0.0);
        assert!(!salvaged.damaged);
        assert_eq!(
            salvaged.entries["1"].get(),
            r#"{"pid": 1, "t": 1.7976931348623157e308, "u": -1.7976931348623157e308, "label": "NaN"}"#
        );
    }

    #[test]
    fn a_missing_comma_nul_bytes_and_objects_back_to_back_lose_nothing() {
        let text = b"{\"1\": {\"pid\": 1} \"2\": {}, \0\0\0\0 \"3\": {}}{\"4\": {}}";
        let salvaged = read(text, 0.0);
        assert_eq!(keys(text), ["1", "2", "3", "4"]);
        assert_eq!(salvaged.placeholders, 0);
        assert_eq!(salvaged.skipped, 1, "the NUL bytes");
    }

    #[test]
    fn an_entry_that_lost_its_closing_brace_costs_itself_alone() {
        let text = br#"{"1": {"pid": 1, "2": {"pid": 2}, "3": {"pid": 3}}"#;
        let salvaged = read(text, 0.0);
        assert_eq!(keys(text), ["1", "2", "3"]);
        assert_eq!(salvaged.placeholders, 1);
    }

    #[test]
    fn a_lost_quote_costs_one_line() {
        let text = b"{\n\"1\": {\"pid\": 1, \"label\": \"x},\n\"2\": {\"pid\": 2}\n}";
        assert_eq!(keys(text), ["1", "2"]);
    }
}

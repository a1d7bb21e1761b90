//! The arguments of the Python API, checked where they arrive: each is taken as the
//! object the caller passed, and refused with `InvalidRequest` saying what was wrong
//! and what to write, by the library's rules (`portlease::parse`). So a bool where a
//! number is meant, an int too wide for any Rust type, a float where an int is meant,
//! NaN, or text that does not parse raises `InvalidRequest`, never `OverflowError`,
//! `TypeError` or a bare `ValueError`; and the pythonic layer passes values on as it
//! got them.

use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use portlease::parse::{self, Rule};
use portlease::{Owner, Protocol};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyRange, PyString, PyTuple};

use crate::errors::invalid;

/// The object as the caller wrote it, for messages.
fn shown(value: &Bound<'_, PyAny>) -> String {
    value.repr().map_or_else(
        |_| "an object without a repr".to_owned(),
        |repr| repr.to_string(),
    )
}

/// A Python int as a whole number; `None` for anything else, a bool among them (an int
/// to Python, but never meant as a number). An int wider than `i128` is the farthest
/// `i128` of its sign, which every rule refuses as it would the int.
fn whole(value: &Bound<'_, PyAny>) -> PyResult<Option<i128>> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Ok(None);
    }
    match value.extract::<i128>() {
        Ok(number) => Ok(Some(number)),
        Err(_) if value.lt(0)? => Ok(Some(i128::MIN)),
        Err(_) => Ok(Some(i128::MAX)),
    }
}

/// `value`'s text when it is a str (`None` for anything else); an error for a str that
/// is no UTF-8 (it holds a lone surrogate).
fn str_of(value: &Bound<'_, PyAny>) -> Option<PyResult<String>> {
    let text = value.cast::<PyString>().ok()?;
    Some(text.to_cow().map(Cow::into_owned).map_err(|_| {
        invalid(format!(
            "{} is no UTF-8 text: it holds a lone surrogate",
            shown(value)
        ))
    }))
}

/// An int that follows `rule`.
fn by_rule<T>(value: &Bound<'_, PyAny>, what: &str, rule: &Rule<i128, T>) -> PyResult<T> {
    whole(value)?
        .and_then(|number| rule.accept(number))
        .ok_or_else(|| invalid(rule.refusal(what, &shown(value))))
}

/// `None`, or what `check` makes of the value.
fn optional<T>(
    value: &Bound<'_, PyAny>,
    check: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<T>,
) -> PyResult<Option<T>> {
    if value.is_none() {
        return Ok(None);
    }
    check(value).map(Some)
}

/// A port, 1-65535.
pub(crate) fn port(value: &Bound<'_, PyAny>, what: &str) -> PyResult<u16> {
    by_rule(value, what, &parse::PORT)
}

/// A port, or `None`.
pub(crate) fn optional_port(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<u16>> {
    optional(value, |value| port(value, what))
}

/// A process id.
pub(crate) fn pid(value: &Bound<'_, PyAny>, what: &str) -> PyResult<u32> {
    by_rule(value, what, &parse::PID)
}

/// How many ports to lease.
pub(crate) fn count(value: &Bound<'_, PyAny>, what: &str) -> PyResult<usize> {
    by_rule(value, what, &parse::COUNT)
}

/// Any int (not a bool), for the calls that take ints that are no ports as the seed
/// took them.
pub(crate) fn int(value: &Bound<'_, PyAny>, what: &str) -> PyResult<i128> {
    whole(value)?.ok_or_else(|| invalid(format!("{what} must be an int, not {}", shown(value))))
}

/// An int, or `None`.
pub(crate) fn optional_int(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<i128>> {
    optional(value, |value| int(value, what))
}

/// A number of seconds: an int or a float (not a bool), by [`parse::SECONDS`].
pub(crate) fn seconds(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Duration> {
    let number = !value.is_instance_of::<PyBool>()
        && (value.is_instance_of::<PyFloat>() || value.is_instance_of::<PyInt>());
    // An int past a float's range is as refused as infinity.
    let secs = number.then(|| value.extract::<f64>().unwrap_or(f64::INFINITY));
    secs.and_then(|secs| parse::SECONDS.accept(secs))
        .ok_or_else(|| invalid(parse::SECONDS.refusal(what, &shown(value))))
}

/// A number of seconds, or `None`.
pub(crate) fn optional_seconds(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<Duration>> {
    optional(value, |value| seconds(value, what))
}

/// True or False, nothing else (not 1, not "no").
pub(crate) fn flag(value: &Bound<'_, PyAny>, what: &str) -> PyResult<bool> {
    match value.cast::<PyBool>() {
        Ok(flag) => Ok(flag.is_true()),
        Err(_) => Err(invalid(format!(
            "{what} must be True or False, not {}",
            shown(value)
        ))),
    }
}

/// A str, or `None`.
pub(crate) fn text(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<String>> {
    optional(value, |value| {
        str_of(value).unwrap_or_else(|| {
            Err(invalid(format!(
                "{what} must be a str or None, not {}",
                shown(value)
            )))
        })
    })
}

/// Texts, from any iterable of str.
pub(crate) fn texts(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    let refused = || {
        invalid(format!(
            "{what} must be an iterable of str, not {}",
            shown(value)
        ))
    };
    if value.is_instance_of::<PyString>() {
        return Err(refused());
    }
    let items = value.try_iter().map_err(|_| refused())?;
    items
        .map(|item| str_of(&item?).unwrap_or_else(|| Err(refused())))
        .collect()
}

/// A directory's path: a str or an `os.PathLike` of one (not empty, no NUL), or
/// `None`.
pub(crate) fn directory(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<String>> {
    optional(value, |value| {
        let os = value.py().import("os")?;
        let path = if value.is_instance(&os.getattr("PathLike")?)? {
            os.getattr("fspath")?.call1((value,))?
        } else {
            value.clone()
        };
        match str_of(&path) {
            Some(Ok(path)) if !path.is_empty() && !path.contains('\0') => Ok(path),
            _ => Err(invalid(format!(
                "{what} must be a directory's path (a str or os.PathLike) or None, not {}",
                shown(value)
            ))),
        }
    })
}

/// The address the bind check tries: an IP address or `localhost` (in any case), by
/// [`parse::host`]; `None` or `""` for every address, as the seed's `""` was.
pub(crate) fn host(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<IpAddr>> {
    match text(value, what)? {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => parse::host(&text)
            .map(Some)
            .map_err(|e| invalid(format!("{what} {e}"))),
    }
}

/// `"tcp"`, `"udp"` or `"both"`.
pub(crate) fn protocol(value: &Bound<'_, PyAny>) -> PyResult<Protocol> {
    match str_of(value) {
        Some(Ok(text)) => text.parse().map_err(crate::errors::to_py),
        _ => Err(invalid(format!(
            "unknown protocol {}: use tcp, udp or both",
            shown(value)
        ))),
    }
}

/// The kind of socket to bind: `"tcp"` or `"udp"`.
pub(crate) fn socket_kind(value: &Bound<'_, PyAny>) -> PyResult<Protocol> {
    match str_of(value).and_then(Result::ok).as_deref() {
        Some("tcp") => Ok(Protocol::Tcp),
        Some("udp") => Ok(Protocol::Udp),
        _ => Err(invalid(format!(
            "unknown socket kind {}: use 'tcp' or 'udp'",
            shown(value)
        ))),
    }
}

/// Whose lease it is: `"self"`, a pid, or `None` (no process).
pub(crate) fn owner(value: &Bound<'_, PyAny>) -> PyResult<Owner> {
    if value.is_none() {
        return Ok(Owner::Nobody);
    }
    if str_of(value).and_then(Result::ok).as_deref() == Some("self") {
        return Ok(Owner::CurrentProcess);
    }
    if whole(value)?.is_some() {
        return pid(value, "owner").map(Owner::Process);
    }
    Err(invalid(format!(
        "owner must be 'self', a pid or None, not {}",
        shown(value)
    )))
}

/// A request's TTL: `"default"` (`None`: the library's default), `None` (as long as
/// the owner lives), or seconds.
pub(crate) fn ttl(value: &Bound<'_, PyAny>) -> PyResult<Option<Option<Duration>>> {
    if str_of(value).and_then(Result::ok).as_deref() == Some("default") {
        return Ok(None);
    }
    optional_seconds(value, "ttl").map(Some)
}

/// The ranges to search; `None` for the default ones. One range is a `(start, end)`
/// tuple, a `range` object of step 1, or text (`START-END`, or several joined by
/// commas as `$PORTLEASE_RANGE` writes them); or an iterable of those.
pub(crate) fn ranges(value: &Bound<'_, PyAny>) -> PyResult<Option<Vec<RangeInclusive<u16>>>> {
    if value.is_none() {
        return Ok(None);
    }
    if is_one_range(value)? {
        return one_range(value).map(Some);
    }
    let Ok(specs) = value.try_iter() else {
        return Err(invalid(format!(
            "ranges {} must be a range or an iterable of ranges ((start, end), range \
             objects, 'START-END')",
            shown(value)
        )));
    };
    let mut ranges = Vec::new();
    for spec in specs {
        ranges.extend(one_range(&spec?)?);
    }
    if ranges.is_empty() {
        return Err(invalid(format!(
            "ranges={} names no port range: give one, or leave ranges out for the default",
            shown(value)
        )));
    }
    Ok(Some(ranges))
}

/// Whether `value` is one range rather than several: a range object, text, or a pair
/// of ints.
fn is_one_range(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    if value.is_instance_of::<PyRange>() || value.is_instance_of::<PyString>() {
        return Ok(true);
    }
    let Ok(pair) = value.cast::<PyTuple>() else {
        return Ok(false);
    };
    Ok(pair.len() == 2 && pair.iter().all(|item| item.is_instance_of::<PyInt>()))
}

/// The range (or, from text, the ranges) `spec` writes.
fn one_range(spec: &Bound<'_, PyAny>) -> PyResult<Vec<RangeInclusive<u16>>> {
    if let Some(text) = str_of(spec) {
        return parse::ranges(&text?).map_err(invalid);
    }
    let (start, end) = if spec.is_instance_of::<PyRange>() {
        let step = spec.getattr("step")?;
        if whole(&step)? != Some(1) {
            return Err(invalid(format!(
                "{} must be a range with step 1",
                shown(spec)
            )));
        }
        (spec.getattr("start")?, spec.getattr("stop")?.sub(1)?)
    } else if let Ok(pair) = spec.cast::<PyTuple>()
        && pair.len() == 2
    {
        (pair.get_item(0)?, pair.get_item(1)?)
    } else {
        return Err(invalid(format!(
            "range {} must be a (start, end) tuple, a range object or a 'START-END' string",
            shown(spec)
        )));
    };
    let start = port(&start, "a range's start")?;
    let end = port(&end, "a range's end")?;
    Ok(vec![parse::range_between(start, end).map_err(invalid)?])
}

/// Ports, from any iterable of them.
pub(crate) fn ports(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u16>> {
    let Ok(items) = value.try_iter() else {
        return Err(invalid(format!(
            "{what} must be an iterable of port numbers, not {}",
            shown(value)
        )));
    };
    let every = format!("every port in {what}");
    items.map(|item| port(&item?, &every)).collect()
}

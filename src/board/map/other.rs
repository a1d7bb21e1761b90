//! Elsewhere than Linux there is no board (no futexes): a mapping is never made, and
//! so no word of one is ever waited on.

use std::fs::File;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};
use std::time::Duration;

/// A mapping that cannot exist.
pub(crate) enum Mapping {}

impl Mapping {
    pub(crate) fn new(_: &File, _: usize) -> std::io::Result<Mapping> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    pub(crate) fn broken(&self) -> bool {
        match *self {}
    }

    pub(crate) fn u32_at(&self, _: usize) -> &AtomicU32 {
        match *self {}
    }

    pub(crate) fn u64_at(&self, _: usize) -> &AtomicU64 {
        match *self {}
    }

    pub(crate) fn bytes(&self, _: usize, _: usize) -> &[AtomicU8] {
        match *self {}
    }
}

/// Unreachable without a mapping; sleeps, to be harmless.
pub(crate) fn wait_while(_: &AtomicU32, _: u32, timeout: Duration) {
    std::thread::sleep(timeout);
}

/// Unreachable without a mapping.
pub(crate) fn wake_one(_: &AtomicU32) {}

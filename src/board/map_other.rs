//! Elsewhere than Linux there is no board (no futexes): a mapping is never made.

use std::fs::File;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

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

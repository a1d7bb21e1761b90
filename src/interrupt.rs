//! Calling off a wait: a check that the caller installs on its thread for the duration
//! of a call, consulted at least every [`SLICE`] while the call waits for the registry
//! lock or for its request on the request board to be served.
//!
//! A program that handles signals (Python's Ctrl-C, a shutdown flag) installs a check
//! with [`with_check`]; when the check says stop, the wait is abandoned exactly as at a
//! lock timeout, and the call fails with [`Error::Interrupted`].
//! A request given up on leaves the registry as it was: an allocation leases nothing
//! (or, if it was served meanwhile, returns its lease, to be dropped by the caller).
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! # fn main() -> portlease::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let allocator = portlease::Allocator::with_dir(dir.path())?;
//! let stop = Arc::new(AtomicBool::new(false)); // set by a signal handler, say
//! let flag = Arc::clone(&stop);
//! let lease = portlease::interrupt::with_check(
//!     move || flag.load(Ordering::Relaxed),
//!     || allocator.allocate(&portlease::Request::new().range(38390..=38399)),
//! )?;
//! # drop(lease);
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// The longest a wait sleeps before it consults the installed check.
pub const SLICE: Duration = Duration::from_millis(100);

/// A check, as installed.
type Check = Box<dyn FnMut() -> bool>;

thread_local! {
    /// The check installed on this thread, if any.
    static CHECK: Cell<Option<Check>> = const { Cell::new(None) };
}

/// Runs `work` with `check` installed on the calling thread: every wait of portlease
/// inside `work` (for the registry lock, or for a posted request to be served), on
/// this thread, calls `check` at least every [`SLICE`], and gives up with
/// [`Error::Interrupted`] when it returns `true`. Calls that
/// do not wait never call it.
///
/// The check runs on the calling thread, between waits, with no lock of portlease
/// held; it may block briefly (say, to take Python's GIL). A call into portlease from
/// inside the check runs without any check. The check that was installed before is
/// back in place when `work` returns or unwinds.
pub fn with_check<T>(check: impl FnMut() -> bool + 'static, work: impl FnOnce() -> T) -> T {
    /// Puts the previous check back, however `work` ends.
    struct Restore(Option<Check>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CHECK.with(|slot| slot.set(self.0.take()));
        }
    }
    let previous = CHECK.with(|slot| slot.replace(Some(Box::new(check))));
    let _restore = Restore(previous);
    work()
}

/// Consults the check installed on this thread, if any: `Err(Interrupted)` when it says
/// stop. `lock_file` names the lock the caller waits for, for the message.
pub(crate) fn check(lock_file: &Path) -> Result<()> {
    // Taken out while it runs, so that a call from inside it finds none installed.
    let Some(mut check) = CHECK.with(Cell::take) else {
        return Ok(());
    };
    let stop = check();
    CHECK.with(|slot| {
        // Installed anew from inside the check (and since restored): keep ours.
        if let Some(other) = slot.replace(Some(check)) {
            drop(other);
        }
    });
    if stop {
        return Err(Error::Interrupted {
            path: lock_file.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn a_check_is_consulted_only_while_installed_and_the_previous_one_comes_back() {
        let calls = Rc::new(Cell::new(0));
        let path = Path::new("/x/port_registry.lock");
        assert!(check(path).is_ok());
        let counted = Rc::clone(&calls);
        let outer = with_check(
            move || {
                counted.set(counted.get() + 1);
                false
            },
            || {
                assert!(check(path).is_ok());
                let inner = with_check(|| true, || check(path));
                assert!(matches!(inner, Err(Error::Interrupted { .. })));
                check(path)
            },
        );
        assert!(outer.is_ok());
        assert_eq!(calls.get(), 2);
        assert!(check(path).is_ok());
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn a_check_that_calls_portlease_sees_no_check() {
        let path = Path::new("/x/port_registry.lock");
        let result = with_check(|| check(Path::new("/y")).is_err(), || check(path));
        assert!(result.is_ok());
    }
}

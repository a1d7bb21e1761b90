//! The stop points by which portlease's own tests reach each interleaving of the
//! request board and of a hand-over every run: built only with the `test-hooks`
//! feature (which the project's test builds turn on), so a release build carries no
//! variable that makes a process stop itself.
//!
//! With `PORTLEASE_TEST_STOP_AT` set to `taken` (requests of other processes taken,
//! nothing saved) or `saved` (their transaction saved, no outcome handed out), a
//! process that serves another's request stops itself there (`SIGSTOP`), for the test
//! to let its posters give up, or to kill it, at exactly that point. `Lease::spawn`
//! stops at `forked` (the child waits, the lease is not handed yet), `handed` (the
//! lease is the child's, the gate still closed) and `started` (the gate opened).

/// Whether this build stops at the points `PORTLEASE_TEST_STOP_AT` names.
pub const ENABLED: bool = cfg!(feature = "test-hooks");

/// Stops the calling thread if `PORTLEASE_TEST_STOP_AT` names `step` (read once per
/// process); does nothing without the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub(crate) fn stop_here(step: &str) {
    static STOP_AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let stop_at = STOP_AT.get_or_init(|| std::env::var("PORTLEASE_TEST_STOP_AT").ok());
    if stop_at.as_deref() == Some(step) {
        log::debug!("stopping at step {step:?}, as PORTLEASE_TEST_STOP_AT asks");
        // Sent to this thread, not the process: the thread stops before it returns
        // from the call. (A signal to the process may be taken by another thread,
        // and this one would run on a little until the whole process stops.)
        // SAFETY: pthread_self names the calling thread, which is alive.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGSTOP) };
    }
}

/// Without the `test-hooks` feature: no stop points.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn stop_here(_step: &str) {}

/// The request board's layout, for tests that read its file: a header, then the slots,
/// whose first word holds the state in its low half.
pub mod board_layout {
    /// Bytes before the first slot.
    pub const HEADER: usize = crate::board::HEADER;
    /// How many slots follow the header.
    pub const SLOTS: usize = crate::board::slot::SLOTS;
    /// Bytes per slot.
    pub const SLOT_SIZE: usize = crate::board::slot::SLOT_SIZE;
    /// The header's word naming the designated waiter's pid (0 for none).
    pub const DESIGNATED: usize = crate::board::DESIGNATED;
    /// A slot's state: a request posted, not yet taken.
    pub const POSTED: u32 = crate::board::slot::POSTED;
    /// A slot's state: a request taken by a server.
    pub const TAKEN: u32 = crate::board::slot::TAKEN;
    /// A slot's state: a request its poster gave up on.
    pub const WITHDRAWN: u32 = crate::board::slot::WITHDRAWN;
}

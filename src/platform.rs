//! What this build can use of its system. On Linux, all of it; on macOS and the BSDs
//! (and on Linux built with `--cfg portlease_other_unix`, which CI runs the suite with
//! so that those paths run somewhere), none of it: every promise holds, with the
//! differences below.

/// Whether concurrent requests are batched through the shared request board (a
/// mapped file and futexes). Without it, each request takes the registry's lock
/// itself: the same result, a lock round trip per request.
pub const REQUEST_BOARD: bool = cfg!(linux_kernel);

/// Whether an owner is known by more than its pid: its start time (and pidfs inode)
/// tell it from a later process given the same pid, an exited owner that is not yet
/// reaped counts as gone, kernel threads are refused as owners, and a lease records
/// its owner's PID namespace, so that only processes in it judge the pid. Without
/// it, an owner lives while `kill(pid, 0)` finds its pid: a zombie owner keeps its
/// leases until it is reaped, and a later process given its pid keeps them until
/// their TTL passes (process-owned leases have none: until that process ends).
pub const PROCESS_IDENTITY: bool = cfg!(linux_kernel);

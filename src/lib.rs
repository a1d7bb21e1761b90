//! Port leases that never collide: TCP/UDP ports handed out to the processes of one
//! host through a registry they all share.
//!
//! "Pick a free port" races: a port free when you look may be taken before your server
//! binds it, by another test worker that looked at the same moment, by a child that
//! has not bound yet, or by an outgoing connection. portlease records every port it
//! hands out as a **lease** in a registry shared by all processes on the host, read
//! and written under one file lock, and checks by binding that no process outside the
//! registry holds the port. A lease ends when it is released, when its owner process
//! is gone, or when its time runs out.
//!
//! ```
//! # fn main() -> portlease::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! use portlease::{Allocator, Request};
//! use std::time::Duration;
//!
//! let allocator = Allocator::with_dir(dir.path())?;
//!
//! // A port for a child process to bind: the lease ends when the guard is dropped.
//! let lease = allocator.allocate(&Request::new().range(39100..=39199))?;
//! let port = lease.port();
//!
//! // Or a socket already bound, for a server in this process: no race at all.
//! let listener = allocator.allocate(&Request::new().range(39100..=39199))?.into_listener()?;
//! assert_ne!(listener.local_addr().unwrap().port(), port);
//!
//! // Ports that outlive this process, for 60 s, labelled for `portlease list`.
//! let kept = allocator
//!     .allocate(&Request::new().range(39100..=39199).count(2).owner(portlease::Owner::Nobody)
//!         .ttl(Some(Duration::from_secs(60))).label("docs"))?
//!     .keep();
//! assert_eq!(kept.len(), 2);
//! # Ok(()) }
//! ```
//!
//! # Design
//! Every operation is one transaction: take the lock (`port_registry.lock`, an
//! exclusive `flock`), read `port_registry.json` once, choose ports, write the registry
//! at most once (a temporary file renamed over the old one), release the lock.
//!
//! - **Waiting, and serving each other.** An allocation or a release is posted on a
//!   request board (`port_registry.queue`, shared memory). Whoever holds the lock
//!   serves every posted request in its transaction (one registry read and write for
//!   all) and hands out the outcomes; the others sleep on a futex until theirs comes.
//!   One poster at a time blocks on the `flock` itself, so a released lock is taken
//!   at once, with no polling; and as every holder serves every request posted before
//!   it looked, no request waits long behind others barging in (with `flock` alone,
//!   the p99 of a cycle was 17-25 ms at 16 processes; each request also cost its own
//!   registry write). The board never decides who holds the lock: the `flock` does,
//!   so processes that do not use the board (the seed) are excluded all the same. A
//!   process that dies while posting, waiting or serving is found out by its pid, and
//!   a request whose server died is served again, idempotently.
//! - **Choosing.** The preferred port if free, else next-fit: the first free port after
//!   the last one handed out, so a port released a moment ago does not go out again at
//!   once. A port is free when no live lease holds it and it can be bound.
//! - **Reclaiming.** A lease is judged when the search meets its port (a lease found
//!   stale there is reclaimed and its port used); every lease is judged in a full sweep
//!   on an allocator's first allocation, at most a second after its last sweep, and
//!   before it reports a range exhausted; [`Allocator::gc`] sweeps on demand. Judging
//!   costs a `/proc` read per owner, which a sweep of every transaction would spend.
//! - **Reading little.** Entries are kept as their JSON text, written back byte for
//!   byte, and parsed only when met, so a transaction's cost hardly grows with the
//!   number of leases.
//!
//! The file format is the one of the Python module portlease grew from (the "seed"),
//! so its processes and portlease can share one directory: keys are decimal ports,
//! values objects with at least `pid` and `timestamp`. portlease adds its own fields
//! inside each entry (`leased_at`, `owner`, `start_time`, `ttl`, `proto`, `label`,
//! `source`, `token`) and keeps whatever else it finds.
//!
//! The seed reclaims an entry 300 s after its `timestamp`, whatever else it says. So
//! portlease writes `timestamp` as the moment the seed should start counting, and
//! judges its own leases by its own fields (`leased_at` is when a lease was made or
//! last renewed):
//! - a lease with a TTL: `leased_at + ttl - 300`, so the seed reclaims it exactly when
//!   it ends;
//! - a lease that lasts while its owner process runs: a day ahead
//!   ([`OWNER_HORIZON_SECS`]), moved ahead again, at most hourly, by every transaction
//!   that meets the lease alive (an allocation that meets its port, a sweep, a `gc`).
//!   Once the owner is gone, the first allocation or `gc` that meets the lease removes
//!   it (listing only shows it), and seed processes may take the port from then on.
//!
//! # Guarantees
//! - No two live leases, from any number of processes and threads, share a port.
//! - A port is handed out only if it can be bound, without `SO_REUSEADDR`, for the
//!   protocols asked (by default on `0.0.0.0` and `[::]`, which catches a server on
//!   any local address, and a port in `TIME_WAIT`).
//! - A lease ends when its owner is gone: the owner is recorded as pid plus process
//!   start time, so a reused pid does not keep a dead lease alive.
//! - A process killed at any moment never leaves a torn registry; a failed write fails
//!   the operation and leaves the registry as it was.
//! - A damaged registry is never taken for an empty one: its bytes are kept aside as
//!   `port_registry.json.corrupt-<time>` and every entry still readable is kept.
//!   Entries portlease does not understand are kept, and their ports not handed out.
//!
//! # Security
//! The registry directory is created with mode 0700 and its files 0600. portlease
//! refuses a directory owned by another user or writable by group or others (whoever
//! can write there can forge or delete leases), and a registry or lock file that is a
//! symbolic link. To share ports between users, run one `portlease serve` that all of
//! them ask. Leases are cooperative: they keep out processes that ask portlease (or the
//! seed, or a portpicker client of `portlease serve`); the bind check catches the
//! others only while they hold the port.
//!
//! # Pitfalls
//! - A port is only checked, not held, between the lease and your server's `bind`: a
//!   process that uses no registry may take it in between. Prefer
//!   [`Lease::into_listener`] when the server runs in your process.
//! - Ports in the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`)
//!   can be taken by any outgoing connection; portlease warns when a range overlaps it.
//! - The default lease ([`Request::new`]) is owned by the calling process and has no
//!   TTL: it lasts until dropped or released, or the process ends. A lease owned by a
//!   process whose owner died stays in the file until a portlease transaction meets
//!   it; seed processes leave its port alone until then (for up to a day).
//! - `Owner::Nobody` leases (the default of `portlease alloc`) end only by TTL or
//!   release.
//! - With a `host`, the check binds that address alone, as the seed did: a server on
//!   another local address is then missed.
//! - One registry is for one network namespace: a request may be served, and its
//!   ports bind-checked, by another process using the same directory, so processes in
//!   different namespaces (containers) should not share one.
//! - Linux: owners' start times, the request board (futexes) and the portserver's
//!   abstract sockets are Linux's; portlease is built and tested there only.

//!
//! # Source map
//! One concern per file: `allocator` (the lease lifecycle, one transaction per
//! operation), `batch` and `board` (requests served for other processes, and the
//! shared memory they are posted in), `lock` (the `flock` with a deadline), `registry`
//! (the file: load with salvage, atomic save), `record` (what an entry says, whether
//! it is stale), `request`, `lease`, `probe` (bind checks), `process` (owner identity
//! and liveness), `sockets` (who holds a port), `directory` (where the registry lives,
//! and whether it is safe), `files` (opening files there without following links),
//! `snapshot` (listing), `seed_api`, `error`.

#![deny(missing_docs)]
// Examples, the README's among them, must compile without a warning.
#![doc(test(attr(deny(warnings))))]

mod allocator;
mod batch;
mod board;
mod directory;
mod error;
mod files;
mod lease;
mod lock;
pub mod probe;
mod process;
mod record;
mod registry;
mod request;
mod seed_api;
mod snapshot;
pub mod sockets;

pub use allocator::{Allocator, DEFAULT_LOCK_TIMEOUT};
pub use directory::{DIR_ENV, default_dir, is_ram_backed};
pub use error::{Error, Result};
pub use lease::Lease;
pub use process::ProcessId;
pub use record::{OWNER_HORIZON_SECS, REFRESH_AFTER_SECS, SEED_LEASE_SECS};
pub use registry::{LOCK_FILE, REGISTRY_FILE};
pub use request::{DEFAULT_RANGE, DEFAULT_TTL, Owner, Protocol, Request};
pub use seed_api::{allocate_port, release_port};
pub use snapshot::{EntryKind, LeaseInfo};

/// The README's Rust example, compiled (and its warnings denied) as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

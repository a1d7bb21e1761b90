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
//! // A port for a child process to bind: the lease ends when the guard is dropped,
//! // so keep the guard (`allocate(..)?.port()` alone would end it at once).
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
//! Code written for Rust's `portpicker` crate switches with one line,
//! `use portlease as portpicker;`: [`pick_unused_port`] leases a port to the process
//! until it exits (or [`return_port`]), and [`is_free`], [`is_free_tcp`] and
//! [`is_free_udp`] check by binding. Every front end searches the same default
//! ranges ([`default_ranges`]: `$PORTLEASE_RANGE`, else [`DEFAULT_RANGE`]).
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
//!   process that dies while posting, waiting or serving is found out (a lock holder
//!   that finds a request still taken knows its server died), and a request whose
//!   server died is served again, idempotently, by its token. A poster that gives up
//!   at its lock timeout withdraws its request: its server leaves it out of the
//!   transaction, or, if it saved already, ends its leases under the same lock, so
//!   an error leaves nothing leased. The board's states, who moves each, and what
//!   each party's death leaves are documented in `src/board/mod.rs`.
//! - **Choosing.** The preferred port if free, else next-fit: the first free port after
//!   the last one handed out, so a port released a moment ago does not go out again at
//!   once. A port is free when no live lease holds it and it can be bound. The last
//!   port handed out is kept on the request board, for the whole host; where there is
//!   no board (a full filesystem, another platform), each allocator and its clones
//!   keep their own.
//! - **Reclaiming.** A lease is judged when the search meets its port (a lease found
//!   stale there is reclaimed and its port used); every lease is judged in a full sweep
//!   on an allocator's first allocation, at most a second after its last sweep, and
//!   before it reports a range exhausted; [`Allocator::gc`] sweeps on demand. Judging
//!   costs a `/proc` read per owner, which a sweep of every transaction would spend.
//! - **Reading little.** Entries are kept as their JSON text, written back byte for
//!   byte, and parsed only when met, so a transaction's cost hardly grows with the
//!   number of leases. An allocator keeps the registry its last transaction read or
//!   wrote, with the file's bytes: the next transaction still reads the file under the
//!   lock, and splits it into entries again only if its bytes differ (a byte-for-byte
//!   comparison, never a timestamp or size), so a process that runs transaction after
//!   transaction on a registry no one else writes skips that work.
//!
//! The file format is the one of the Python module portlease grew from (the "seed"),
//! so its processes and portlease can share one directory: keys are decimal ports,
//! values objects with at least `pid` and `timestamp`. portlease adds its own fields
//! inside each entry (`leased_at`, `owner`, `start_time`, `pid_ns`, `pidfs_inode`,
//! `ttl`, `proto`, `label`, `source`, `token`) and keeps whatever else it finds.
//!
//! The seed reclaims an entry 300 s after its `timestamp`, whatever else it says. So
//! portlease writes `timestamp` as the moment the seed should start counting, and
//! judges its own leases by its own fields (`leased_at` is when a lease was made or
//! last renewed):
//! - a lease with a TTL: `leased_at + ttl + 86400 - 300`, so the seed reclaims it a
//!   day after it ends ([`SKEW_ALLOWANCE_SECS`]), unless a portlease allocation that
//!   meets it, a sweep or a `gc` removes it first: the day keeps a seed whose clock is
//!   up to a day ahead of the writer's from ending the lease early (with its end
//!   alone, a writer a day behind would have its lease taken at once);
//! - a lease that lasts while its owner process runs: a day ahead
//!   ([`OWNER_HORIZON_SECS`]), moved ahead again, at most hourly, by every transaction
//!   that meets the lease alive (an allocation that meets its port, a sweep, a `gc`).
//!   Once the owner is gone, the first allocation or `gc` that meets the lease removes
//!   it (listing only shows it), and seed processes may take the port from then on.
//!   Here clocks that disagree are allowed for less: a seed whose clock is ahead of
//!   the writer's by D may take the port while the owner runs once the stamp is a
//!   day less D old (a transaction that meets a stamp an hour old or more moves it
//!   on, so a lease met at least hourly is safe against a clock up to 23 hours
//!   behind; one no transaction meets, against none once its stamp is a day old).
//!
//! # Guarantees
//! - No two live leases, from any number of processes and threads, share a port.
//! - A port is handed out only if it can be bound, without `SO_REUSEADDR`, for the
//!   protocols asked (by default on `0.0.0.0` and `[::]`, which catches a server on
//!   any local address, and a port in `TIME_WAIT`).
//! - A lease ends when its owner is gone: the owner is recorded as pid plus process
//!   start time (as the host counts it, whatever time namespace the owner or the
//!   reader is in) plus, on Linux 6.9+, the inode of a pidfd of it (pidfs gives each
//!   process of a boot its own), so a reused pid does not keep a dead lease alive, even
//!   one reused within the 10 ms clock tick in which the owner started. Without pidfs
//!   (older kernels, 32-bit ones, or a lease written by a portlease that did not record
//!   the inode), the start time alone is compared, and a pid reused within that tick
//!   passes for its owner: the lease then lasts until that process ends. A running process
//!   is never judged gone: a process counts as gone only when no thread of it runs (a
//!   zombie thread-group leader whose other threads run is alive), and only by a
//!   process in its own PID namespace (see the pitfalls).
//! - A child forked without exec (multiprocessing's `fork`, a prefork server) never
//!   shares its parent's registry lock: a fork handler points the child's copies of
//!   the lock file's descriptors elsewhere before the child runs, so a parent that
//!   dies holding the lock, or gives up a wait, leaves it free for everyone. A child
//!   that uses portlease opens lock files of its own.
//! - A process killed at any moment never leaves a torn registry; a failed write fails
//!   the operation and leaves the registry as it was.
//! - A damaged registry is never taken for an empty one: its bytes are kept aside as
//!   `port_registry.json.corrupt-<time>` and every entry readable on its own is kept,
//!   wherever the damage is (reading picks up again at the next port key). An entry
//!   whose key reads but whose value does not is kept as a placeholder that holds its
//!   port for the seed's 300 s. What Python's `json` writes (`NaN`, `Infinity`, a
//!   BOM) is read. Entries portlease does not understand are kept, and their ports
//!   not handed out.
//! - The registry stays readable by every party: a label or source longer than
//!   [`MAX_TEXT_BYTES`] is refused ([`Error::InvalidRequest`]), and a transaction
//!   whose write would make the registry larger than [`MAX_REGISTRY_BYTES`] fails
//!   with [`Error::TooLarge`], changing nothing (releases and `gc` still work). A
//!   larger registry written by someone else is read only in part: the entries in
//!   its first quarter are salvaged and the whole file is kept aside (hard-linked
//!   as `port_registry.json.corrupt-<time>`) by the next writer. A reader that
//!   writes nothing ([`Allocator::existing`]) keeps nothing aside, and says so.
//! - A failed write leaves no temporary file behind.
//!
//! # Security
//! The default registry ([`default_dir`]) is a place no other user can create first:
//! the per-user runtime directory, else a state directory under `HOME`, each used only
//! if its parent is the caller's alone; one that is not is passed over with a warning.
//! Only without either does it fall back to a name in a world-writable directory
//! (`/dev/shm`), and a squat there is refused saying so. The registry directory is
//! created with mode 0700 and its files 0600. It is opened
//! once (`O_DIRECTORY | O_NOFOLLOW`) and checked by that descriptor: portlease refuses
//! a directory that is a symbolic link (in a sticky world-writable parent such as
//! `/dev/shm`, another user could plant one and re-point it), is owned by another
//! user, or is writable by group or others (whoever can write there can forge or
//! delete leases). Every file in it is opened relative to that descriptor, without
//! following links and without blocking, and checked to be a regular file, with one
//! link where portlease writes through it; a FIFO, a device, a link or a hard link in
//! a file's place is refused with [`Error::Unsafe`] before anything is read or
//! written. [`Allocator::existing`] reads a
//! registry without creating or writing anything. To share ports between users, run
//! one `portlease serve` that all of them ask. Leases are cooperative: they keep out processes that ask portlease (or the
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
//!   different network namespaces (containers) should not share one.
//! - Pids are judged only within their PID namespace: a lease records its owner's
//!   (the inode of `/proc/self/ns/pid`, read also where the namespace kept the host's
//!   `/proc`, which then judges no pid), and to a process of another namespace the
//!   owner is alive. Its lease ends by release, by its TTL, or when a process of the
//!   owner's namespace finds it gone. So containers that share the host's network and
//!   the registry directory but not its PID namespace should give their leases a TTL
//!   (renewed by long jobs), or share the host's PID namespace, or ask a
//!   `portlease serve` on the host: an owner-lifetime lease made in a container that
//!   is then killed stays held until someone releases it.
//! - The request board is a shared mapping of a file in the registry directory; a
//!   file truncated under a mapping raises `SIGBUS`. So, once it maps a board, the
//!   library installs a `SIGBUS` handler that replaces a faulting board by private
//!   memory (the process then goes on without the board) and passes every other
//!   `SIGBUS` to the handler installed before it, or to the default action. A
//!   program that installs its own `SIGBUS` handler later should chain to the one it
//!   replaces. Where the board's space cannot be reserved (a full filesystem), it is
//!   not used at all.
//! - `port_registry.lock` must not be removed while processes use the directory: one
//!   that holds the lock on the removed file and one that locks a new one would both
//!   be inside. The seed shares this weakness; nothing on the name can prevent it.
//! - Linux: owners' start times, the request board (futexes) and the portserver's
//!   abstract sockets are Linux's; portlease is built and tested there only.
//! - The API is synchronous: every operation, dropping a [`Lease`] included, waits for
//!   the registry lock on the calling thread, microseconds as a rule, up to the lock
//!   timeout while another process holds the lock. In async code, release elsewhere
//!   (see [Dropping blocks](Lease#dropping-blocks)), run the rest with your runtime's
//!   `spawn_blocking` where a stall matters, and hand the runtime a non-blocking socket
//!   ([`Lease::into_listener`] is blocking, as std's listeners are). A program that
//!   must answer a signal (Ctrl-C) while a call waits installs a check with
//!   [`interrupt::with_check`]: the wait consults it every 100 ms, and gives up with
//!   [`Error::Interrupted`] when it says stop, leaving nothing leased.
//!
//! # Features
//! - `tokio` (off by default): `Lease::into_tokio_listener` and
//!   `Lease::into_tokio_udp_socket` (non-blocking sockets registered with the current
//!   Tokio runtime), and `Lease::release_async` (the release on Tokio's blocking pool).
//! - `test-hooks` (off by default; for portlease's own test builds, with no stability
//!   promise): stop points a test names in `PORTLEASE_TEST_STOP_AT`, at which the
//!   process stops itself. Release builds have none.
//!
//! # Source map
//! One concern per file; `allocator` on top, every module importing only modules
//! below it (no cycles). One `alloc`, followed through the code, enters each file
//! once, from the top down: `allocator` → `batch` (posted, or served by whoever
//! holds the lock) → `engine` → `engine/execute` → `transaction` → `pick`.
//!
//! - `allocator`: the public facade. [`Allocator`] checks requests, turns each
//!   allocation or release into an operation (the board's `Op`), has it done, and
//!   makes [`Lease`]s of the outcomes; it holds an `Engine` and nothing else.
//! - `batch`: the request board's poster and server sides: a request waits to be
//!   served, or its poster takes the lock and serves every posted request in one
//!   transaction. It moves requests and outcomes by the board's slot protocol and
//!   calls the engine for the rest.
//! - `engine`: one registry directory's state (the directory opened once, lock,
//!   board, next-fit cursor, registry cache, sweep clock, lock timeout), shared by
//!   an allocator's clones, and the one way to run work in a transaction under the
//!   lock. `Locked` (the lock held) settles the board's orphans (requests withdrawn,
//!   or whose server died) in one place, whoever takes the lock.
//!   `engine/execute`: what each operation does to a transaction (allocate,
//!   release, do again by token, change, hand over, release by a filter).
//! - `transaction`: one transaction's view of the registry; its fields are private,
//!   every change goes through a method that marks it changed; it knows no wire
//!   format. It asks `pick` for ports, with the next-fit cursor (the board's,
//!   host-wide, or the engine's own where there is no board) and a closure that says
//!   whether a port is free.
//! - `pick`: choosing ports (preferred, next-fit, blocks, exclusions) as pure
//!   functions over the candidates, a cursor and that closure; no I/O.
//! - `board/`: the shared memory requests are posted in: `map` the mapping, `slot`
//!   the slot protocol as a state machine, `wire` requests (`Op`) and outcomes as
//!   bytes.
//! - `lock`: the `flock` with a deadline and one reusable waiting thread;
//!   `fork_guard`: the lock files' descriptors, which no forked child keeps.
//!   `interrupt`: the caller's check, which `lock` and `batch` consult while they
//!   wait.
//!   `registry`: the file, loaded with salvage and saved atomically; `salvage`:
//!   reading what is left of a damaged one. `record`: what an entry says, and whether
//!   it is stale.
//! - `request`, `lease`, `snapshot` ([`LeaseInfo`]), `seed_api`, `portpicker_api`: the
//!   public types, and the seed's and Rust portpicker's functions. A [`Lease`] holds
//!   its allocator through the `LeaseKeeper` trait defined beside it. [`parse`]: ports,
//!   ranges and hosts as people write them, the rules of numbers other languages hold
//!   (ports, pids, counts, seconds) and the seed's reading of a range, for every front
//!   end.
//! - `probe`: bind checks. `process`: owner identity (pid, start time, pid
//!   namespace) and liveness. `directory`: where the registry lives,
//!   and whether it is safe (opened once, without following links). `files`: opening
//!   files relative to it, regular files only.
//! - `layout`: the names of the files in a registry directory. `error`: the one
//!   [`Error`] enum.
//! - Platform files are `module/linux.rs` and `module/other.rs` (`process/`,
//!   `board/map/`), chosen by `cfg(linux_kernel)` (`build.rs`); [`platform`] says
//!   what the build has.
//! - `spawn`: [`Lease::spawn`] and [`Lease::spawn_listening`], a child handed its
//!   lease before its program runs (the gate protocol is documented there), with
//!   sockets passed as systemd passes them.
//!
//! System calls go through `rustix`; the `libc` uses left are the board's `SIGBUS`
//! handler (`sigaction` and the `mmap` that replaces a faulting mapping), for which
//! no safe wrapper exists, `spawn`'s child side between fork and exec (plain
//! `close`, `read`, `write`, `fcntl`, `dup2`, `execve`, `_exit`: async-signal-safe,
//! nothing allocated), `fork_guard`'s fork handler (`pthread_atfork`, and the
//! async-signal-safe `socket`, `dup2`, `fcntl` and `close` it makes in the child),
//! and the test builds' stop hook's `pthread_kill` (`test_hooks`).
//!
//! This crate is the library alone: it depends on no argument parser. The `portlease`
//! command is the `portlease-cli` package in `cli/` of the same workspace, a thin
//! binary over this library (one file per subcommand, and `sockets`, which finds who
//! binds a port, for `check`). The library's own integration tests are in `tests/`;
//! `cli/tests/` drives the real binary.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Examples, the README's among them, must compile without a warning.
#![doc(test(attr(deny(warnings))))]

mod allocator;
mod batch;
mod board;
mod directory;
mod engine;
mod error;
mod files;
mod fork_guard;
pub mod interrupt;
mod layout;
mod lease;
mod lock;
pub mod parse;
mod pick;
pub mod platform;
mod portpicker_api;
pub mod probe;
mod process;
mod record;
mod registry;
mod registry_cache;
mod request;
mod salvage;
mod seed_api;
mod snapshot;
mod spawn;
#[doc(hidden)]
pub mod test_hooks;
mod transaction;

pub use allocator::{Allocator, DEFAULT_LOCK_TIMEOUT};
pub use directory::{DIR_ENV, default_dir, is_ram_backed};
pub use error::{Error, Result};
pub use layout::{BOARD_FILE, LOCK_FILE, MAX_REGISTRY_BYTES, MAX_TEXT_BYTES, REGISTRY_FILE};
pub use lease::Lease;
pub use portpicker_api::{Port, is_free, is_free_tcp, is_free_udp, pick_unused_port, return_port};
pub use process::ProcessId;
pub use record::{OWNER_HORIZON_SECS, REFRESH_AFTER_SECS, SEED_LEASE_SECS, SKEW_ALLOWANCE_SECS};
pub use request::{
    DEFAULT_RANGE, DEFAULT_TTL, Owner, Protocol, RANGE_ENV, Request, default_ranges,
};
pub use seed_api::{allocate_port, release_port};
pub use snapshot::{EntryKind, LeaseInfo};
pub use spawn::PARENT_GONE_EXIT;

/// The README's Rust example, compiled (and its warnings denied) as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

//! What travels through the board: a request ([`Op`]) one way, its [`Outcome`] the
//! other, each as bytes of a private wire form, so that the library's public types
//! are not a wire format. Nothing decoded here is trusted: a request is validated
//! again by its server, an outcome is checked by its poster.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::process::ProcessId;
use crate::request::{Owner, Protocol, Request};

/// The most ports a posted request may ask for, so its outcome fits in a slot.
pub(crate) const MAX_POSTED_PORTS: usize = 64;

/// A request that any lock holder can serve.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Lease ports, for `owner` (the asker resolved it), recorded as allocated by `pid`.
    Allocate {
        /// Boxed: a request is far larger than the other operations.
        request: Box<Request>,
        owner: Option<ProcessId>,
        pid: u32,
        token: String,
    },
    /// End the leases on `ports` held under `token`.
    Release { ports: Vec<u16>, token: String },
}

impl Op {
    /// The token that names this request's leases.
    pub(crate) fn token(&self) -> &str {
        match self {
            Op::Allocate { token, .. } | Op::Release { token, .. } => token,
        }
    }

    /// Whether a lock holder may serve it: small enough for a slot, both ways.
    pub(crate) fn postable(&self) -> bool {
        match self {
            Op::Allocate { request, .. } => request.count <= MAX_POSTED_PORTS,
            Op::Release { ports, .. } => ports.len() <= MAX_POSTED_PORTS,
        }
    }

    /// The wire form.
    pub(crate) fn encode(&self) -> Option<Vec<u8>> {
        let wire = match self {
            Op::Allocate {
                request,
                owner,
                pid,
                token,
            } => WireOp::Allocate {
                request: Box::new(WireRequest::from(&**request)),
                owner: owner.map(|o| (o.pid, o.start_time, o.pid_ns)),
                owner_pidfs_inode: owner.and_then(|o| o.pidfs_inode),
                pid: *pid,
                token,
            },
            Op::Release { ports, token } => WireOp::Release {
                ports: ports.into(),
                token,
            },
        };
        serde_json::to_vec(&wire).ok()
    }

    /// A request read from the board; `None` for bytes that are not one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Op> {
        Some(match serde_json::from_slice::<WireOp<'_>>(bytes).ok()? {
            WireOp::Allocate {
                request,
                owner,
                owner_pidfs_inode,
                pid,
                token,
            } => Op::Allocate {
                request: Box::new((*request).into_request()?),
                owner: owner.map(|(pid, start_time, pid_ns)| ProcessId {
                    pid,
                    start_time,
                    pid_ns,
                    pidfs_inode: owner_pidfs_inode,
                }),
                pid,
                token: token.to_owned(),
            },
            WireOp::Release { ports, token } => Op::Release {
                ports: ports.into_owned(),
                token: token.to_owned(),
            },
        })
    }
}

#[derive(Serialize, Deserialize)]
enum WireOp<'a> {
    Allocate {
        request: Box<WireRequest>,
        /// Pid, start time and pid namespace: the owner as the lease records it.
        owner: Option<(u32, Option<u64>, Option<u64>)>,
        /// The owner's pidfs inode: a field of its own, which a server of an older
        /// version skips (recording the owner by its start time alone).
        #[serde(default)]
        owner_pidfs_inode: Option<u64>,
        pid: u32,
        #[serde(borrow)]
        token: &'a str,
    },
    Release {
        ports: std::borrow::Cow<'a, [u16]>,
        #[serde(borrow)]
        token: &'a str,
    },
}

/// A [`Request`] on the wire: its own field names, independent of the struct's.
#[derive(Serialize, Deserialize)]
struct WireRequest {
    preferred: Option<u16>,
    ranges: Vec<(u16, u16)>,
    excluded: Vec<u16>,
    count: usize,
    block: bool,
    protocol: Protocol,
    host: Option<IpAddr>,
    owner: WireOwner,
    /// Seconds and nanoseconds: any `Duration` fits.
    ttl: Option<(u64, u32)>,
    ttl_set: bool,
    label: Option<String>,
    source: String,
    max_per_owner: Option<usize>,
    /// Seconds and nanoseconds; absent (from an older poster) for the default.
    #[serde(default)]
    seed_lease: Option<(u64, u32)>,
}

#[derive(Serialize, Deserialize)]
enum WireOwner {
    Current,
    Process(u32),
    Nobody,
}

impl From<&Request> for WireRequest {
    fn from(request: &Request) -> WireRequest {
        WireRequest {
            preferred: request.preferred,
            ranges: request
                .ranges
                .iter()
                .map(|range| (*range.start(), *range.end()))
                .collect(),
            excluded: request.excluded.iter().copied().collect(),
            count: request.count,
            block: request.block,
            protocol: request.protocol,
            host: request.host,
            owner: match request.owner {
                Owner::CurrentProcess => WireOwner::Current,
                Owner::Process(pid) => WireOwner::Process(pid),
                // The operation carries the owner looked up; the request, its pid.
                Owner::Running(owner) => WireOwner::Process(owner.pid),
                Owner::Nobody => WireOwner::Nobody,
            },
            ttl: request.ttl.map(|ttl| (ttl.as_secs(), ttl.subsec_nanos())),
            ttl_set: request.ttl_set,
            label: request.label.clone(),
            source: request.source.clone(),
            max_per_owner: request.max_per_owner,
            seed_lease: request
                .seed_lease
                .map(|lease| (lease.as_secs(), lease.subsec_nanos())),
        }
    }
}

impl WireRequest {
    /// The request, or `None` where a field cannot be one.
    fn into_request(self) -> Option<Request> {
        let ttl = match self.ttl {
            // Below a second's nanoseconds, `Duration::new` cannot overflow (or panic).
            Some((secs, nanos)) if nanos < 1_000_000_000 => Some(Duration::new(secs, nanos)),
            Some(_) => return None,
            None => None,
        };
        let seed_lease = match self.seed_lease {
            Some((secs, nanos)) if nanos < 1_000_000_000 => Some(Duration::new(secs, nanos)),
            Some(_) => return None,
            None => None,
        };
        Some(Request {
            seed_lease,
            preferred: self.preferred,
            // None from a poster of an earlier version, which meant its default.
            ranges: if self.ranges.is_empty() {
                vec![crate::request::DEFAULT_RANGE]
            } else {
                self.ranges
                    .into_iter()
                    .map(|(start, end)| start..=end)
                    .collect()
            },
            excluded: self.excluded.into_iter().collect::<BTreeSet<u16>>(),
            count: self.count,
            block: self.block,
            protocol: self.protocol,
            host: self.host,
            owner: match self.owner {
                WireOwner::Current => Owner::CurrentProcess,
                WireOwner::Process(pid) => Owner::Process(pid),
                WireOwner::Nobody => Owner::Nobody,
            },
            ttl,
            ttl_set: self.ttl_set,
            // Resolved by the poster, from its own environment.
            default_ranges: false,
            default_ranges_error: None,
            label: self.label,
            source: self.source,
            max_per_owner: self.max_per_owner,
        })
    }
}

/// What became of a request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Allocated(Vec<u16>),
    /// The first port that was no longer the token's, if any.
    Released {
        lost: Option<u16>,
    },
    Failed(WireError),
}

/// An outcome on the wire: the request's token comes back with it, so a poster never
/// takes another request's outcome for its own.
#[derive(Serialize, Deserialize)]
struct WireOutcome<'a> {
    token: &'a str,
    outcome: Outcome,
}

impl Outcome {
    /// The wire form, answering the request with `token`, in `max` bytes at most
    /// (an error's texts are shortened to fit, never cut mid-encoding).
    pub(crate) fn encode(self, token: &str, max: usize) -> Vec<u8> {
        let mut wire = WireOutcome {
            token,
            outcome: self,
        };
        let mut keep = 512;
        loop {
            if let Ok(bytes) = serde_json::to_vec(&wire)
                && bytes.len() <= max
            {
                return bytes;
            }
            if let Outcome::Failed(error) = &mut wire.outcome
                && keep > 8
            {
                keep /= 2;
                error.shorten(keep);
            } else {
                // Nothing left to shorten: say only that the request failed.
                wire.outcome = Outcome::Failed(WireError::Invalid(String::new()));
                return serde_json::to_vec(&wire).unwrap_or_default();
            }
        }
    }

    /// The outcome in `bytes`, if it is a well-formed answer to the request with
    /// `token`, and an allocation of `count` ports when one was asked for.
    pub(crate) fn decode(bytes: &[u8], op: &Op) -> Option<Outcome> {
        let wire: WireOutcome<'_> = serde_json::from_slice(bytes).ok()?;
        if wire.token != op.token() {
            return None;
        }
        let fits = match (&wire.outcome, op) {
            (Outcome::Allocated(ports), Op::Allocate { request, .. }) => {
                ports.len() == request.count && !ports.contains(&0)
            }
            (Outcome::Released { .. }, Op::Release { .. }) | (Outcome::Failed(_), _) => true,
            _ => false,
        };
        fits.then_some(wire.outcome)
    }
}

/// An [`Error`] as one process hands it to another. Every variant of `Error` has its
/// own form here, matched exhaustively both ways: a new variant does not compile
/// until it has one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireError {
    LockTimeout {
        dir: PathBuf,
        waited: Duration,
    },
    Exhausted {
        wanted: String,
        ranges: String,
    },
    Invalid(String),
    NoSuchProcess {
        pid: u32,
    },
    OwnerLimit {
        pid: u32,
        held: usize,
    },
    LeaseLost {
        port: u16,
    },
    Io {
        action: String,
        path: PathBuf,
        errno: Option<i32>,
        message: String,
    },
    Unsafe {
        path: PathBuf,
        reason: String,
    },
    TooLarge {
        path: PathBuf,
        size: u64,
    },
    Bind {
        addr: SocketAddr,
        errno: Option<i32>,
        message: String,
    },
    NoRegistry {
        dir: PathBuf,
    },
    ReadOnly {
        dir: PathBuf,
    },
    NotLeased {
        port: u16,
    },
    NotPortlease {
        port: u16,
        what: String,
    },
    HeldByProcess {
        key: String,
        pid: u32,
        #[serde(default)]
        in_other_pid_namespace: bool,
    },
}

impl From<&Error> for WireError {
    fn from(error: &Error) -> WireError {
        match error {
            Error::LockTimeout { dir, waited } => WireError::LockTimeout {
                dir: dir.clone(),
                waited: *waited,
            },
            Error::Exhausted { wanted, ranges } => WireError::Exhausted {
                wanted: wanted.clone(),
                ranges: ranges.clone(),
            },
            Error::InvalidRequest(message) => WireError::Invalid(message.clone()),
            Error::NoSuchProcess { pid } => WireError::NoSuchProcess { pid: *pid },
            Error::OwnerLimit { pid, held } => WireError::OwnerLimit {
                pid: *pid,
                held: *held,
            },
            Error::LeaseLost { port } => WireError::LeaseLost { port: *port },
            Error::Io {
                action,
                path,
                source,
            } => WireError::Io {
                action: action.clone().into_owned(),
                path: path.clone(),
                errno: source.raw_os_error(),
                message: source.to_string(),
            },
            // Only a waiting caller is interrupted, never a server: should one be, its
            // posters see an I/O error (EINTR), which the wire already carries.
            Error::Interrupted { path } => WireError::Io {
                action: "interrupted while waiting for the lock on".to_owned(),
                path: path.clone(),
                errno: Some(rustix::io::Errno::INTR.raw_os_error()),
                message: error.to_string(),
            },
            Error::Unsafe { path, reason } => WireError::Unsafe {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::TooLarge { path, size } => WireError::TooLarge {
                path: path.clone(),
                size: *size,
            },
            Error::Bind { addr, source } => WireError::Bind {
                addr: *addr,
                errno: source.raw_os_error(),
                message: source.to_string(),
            },
            // Spawning is never a registry operation; told as text, should one come.
            Error::Spawn { .. } => WireError::Invalid(error.to_string()),
            Error::NoRegistry { dir } => WireError::NoRegistry { dir: dir.clone() },
            Error::ReadOnly { dir } => WireError::ReadOnly { dir: dir.clone() },
            Error::NotLeased { port } => WireError::NotLeased { port: *port },
            Error::NotPortlease { port, what } => WireError::NotPortlease {
                port: *port,
                what: what.clone(),
            },
            Error::HeldByProcess {
                key,
                pid,
                in_other_pid_namespace,
            } => WireError::HeldByProcess {
                key: key.clone(),
                pid: *pid,
                in_other_pid_namespace: *in_other_pid_namespace,
            },
        }
    }
}

impl WireError {
    /// The error as the process that raised it would have reported it.
    pub(crate) fn into_error(self) -> Error {
        let source = |errno: Option<i32>, message: String| match errno {
            Some(errno) => std::io::Error::from_raw_os_error(errno),
            None => std::io::Error::other(message),
        };
        match self {
            WireError::LockTimeout { dir, waited } => Error::LockTimeout { dir, waited },
            WireError::Exhausted { wanted, ranges } => Error::Exhausted { wanted, ranges },
            WireError::Invalid(message) => Error::InvalidRequest(message),
            WireError::NoSuchProcess { pid } => Error::NoSuchProcess { pid },
            WireError::OwnerLimit { pid, held } => Error::OwnerLimit { pid, held },
            WireError::LeaseLost { port } => Error::LeaseLost { port },
            WireError::Io {
                action,
                path,
                errno,
                message,
            } => Error::Io {
                action: Cow::Owned(action),
                path,
                source: source(errno, message),
            },
            WireError::Unsafe { path, reason } => Error::Unsafe { path, reason },
            WireError::TooLarge { path, size } => Error::TooLarge { path, size },
            WireError::Bind {
                addr,
                errno,
                message,
            } => Error::Bind {
                addr,
                source: source(errno, message),
            },
            WireError::NoRegistry { dir } => Error::NoRegistry { dir },
            WireError::ReadOnly { dir } => Error::ReadOnly { dir },
            WireError::NotLeased { port } => Error::NotLeased { port },
            WireError::NotPortlease { port, what } => Error::NotPortlease { port, what },
            WireError::HeldByProcess {
                key,
                pid,
                in_other_pid_namespace,
            } => Error::HeldByProcess {
                key,
                pid,
                in_other_pid_namespace,
            },
        }
    }

    /// Cuts every text to `keep` characters at most (at a character boundary).
    fn shorten(&mut self, keep: usize) {
        let cut = |text: &mut String| {
            if let Some((at, _)) = text.char_indices().nth(keep) {
                text.truncate(at);
                text.push('…');
            }
        };
        let cut_path = |path: &mut PathBuf| {
            let mut text = path.to_string_lossy().into_owned();
            cut(&mut text);
            *path = PathBuf::from(text);
        };
        match self {
            WireError::LockTimeout { dir, .. }
            | WireError::NoRegistry { dir }
            | WireError::ReadOnly { dir } => cut_path(dir),
            WireError::TooLarge { path, .. } => cut_path(path),
            WireError::Exhausted { wanted, ranges } => {
                cut(wanted);
                cut(ranges);
            }
            WireError::Invalid(message) => cut(message),
            WireError::Io {
                action,
                path,
                message,
                ..
            } => {
                cut(action);
                cut_path(path);
                cut(message);
            }
            WireError::Unsafe { path, reason } => {
                cut_path(path);
                cut(reason);
            }
            WireError::Bind { message, .. } => cut(message),
            WireError::NotPortlease { what, .. } => cut(what),
            WireError::HeldByProcess { key, .. } => cut(key),
            WireError::NoSuchProcess { .. }
            | WireError::OwnerLimit { .. }
            | WireError::LeaseLost { .. }
            | WireError::NotLeased { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocate(count: usize, token: &str) -> Op {
        Op::Allocate {
            request: Box::new(Request::new().range(20000..=20099).count(count).label("x")),
            owner: Some(ProcessId {
                pid: 7,
                start_time: Some(9),
                pid_ns: Some(4026531836),
                pidfs_inode: Some(77),
            }),
            pid: 7,
            token: token.into(),
        }
    }

    #[test]
    fn a_request_posted_without_a_pidfs_inode_reads_as_one_of_unknown_inode() {
        // As a poster of an older version writes it.
        let bytes = String::from_utf8(allocate(1, "t").encode().expect("encodes"))
            .expect("JSON")
            .replace(",\"owner_pidfs_inode\":77", "");
        assert!(!bytes.contains("owner_pidfs_inode"), "{bytes}");
        match Op::decode(bytes.as_bytes()) {
            Some(Op::Allocate { owner, .. }) => {
                assert_eq!(owner.map(|o| o.pidfs_inode), Some(None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_ttl_of_any_length_crosses_the_board_and_a_bad_one_is_refused() {
        let long = Duration::new(u64::MAX, 999_999_999);
        let op = Op::Allocate {
            request: Box::new(Request::new().range(20000..=20099).ttl(Some(long))),
            owner: None,
            pid: 7,
            token: "t".into(),
        };
        let bytes = op.encode().expect("encodes");
        match Op::decode(&bytes) {
            Some(Op::Allocate { request, .. }) => assert_eq!(request.ttl, Some(long)),
            other => panic!("{other:?}"),
        }
        let text = String::from_utf8(bytes).expect("JSON");
        let bad = text.replace("999999999", "1000000000");
        assert!(Op::decode(bad.as_bytes()).is_none());
    }

    #[test]
    fn a_seed_lease_crosses_the_board_and_its_absence_reads_as_the_default() {
        let op = Op::Allocate {
            request: Box::new(Request::new().seed_lease(Duration::from_millis(60_500))),
            owner: None,
            pid: 7,
            token: "t".into(),
        };
        let bytes = op.encode().expect("encodes");
        match Op::decode(&bytes) {
            Some(Op::Allocate { request, .. }) => {
                assert_eq!(request.seed_lease_secs(), 60.5);
            }
            other => panic!("{other:?}"),
        }
        // As a poster of an older version writes it.
        let text = String::from_utf8(bytes).expect("JSON");
        let old = text.replace(",\"seed_lease\":[60,500000000]", "");
        assert!(!old.contains("seed_lease"), "{old}");
        match Op::decode(old.as_bytes()) {
            Some(Op::Allocate { request, .. }) => {
                assert_eq!(request.seed_lease_secs(), crate::SEED_LEASE_SECS);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_reads_back_as_posted() {
        let op = allocate(3, "t1");
        let bytes = op.encode().expect("encodes");
        match Op::decode(&bytes).expect("decodes") {
            Op::Allocate {
                request,
                owner,
                pid,
                token,
            } => {
                assert_eq!(request.count, 3);
                assert_eq!(request.ranges, [20000..=20099]);
                assert_eq!(request.label.as_deref(), Some("x"));
                // The whole owner, pid namespace and pidfs inode included: a lease
                // served for another process records it as that process would have.
                assert_eq!(
                    owner.map(|o| (o.pid, o.start_time, o.pid_ns, o.pidfs_inode)),
                    Some((7, Some(9), Some(4026531836), Some(77)))
                );
                assert_eq!((pid, token.as_str()), (7, "t1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_outcome_must_answer_its_own_request() {
        let op = allocate(2, "mine");
        let bytes = Outcome::Allocated(vec![20001, 20002]).encode("mine", OUT);
        assert!(
            matches!(Outcome::decode(&bytes, &op), Some(Outcome::Allocated(p)) if p.len() == 2)
        );
        let other = Outcome::Allocated(vec![20001, 20002]).encode("another", OUT);
        assert!(
            Outcome::decode(&other, &op).is_none(),
            "another request's outcome"
        );
        let empty = Outcome::Allocated(vec![]).encode("mine", OUT);
        assert!(Outcome::decode(&empty, &op).is_none(), "no ports at all");
        let short = Outcome::Allocated(vec![20001]).encode("mine", OUT);
        assert!(
            Outcome::decode(&short, &op).is_none(),
            "fewer ports than asked"
        );
        let released = Outcome::Released { lost: None }.encode("mine", OUT);
        assert!(Outcome::decode(&released, &op).is_none(), "another kind");
    }

    const OUT: usize = crate::board::OUTCOME_MAX;

    #[test]
    fn a_long_error_is_shortened_to_fit_not_cut() {
        let op = allocate(1, "mine");
        let long = PathBuf::from("/".to_owned() + &"d/".repeat(2000));
        let error = Error::io(
            "cannot write the registry",
            &long,
            std::io::Error::from_raw_os_error(28),
        );
        let bytes = Outcome::Failed(WireError::from(&error)).encode("mine", OUT);
        assert!(bytes.len() <= OUT);
        match Outcome::decode(&bytes, &op) {
            Some(Outcome::Failed(wire)) => match wire.into_error() {
                Error::Io { action, source, .. } => {
                    assert_eq!(action, "cannot write the registry");
                    assert_eq!(source.raw_os_error(), Some(28), "the errno survives");
                }
                other => panic!("{other}"),
            },
            _ => panic!("the outcome reads back"),
        }
    }

    #[test]
    fn every_io_action_read_off_the_board_is_kept_as_it_was_sent() {
        let op = allocate(1, "mine");
        // More distinct texts than any table of them would hold.
        for n in 0..100 {
            let sent = Error::Io {
                action: Cow::Owned(format!("cannot do step {n} on")),
                path: PathBuf::from("/r"),
                source: std::io::Error::from_raw_os_error(5),
            };
            let bytes = Outcome::Failed(WireError::from(&sent)).encode("mine", OUT);
            match Outcome::decode(&bytes, &op).map(|outcome| match outcome {
                Outcome::Failed(wire) => wire.into_error(),
                _ => panic!("a failure was sent"),
            }) {
                Some(Error::Io { action, .. }) => {
                    assert_eq!(action, format!("cannot do step {n} on"))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn no_bytes_make_decoding_panic() {
        let op = allocate(1, "mine");
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let good = op.encode().expect("encodes");
        for round in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bytes = good.clone();
            let at = usize::try_from(seed % 4096).unwrap_or(0) % bytes.len();
            bytes[at] = (seed >> 32).to_le_bytes()[0];
            bytes.truncate(bytes.len() - round % 5);
            let _ = Op::decode(&bytes);
            let _ = Outcome::decode(&bytes, &op);
        }
    }
}

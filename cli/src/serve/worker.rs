//! The thread that serves requests: it takes whatever the accepting thread has handed
//! over since its last transaction and serves all of it in one transaction. Requests
//! that arrive while a transaction runs so share the next one, and reading connections
//! goes on meanwhile. A third thread tells the clients and logs the grants, so the
//! transactions' thread, which bounds the server's throughput, does nothing else.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use portlease::Lease;

use super::grant::{Asked, Granter, Refusal};
use super::peer::Peer;
use super::stats::ConnectionStats;

/// The most handed-over items taken into one batch.
const MAX_WORK_PER_BATCH: usize = 4096;

/// What the accepting thread hands over.
pub(super) enum Work {
    /// A complete request, and the connection to answer on.
    Serve(Asked, UnixStream),
    /// A request refused before it reached the registry, and why.
    Refuse(Peer, String, Refusal),
    /// SIGUSR1: log the statistics.
    Dump(ConnectionStats),
}

/// A port granted, to tell the client: its lease is kept only once the client is told.
struct Answer {
    stream: UnixStream,
    lease: Lease,
    pid: u32,
    asker: Peer,
}

/// Starts the serving thread (and its answering thread); they end once the sender is
/// dropped and all that was handed over is done.
pub(super) fn spawn(granter: Granter) -> anyhow::Result<(Sender<Work>, JoinHandle<()>)> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let (answers, answering) = std::sync::mpsc::channel();
    let cannot = |e: std::io::Error| anyhow::anyhow!("cannot start the serving threads: {e}");
    let answerer = std::thread::Builder::new()
        .name("portlease-answer".into())
        .spawn(move || answer(&answering))
        .map_err(cannot)?;
    let handle = std::thread::Builder::new()
        .name("portlease-grant".into())
        .spawn(move || {
            run(granter, &receiver, &answers);
            drop(answers);
            if answerer.join().is_err() {
                log::error!("the answering thread failed");
            }
        })
        .map_err(cannot)?;
    Ok((sender, handle))
}

/// Tells each client its port and keeps the lease, logging the grant; releases the
/// lease of a client that cannot be told (nobody would know the port is theirs).
fn answer(answers: &Receiver<Answer>) {
    for Answer {
        mut stream,
        lease,
        pid,
        asker,
    } in answers
    {
        let port = lease.port();
        match stream.write_all(format!("{port}\n").as_bytes()) {
            Ok(()) => {
                lease.keep();
                log::info!(
                    "granted port {port} to pid {pid} (asked by uid {}, pid {})",
                    asker.uid,
                    asker.pid
                );
            }
            Err(e) => {
                log::info!(
                    "granted port {port} to pid {pid}, but could not tell the client (uid {}, \
                     pid {}): {e}; releasing it",
                    asker.uid,
                    asker.pid
                );
                if let Err(e) = lease.release() {
                    log::warn!("could not release port {port}, granted to pid {pid}: {e}");
                }
            }
        }
    }
}

fn run(mut granter: Granter, receiver: &Receiver<Work>, answers: &Sender<Answer>) {
    while let Ok(first) = receiver.recv() {
        let mut asked = Vec::new();
        let mut streams = Vec::new();
        let mut next = Some(first);
        // Bounded, and one statistics dump a batch: a storm of SIGUSR1 (or of bad
        // requests) must not keep the batch open, and the requests in it waiting.
        let mut taken = 0;
        let mut dumped = false;
        while let Some(work) = next {
            taken += 1;
            match work {
                Work::Serve(request, stream) => {
                    asked.push(request);
                    streams.push(stream);
                }
                Work::Refuse(peer, reason, kind) => granter.refuse(peer, &reason, kind),
                Work::Dump(_) if dumped => {}
                Work::Dump(connections) => {
                    dumped = true;
                    let held = granter.leases_held();
                    granter.stats.log(granter.pool_size(), held, connections);
                }
            }
            next = (taken < MAX_WORK_PER_BATCH)
                .then(|| receiver.try_recv().ok())
                .flatten();
        }
        if asked.is_empty() {
            continue;
        }
        let leases = granter.serve(&asked);
        for ((stream, lease), asked) in streams.into_iter().zip(leases).zip(&asked) {
            // A refused client's connection closes here, without a word.
            if let Some(lease) = lease {
                let answer = Answer {
                    stream,
                    lease,
                    pid: asked.owner.pid,
                    asker: asked.peer,
                };
                // Fails only once the answering thread is gone; the lease then ends
                // as it drops.
                let _ = answers.send(answer);
            }
        }
    }
}

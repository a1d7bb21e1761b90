//! The thread that serves requests: it takes whatever the accepting thread has handed
//! over since its last transaction, serves all of it in one transaction, and answers.
//! Requests that arrive while a transaction runs so share the next one, and reading
//! connections goes on meanwhile.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use super::grant::{Asked, Granter, Refusal};
use super::peer::Peer;
use super::stats::ConnectionStats;

/// What the accepting thread hands over.
pub(super) enum Work {
    /// A complete request, and the connection to answer on.
    Serve(Asked, UnixStream),
    /// A request refused before it reached the registry, and why.
    Refuse(Peer, String, Refusal),
    /// SIGUSR1: log the statistics.
    Dump(ConnectionStats),
}

/// Starts the serving thread; it ends once the sender is dropped and all that was
/// handed over is done.
pub(super) fn spawn(granter: Granter) -> anyhow::Result<(Sender<Work>, JoinHandle<()>)> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("portlease-grant".into())
        .spawn(move || run(granter, &receiver))
        .map_err(|e| anyhow::anyhow!("cannot start the serving thread: {e}"))?;
    Ok((sender, handle))
}

fn run(mut granter: Granter, receiver: &Receiver<Work>) {
    while let Ok(first) = receiver.recv() {
        let mut asked = Vec::new();
        let mut streams = Vec::new();
        let mut next = Some(first);
        while let Some(work) = next {
            match work {
                Work::Serve(request, stream) => {
                    asked.push(request);
                    streams.push(stream);
                }
                Work::Refuse(peer, reason, kind) => granter.refuse(peer, &reason, kind),
                Work::Dump(connections) => {
                    let held = granter.leases_held();
                    granter.stats.log(granter.pool_size(), held, connections);
                }
            }
            next = receiver.try_recv().ok();
        }
        if asked.is_empty() {
            continue;
        }
        let answers = granter.serve(&asked);
        for ((mut stream, answer), asker) in streams.into_iter().zip(answers).zip(&asked) {
            if let Some(port) = answer
                && let Err(e) = stream.write_all(format!("{port}\n").as_bytes())
            {
                // The client is gone; its lease ends with it.
                log::info!("could not tell pid {} its port {port}: {e}", asker.peer.pid);
            }
        }
    }
}

//! `Lease`'s Tokio methods (the `tokio` feature): sockets a runtime can drive, and a
//! release that leaves the runtime's thread free. Built only with the feature:
//! `cargo test -p portlease --features tokio --test tokio`.
//!
//! Ports 37300-37399 are this file's.

mod common;

use std::fs::File;
use std::os::fd::AsFd;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use portlease::probe::is_port_free;
use portlease::{Error, LOCK_FILE, Protocol, REGISTRY_FILE, Request};
use rustix::fs::{FlockOperation, OFlags, fcntl_getfl, flock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use common::{leased, registry};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a Tokio runtime")
}

fn is_nonblocking(socket: impl AsFd) -> bool {
    fcntl_getfl(socket)
        .expect("the socket's flags")
        .contains(OFlags::NONBLOCK)
}

#[test]
fn into_tokio_listener_gives_a_nonblocking_listener_that_holds_the_port() {
    let (_dir, allocator) = registry();
    runtime().block_on(async {
        let lease = allocator
            .allocate(&Request::new().range(37300..=37309))
            .expect("a port");
        let port = lease.port();
        let listener = lease.into_tokio_listener().expect("a listener");
        assert!(is_nonblocking(&listener));
        let addr = listener.local_addr().expect("its address");
        assert_eq!(addr.port(), port);
        // The socket holds the port now, not the registry.
        assert!(leased(&allocator).is_empty());
        assert!(!is_port_free(port, Protocol::Tcp, None).expect("a bind check"));

        let mut client = tokio::net::TcpStream::connect(addr)
            .await
            .expect("a connection");
        let (mut served, _) = listener.accept().await.expect("an accepted connection");
        client.write_all(b"ping").await.expect("a write");
        let mut heard = [0; 4];
        served.read_exact(&mut heard).await.expect("a read");
        assert_eq!(&heard, b"ping");
    });
}

#[test]
fn into_tokio_udp_socket_gives_a_nonblocking_socket_on_the_port() {
    let (_dir, allocator) = registry();
    runtime().block_on(async {
        let lease = allocator
            .allocate(&Request::new().range(37310..=37319).protocol(Protocol::Udp))
            .expect("a port");
        let port = lease.port();
        let socket = lease.into_tokio_udp_socket().expect("a socket");
        assert!(is_nonblocking(&socket));
        assert_eq!(socket.local_addr().expect("its address").port(), port);
        assert!(leased(&allocator).is_empty());

        let sender = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("a sender");
        sender
            .send_to(b"ping", ("127.0.0.1", port))
            .await
            .expect("a datagram sent");
        let mut heard = [0; 16];
        let (len, _) = socket.recv_from(&mut heard).await.expect("a datagram");
        assert_eq!(&heard[..len], b"ping");
    });
}

#[test]
fn release_async_waits_for_the_lock_on_another_thread() {
    let (dir, allocator) = registry();
    // Long enough never to pass while this test holds the lock on purpose.
    let allocator = allocator.lock_timeout(Duration::from_secs(10));
    let lease = allocator
        .allocate(&Request::new().range(37320..=37329))
        .expect("a port");
    let port = lease.port();
    // Hold the registry lock, as another process in a transaction would.
    let lock = File::options()
        .read(true)
        .write(true)
        .open(dir.path().join(LOCK_FILE))
        .expect("the lock file");
    flock(&lock, FlockOperation::LockExclusive).expect("the registry lock");

    runtime().block_on(async {
        let release = tokio::spawn(lease.release_async());
        // One thread runs every task here: if the release blocked it while waiting for
        // the lock, this task would resume only once the release had given up.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(
            !release.is_finished(),
            "the release cannot end while the lock is held"
        );
        let registry = std::fs::read_to_string(dir.path().join(REGISTRY_FILE));
        assert!(
            registry
                .expect("the registry")
                .contains(&format!("\"{port}\""))
        );
        drop(lock);
        release
            .await
            .expect("the release task ran")
            .expect("the release");
    });
    assert!(leased(&allocator).is_empty());
}

#[test]
fn outside_a_runtime_the_tokio_methods_say_so_and_do_not_panic() {
    let (_dir, allocator) = registry();
    let request = Request::new().range(37330..=37339);
    let lease = allocator.allocate(&request).expect("a port");
    match lease.into_tokio_listener() {
        Err(Error::InvalidRequest(message)) => {
            assert!(message.contains("outside a Tokio runtime"), "{message}")
        }
        other => panic!("expected an invalid request, got {other:?}"),
    }
    assert!(
        leased(&allocator).is_empty(),
        "the lease ended all the same"
    );

    // release_async polled by another executor releases on the calling thread.
    let lease = allocator.allocate(&request).expect("a port");
    poll_once(lease.release_async()).expect("the release");
    assert!(leased(&allocator).is_empty());
}

/// Polls `future` once, with no runtime, and expects it to be done.
fn poll_once<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the future did not finish at its first poll"),
    }
}

//! Ports held by processes that use no registry are never handed out: a TCP listener
//! on any local address, a UDP socket when UDP is asked, a host named the seed's way.
//!
//! Ports 39500-39599 are this file's.

mod common;

use std::net::{TcpListener, UdpSocket};

use portlease::{Error, Protocol, Request};

use common::registry;

fn exhausted(result: portlease::Result<portlease::Lease>) -> bool {
    matches!(result, Err(Error::Exhausted { .. }))
}

#[test]
fn a_tcp_listener_on_any_local_address_keeps_its_port() {
    let (_dir, allocator) = registry();
    let [a, b, c] = [39500, 39501, 39502];
    let _wildcard = TcpListener::bind(("0.0.0.0", a)).expect("bind 0.0.0.0");
    let _loopback = TcpListener::bind(("127.0.0.1", b)).expect("bind 127.0.0.1");
    let ipv6 = TcpListener::bind(("::1", c));
    for port in [a, b] {
        assert!(
            exhausted(allocator.allocate(&Request::new().range(port..=port))),
            "port {port}"
        );
    }
    match ipv6 {
        Ok(_listener) => assert!(exhausted(allocator.allocate(&Request::new().range(c..=c)))),
        Err(e) => eprintln!("no IPv6 here ({e}): the ::1 case is not checked"),
    }
}

#[test]
fn a_seed_style_host_check_covers_that_host_and_ipv6_loopback() {
    let (_dir, allocator) = registry();
    let port = 39510;
    let _listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let request = Request::new()
        .range(port..=port)
        .host("127.0.0.1".parse().expect("an address"));
    assert!(exhausted(allocator.allocate(&request)));
    let not_local = Request::new()
        .range(port..=port)
        .host("192.0.2.1".parse().expect("an address"));
    assert!(
        matches!(allocator.allocate(&not_local), Err(Error::InvalidRequest(m)) if m.contains("192.0.2.1"))
    );
}

#[test]
fn a_udp_socket_keeps_its_port_when_udp_is_asked() {
    let (_dir, allocator) = registry();
    let port = 39520;
    let _socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
    for protocol in [Protocol::Udp, Protocol::Both] {
        let request = Request::new().range(port..=port).protocol(protocol);
        assert!(exhausted(allocator.allocate(&request)), "{protocol}");
    }
    let tcp = allocator
        .allocate(&Request::new().range(port..=port))
        .expect("TCP is free there");
    assert_eq!(tcp.port(), port);
}

#[test]
fn a_bound_port_is_skipped_for_the_next() {
    let (_dir, allocator) = registry();
    let range = 39530..=39531;
    let _listener = TcpListener::bind(("127.0.0.1", *range.start())).expect("bind");
    let lease = allocator
        .allocate(&Request::new().range(range.clone()))
        .expect("a port");
    assert_eq!(lease.port(), *range.end());
}

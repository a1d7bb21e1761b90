//! The lease lifecycle through the library: choose (several ports, a block, a
//! preferred port), hold, renew, hand over (to a socket, to a child), release (by
//! dropping, by label, off the thread that holds it), and threads that never share a
//! port.
//!
//! Ports 38700-38799 are this file's.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use portlease::{Error, Lease, Owner, Request};

use common::{Hold, Reaped, leased, monotonic_ns, overlapping, registry, registry_json};

#[test]
fn a_lease_moves_to_another_thread_and_is_released_there() {
    fn sendable<T: Send + 'static>(_: &T) {}
    let (_dir, allocator) = registry();
    let lease = allocator
        .allocate(&Request::new().range(38790..=38799))
        .expect("a port");
    let port = lease.port();
    sendable::<Lease>(&lease);
    assert_eq!(leased(&allocator), [port]);
    let released = std::thread::spawn(move || lease.release());
    released
        .join()
        .expect("the releasing thread ran")
        .expect("the release");
    assert!(leased(&allocator).is_empty());
}

#[test]
fn leases_and_allocators_stay_send_sync_and_unwind_safe() {
    // Compile-time: a `Lease` holds its allocator through a trait object, whose
    // supertraits must keep these auto traits of the public types.
    use std::panic::{RefUnwindSafe, UnwindSafe};
    fn auto_traits<T: Send + Sync + Unpin + UnwindSafe + RefUnwindSafe>() {}
    auto_traits::<Lease>();
    auto_traits::<portlease::Allocator>();
}

#[test]
fn dropping_a_lease_releases_it_and_keep_does_not() {
    let (dir, allocator) = registry();
    let request = Request::new().range(38700..=38702);
    let dropped = allocator.allocate(&request).expect("a port").port();
    assert!(!registry_json(dir.path()).contains_key(&dropped.to_string()));
    let kept = allocator.allocate(&request).expect("a port").keep();
    assert!(registry_json(dir.path()).contains_key(&kept[0].to_string()));
    assert!(
        allocator.release(kept[0]).expect("release"),
        "it was leased"
    );
    assert!(
        !allocator.release(kept[0]).expect("release again"),
        "it is not any more"
    );
}

#[test]
fn several_ports_and_blocks_come_in_one_go() {
    let (_dir, allocator) = registry();
    let range = 38720..=38729;
    let start = *range.start();
    // A port bound in the middle breaks up the consecutive runs.
    let _listener = std::net::TcpListener::bind(("0.0.0.0", start + 2)).expect("bind");
    let three = allocator
        .allocate(&Request::new().range(range.clone()).count(3))
        .expect("3 ports");
    assert_eq!(three.ports().len(), 3);
    assert!(!three.ports().contains(&(start + 2)));
    let block = allocator
        .allocate(&Request::new().range(range.clone()).count(4).block(true))
        .expect("a block");
    let b = block.ports();
    assert!(b.windows(2).all(|w| w[1] == w[0] + 1), "consecutive: {b:?}");
    assert!(
        b.iter()
            .all(|p| !three.ports().contains(p) && *p != start + 2)
    );
    let too_big = Request::new().range(range).count(5).block(true);
    assert!(
        matches!(allocator.allocate(&too_big), Err(Error::Exhausted { wanted, .. }) if wanted.contains("block of 5"))
    );
}

#[test]
fn the_preferred_port_comes_first_when_free() {
    let (_dir, allocator) = registry();
    let range = 38710..=38719;
    let preferred = range.start() + 7;
    let first = allocator
        .allocate(&Request::new().range(range.clone()).prefer(preferred))
        .expect("a port");
    assert_eq!(first.port(), preferred);
    let second = allocator
        .allocate(&Request::new().range(range.clone()).prefer(preferred))
        .expect("a port");
    assert!(range.contains(&second.port()) && second.port() != preferred);
}

#[test]
fn renewing_restarts_the_clock_and_a_lost_lease_is_reported() {
    let (dir, allocator) = registry();
    let range = 38730..=38730;
    let short = Request::new()
        .range(range.clone())
        .owner(Owner::Nobody)
        .ttl(Some(Duration::from_millis(300)));
    let lease = allocator.allocate(&short).expect("a port");
    let key = lease.port().to_string();
    let stamped = registry_json(dir.path())[&key]["timestamp"]
        .as_f64()
        .expect("a timestamp");
    lease.renew(Some(Duration::from_secs(60))).expect("renew");
    let renewed = &registry_json(dir.path())[&key];
    assert!(renewed["timestamp"].as_f64().expect("a timestamp") >= stamped);
    assert_eq!(renewed["ttl"], 60.0);
    allocator
        .renew(lease.port(), Some(Duration::from_millis(100)))
        .expect("renew by port");

    std::thread::sleep(Duration::from_millis(200));
    // It expired; somebody else gets the port.
    let theirs = allocator
        .allocate(&Request::new().range(range))
        .expect("the expired port");
    assert!(matches!(lease.renew(None), Err(Error::LeaseLost { .. })));
    assert!(matches!(
        lease.hand_to(std::process::id()),
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(lease.release(), Err(Error::LeaseLost { .. })));
    let entry = &registry_json(dir.path())[&theirs.port().to_string()];
    assert_eq!(
        entry["pid"],
        std::process::id(),
        "their lease survived our release: {entry}"
    );
    assert!(matches!(
        allocator.renew(38731, None),
        Err(Error::NotLeased { .. })
    ));
}

#[test]
fn into_listener_hands_over_a_bound_socket() {
    let (dir, allocator) = registry();
    let range = 38740..=38740;
    let listener = allocator
        .allocate(&Request::new().range(range.clone()))
        .expect("a port")
        .into_listener()
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    assert!(range.contains(&port));
    assert!(
        registry_json(dir.path()).is_empty(),
        "the socket itself now keeps the port"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "it listens"
    );
    assert!(matches!(
        allocator.allocate(&Request::new().range(range.clone())),
        Err(Error::Exhausted { .. })
    ));

    let udp_range = 38750..=38750;
    let request = Request::new()
        .range(udp_range.clone())
        .protocol(portlease::Protocol::Udp);
    let socket = allocator
        .allocate(&request)
        .expect("a port")
        .into_udp_socket()
        .expect("bind");
    assert_eq!(
        socket.local_addr().expect("address").port(),
        *udp_range.start()
    );
    assert!(matches!(
        allocator.allocate(&request),
        Err(Error::Exhausted { .. })
    ));
}

#[test]
fn a_lease_handed_to_a_child_lasts_as_long_as_the_child_its_ttl_cleared() {
    let (_dir, allocator) = registry();
    let lease = allocator
        .allocate(
            &Request::new()
                .range(38760..=38760)
                .ttl(Some(Duration::from_secs(600))),
        )
        .expect("a port");
    assert_eq!(allocator.leases().expect("leases")[0].ttl_secs, Some(600.0));
    let mut child = Reaped(
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("sleep"),
    );
    lease.hand_to(child.0.id()).expect("hand");
    let listed = allocator.leases().expect("leases");
    assert_eq!(listed[0].pid, Some(child.0.id().into()));
    assert_eq!(listed[0].ttl_secs, None, "the TTL is cleared");
    child.0.kill().expect("kill");
    child.0.wait().expect("reap");
    assert!(
        allocator.leases().expect("leases")[0].stale,
        "it ended with the child"
    );
}

#[test]
fn leases_can_be_released_by_label() {
    let (_dir, allocator) = registry();
    let range = 38770..=38774;
    let web = allocator
        .allocate(&Request::new().range(range.clone()).count(2).label("web"))
        .expect("ports")
        .keep();
    let db = allocator
        .allocate(&Request::new().range(range).label("db"))
        .expect("a port")
        .keep();
    let released = allocator
        .release_where(|l| l.label.as_deref() == Some("web"))
        .expect("release");
    let mut released: Vec<u16> = released.iter().filter_map(|l| l.port).collect();
    released.sort_unstable();
    assert_eq!(released, web);
    let left: Vec<Option<u16>> = allocator
        .leases()
        .expect("leases")
        .iter()
        .map(|l| l.port)
        .collect();
    assert_eq!(left, [Some(db[0])]);
}

#[test]
fn threads_of_one_process_never_share_a_port() {
    // Four threads, four ports: each holds one at a time, so all must take turns.
    let (_dir, allocator) = registry();
    let range = 38780..=38783;
    let holds: Vec<Hold> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (allocator, range) = (allocator.clone(), range.clone());
                scope.spawn(move || {
                    let mut holds = Vec::new();
                    for _ in 0..100 {
                        let lease = allocator
                            .allocate(&Request::new().range(range.clone()))
                            .expect("a port");
                        let start = monotonic_ns();
                        std::thread::sleep(Duration::from_micros(100));
                        holds.push(Hold {
                            port: lease.port(),
                            start,
                            end: monotonic_ns(),
                            by: 0,
                        });
                        lease.release().expect("release");
                    }
                    holds
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker thread"))
            .collect()
    });
    assert_eq!(holds.len(), 400);
    assert!(overlapping(&holds).is_empty());
}

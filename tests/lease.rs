//! `Lease`, through the library alone: ending a lease off the thread that holds it.
//!
//! The lease's lifecycle as a whole (choose, renew, hand over, release) is tested with
//! the command's suite, in `cli/tests/integration/lease.rs`.

mod common;

use portlease::{Lease, Request};

use common::{leased, ports, registry};

#[test]
fn a_lease_moves_to_another_thread_and_is_released_there() {
    fn sendable<T: Send + 'static>(_: &T) {}
    let (_dir, allocator) = registry();
    let lease = allocator
        .allocate(&Request::new().range(ports(55)))
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

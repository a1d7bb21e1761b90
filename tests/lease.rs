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

#[test]
fn leases_and_allocators_stay_send_sync_and_unwind_safe() {
    // Compile-time: a `Lease` holds its allocator through a trait object, whose
    // supertraits must keep these auto traits of the public types.
    use std::panic::{RefUnwindSafe, UnwindSafe};
    fn auto_traits<T: Send + Sync + Unpin + UnwindSafe + RefUnwindSafe>() {}
    auto_traits::<Lease>();
    auto_traits::<portlease::Allocator>();
}

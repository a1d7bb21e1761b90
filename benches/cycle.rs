//! Single-process costs: one allocate+release cycle, on tmpfs and on the disk, and
//! its parts (read+parse, read+parse+write, bind check), so a regression shows where
//! it is. Run with `cargo bench`.

use std::path::Path;

use portlease::{Allocator, Owner, Protocol, Request};
use tempfile::TempDir;

fn main() {
    divan::main();
}

/// Where each benchmark's registry lives: RAM-backed and on the disk.
const PLACES: [&str; 2] = ["/dev/shm", "/tmp"];

fn allocator_in(place: &str) -> (TempDir, Allocator) {
    let dir = tempfile::tempdir_in(Path::new(place)).expect("a temp dir");
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    (dir, allocator)
}

/// A registry as a busy host has it: 32 leases besides the one being measured.
fn with_neighbours(allocator: &Allocator) {
    let request = Request::new()
        .range(42000..=42099)
        .count(32)
        .owner(Owner::Nobody)
        .ttl(Some(std::time::Duration::from_secs(3600)));
    allocator.allocate(&request).expect("32 ports").keep();
}

/// One allocate + release cycle, alone in the registry or beside 32 other leases.
fn cycle(bencher: divan::Bencher, place: &str, neighbours: bool) {
    let (_dir, allocator) = allocator_in(place);
    if neighbours {
        with_neighbours(&allocator);
    }
    let request = Request::new().range(41000..=41499);
    bencher.bench_local(|| {
        allocator
            .allocate(&request)
            .expect("a port")
            .release()
            .expect("release")
    });
}

#[divan::bench(args = PLACES)]
fn allocate_release(bencher: divan::Bencher, place: &str) {
    cycle(bencher, place, false);
}

#[divan::bench(args = PLACES)]
fn allocate_release_among_32_leases(bencher: divan::Bencher, place: &str) {
    cycle(bencher, place, true);
}

/// Lock, read and parse 33 leases, judge each one: no write.
#[divan::bench(args = PLACES)]
fn lock_load_parse(bencher: divan::Bencher, place: &str) {
    let (_dir, allocator) = allocator_in(place);
    with_neighbours(&allocator);
    bencher.bench_local(|| allocator.leases().expect("leases"));
}

/// Lock, read, parse, change one lease, write by temp file and rename.
#[divan::bench(args = PLACES)]
fn lock_load_save(bencher: divan::Bencher, place: &str) {
    let (_dir, allocator) = allocator_in(place);
    with_neighbours(&allocator);
    let port = allocator.leases().expect("leases")[0].port.expect("a port");
    bencher.bench_local(|| allocator.renew(port, None).expect("renew"));
}

/// The bind check alone: TCP on 0.0.0.0 and [::].
#[divan::bench]
fn bind_check() -> bool {
    portlease::probe::is_port_free(divan::black_box(41999), Protocol::Tcp, None).expect("a check")
}

//! The request board under a storm: posters that give up (their lock timeout run out
//! while the processes serving them are stopped and continued at any moment) never
//! leave a lease behind.
//!
//! Ports 39700-39799 are this file's.

mod common;

use std::io::Read;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use rustix::process::Signal;

use common::{Reaped, registry, worker_command};

#[test]
#[ignore = "a worker process that the tests here start (common::worker_command)"]
fn worker() {
    common::worker_main();
}

fn signal(child: &Child, signal: Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), signal)
        .expect("a signal to the child");
}

/// The exit status and stdout of a worker that has ended.
fn output_of(mut worker: Reaped) -> (ExitStatus, String) {
    let mut stdout = String::new();
    if let Some(mut out) = worker.0.stdout.take() {
        out.read_to_string(&mut stdout)
            .expect("the worker's stdout");
    }
    (worker.0.wait().expect("a worker ends"), stdout)
}

#[test]
fn posters_that_give_up_amid_stopped_servers_never_leave_a_lease() {
    let (dir, allocator) = registry();
    let range = 39700..=39799;
    let args = [
        range.start().to_string(),
        range.end().to_string(),
        "400".into(),
        "15".into(),
    ];
    let mut workers: Vec<Reaped> = (0..6)
        .map(|_| {
            Reaped(
                worker_command("give_up", dir.path(), &args)
                    .spawn()
                    .expect("a worker"),
            )
        })
        .collect();
    // Stop and continue the workers in turn, whatever each is doing: some are
    // stopped while serving the others, whose lock timeouts then run out. (A worker
    // is signalled only while not reaped, so its pid is still its own.)
    let mut outputs = Vec::new();
    let mut turn = 0usize;
    while !workers.is_empty() {
        turn = (turn + 1) % workers.len();
        if workers[turn].0.try_wait().expect("try_wait").is_some() {
            outputs.push(output_of(workers.remove(turn)));
            continue;
        }
        signal(&workers[turn].0, Signal::STOP);
        std::thread::sleep(Duration::from_millis(30));
        signal(&workers[turn].0, Signal::CONT);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut gave_up = 0;
    for (status, stdout) in outputs {
        assert!(status.success(), "a worker failed: {status:?}");
        gave_up += stdout.matches("FAILED").count();
    }
    // Every success was released; every poster that gave up owns nothing, once the
    // next transaction has ended what stopped servers saved for it.
    let left = allocator.leases().expect("a listing");
    assert!(
        left.is_empty(),
        "{} leases left ({gave_up} gave up): {left:?}",
        left.len()
    );
    assert!(gave_up > 0, "the storm made some posters give up");
}

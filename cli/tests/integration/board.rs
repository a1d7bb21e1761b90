//! The request board (`port_registry.queue`): requests really are served in batches,
//! a poster that gives up owns nothing afterwards whatever its server does, and a
//! board that is truncated, or cannot be made, crashes nothing.
//!
//! A server is stopped at a known step with the `PORTLEASE_TEST_STOP_AT` hook (it
//! sends itself SIGSTOP there), so each interleaving is reached every run.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::{binary, platform_has, range_arg, registry_json};

use portlease::BOARD_FILE;
// The board's layout, read from the library (its test builds export it).
use portlease::test_hooks::board_layout::{
    DESIGNATED, HEADER, POSTED, SLOT_SIZE, SLOTS, TAKEN, WITHDRAWN,
};

/// Whether this build posts requests on a board (skipping the test, saying so, where
/// it does not).
fn has_board() -> bool {
    platform_has(portlease::platform::REQUEST_BOARD, "request board")
}

/// The pid of the board's designated waiter (the one poster blocking on the lock):
/// the header's word at byte `DESIGNATED`; 0 for none.
fn designated(dir: &Path) -> u32 {
    std::fs::read(dir.join(BOARD_FILE))
        .ok()
        .and_then(|board| {
            board
                .get(DESIGNATED..DESIGNATED + 4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        })
        .unwrap_or(0)
}

/// `portlease gc` on `dir`: a writing transaction, which must succeed.
fn gc(dir: &Path) {
    let gc = Command::new(binary())
        .env("PORTLEASE_DIR", dir)
        .args(["gc", "--json"])
        .output()
        .expect("gc runs");
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
}

/// How many slots of the board are in `state`.
fn slots_in(dir: &Path, state: u32) -> usize {
    let Ok(board) = std::fs::read(dir.join(BOARD_FILE)) else {
        return 0;
    };
    (0..SLOTS)
        .filter_map(|slot| board.get(HEADER + slot * SLOT_SIZE..HEADER + slot * SLOT_SIZE + 4))
        .filter(|word| u32::from_le_bytes([word[0], word[1], word[2], word[3]]) == state)
        .count()
}

/// Polls until `done` (every 10 ms, for a minute at most: a bound, not a timing).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("gave up waiting until {what}");
}

/// Takes the registry lock in this process, as a stalled holder would.
fn hold_lock(dir: &Path) -> File {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(portlease::LOCK_FILE))
        .expect("the lock file");
    file.lock().expect("the lock");
    file
}

/// `portlease alloc` on `range`, started, output piped.
fn alloc(dir: &Path, range: &str, lock_timeout: &str) -> Command {
    let mut command = Command::new(binary());
    command
        .env("PORTLEASE_DIR", dir)
        .env_remove("PORTLEASE_TEST_STOP_AT")
        .args([
            "-vv",
            "alloc",
            "--range",
            range,
            "--lock-timeout",
            lock_timeout,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn spawn(mut command: Command) -> Child {
    command.spawn().expect("portlease runs")
}

/// Waits for a stopped child to report its stop.
fn wait_stopped(child: &Child) {
    let pid = rustix::process::Pid::from_child(child);
    let status = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::UNTRACED)
        .expect("waitpid")
        .expect("a status");
    assert!(status.1.stopped(), "the server did not stop: {status:?}");
}

fn signal(child: &Child, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), signal)
        .expect("a signal to the child");
}

fn port_of(output: &Output) -> u16 {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.trim().parse().unwrap_or_else(|_| {
        panic!(
            "no port printed: {stdout:?}, stderr {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The ports leased in the registry.
fn leased(dir: &Path) -> Vec<u16> {
    let mut ports: Vec<u16> = registry_json(dir)
        .keys()
        .filter_map(|key| key.parse().ok())
        .collect();
    ports.sort_unstable();
    ports
}

/// A server S (the designated waiter once the lock is free) takes the requests of
/// S and of a poster P; S is stopped at `step`, P gives up at its deadline (exit 4).
/// Returns S, stopped, and P's output.
fn poster_gives_up_while_its_server_is_stopped_at(
    dir: &Path,
    range: &str,
    step: &str,
) -> (Child, Output) {
    // The poster must still be waiting when the server takes its request: its 3 s
    // deadline leaves room for a loaded machine, and it gives up only after the stop.
    let (server, poster) = stopped_server_and_poster(dir, range, step, "3");
    let poster = poster.wait_with_output().expect("the poster ends");
    assert_eq!(
        poster.status.code(),
        Some(4),
        "the poster gives up at its deadline: {}",
        String::from_utf8_lossy(&poster.stderr)
    );
    (server, poster)
}

/// A server S and a poster P (lock timeout `poster_timeout`) post while the lock is
/// held; S is the designated waiter, takes the lock when it is let go, serves both
/// requests and is stopped at `step` (the test-only hook). Returns S, stopped, and P.
fn stopped_server_and_poster(
    dir: &Path,
    range: &str,
    step: &str,
    poster_timeout: &str,
) -> (Child, Child) {
    let lock = hold_lock(dir);
    let mut server = alloc(dir, range, "60");
    server.env("PORTLEASE_TEST_STOP_AT", step);
    let server = spawn(server);
    wait_until("the server posted", || slots_in(dir, POSTED) == 1);
    // The server, not the poster to come, is the one to take the lock.
    wait_until("the server waits on the lock", || {
        designated(dir) == server.id()
    });
    let poster = spawn(alloc(dir, range, poster_timeout));
    wait_until("the poster posted", || slots_in(dir, POSTED) == 2);
    drop(lock);
    wait_stopped(&server);
    (server, poster)
}

#[test]
fn a_poster_that_gives_up_before_its_server_saves_is_left_out() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(91, 10);
    let (server, _) = poster_gives_up_while_its_server_is_stopped_at(dir.path(), &range, "taken");
    assert_eq!(
        slots_in(dir.path(), WITHDRAWN),
        1,
        "the poster withdrew its taken request"
    );
    signal(&server, rustix::process::Signal::CONT);
    let server = server.wait_with_output().expect("the server ends");
    assert_eq!(
        leased(dir.path()),
        [port_of(&server)],
        "only the server's own lease"
    );
    assert_eq!(slots_in(dir.path(), WITHDRAWN), 0);
}

#[test]
fn a_poster_that_gives_up_after_its_server_saved_is_ended_by_its_server() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(92, 10);
    let (server, _) = poster_gives_up_while_its_server_is_stopped_at(dir.path(), &range, "saved");
    assert_eq!(
        leased(dir.path()).len(),
        2,
        "both leases were saved before the stop"
    );
    signal(&server, rustix::process::Signal::CONT);
    let server = server.wait_with_output().expect("the server ends");
    assert_eq!(
        leased(dir.path()),
        [port_of(&server)],
        "the poster's lease was ended"
    );
    assert_eq!(slots_in(dir.path(), WITHDRAWN), 0);
}

#[test]
fn a_poster_that_gives_up_after_its_server_saved_and_died_is_ended_by_the_next_holder() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(93, 10);
    let (mut server, _) =
        poster_gives_up_while_its_server_is_stopped_at(dir.path(), &range, "saved");
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");
    assert_eq!(
        leased(dir.path()).len(),
        2,
        "both leases were saved before the kill"
    );
    assert_eq!(slots_in(dir.path(), WITHDRAWN), 1);

    // Any writing transaction of the next holder ends the withdrawn request's lease,
    // before it does anything else: here a `gc` (`list` only reads, and changes nothing).
    gc(dir.path());
    // The dead server's own lease goes too: it died before telling anyone of it.
    assert_eq!(
        leased(dir.path()),
        Vec::<u16>::new(),
        "the poster's lease was ended"
    );
    assert_eq!(slots_in(dir.path(), WITHDRAWN), 0);
}

#[test]
fn a_server_killed_after_taking_leaves_the_requests_for_the_next_holder() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(94, 10);
    let (mut server, poster) = stopped_server_and_poster(dir.path(), &range, "taken", "60");
    assert_eq!(slots_in(dir.path(), TAKEN), 2);
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");

    // The poster takes the free lock, posts its request again and serves it.
    let poster = poster.wait_with_output().expect("the poster ends");
    assert!(
        poster.status.success(),
        "{}",
        String::from_utf8_lossy(&poster.stderr)
    );
    assert_eq!(
        leased(dir.path()),
        [port_of(&poster)],
        "the dead server saved nothing"
    );
}

#[test]
fn a_server_killed_after_saving_hands_the_saved_lease_out_once() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(95, 10);
    let (mut server, poster) = stopped_server_and_poster(dir.path(), &range, "saved", "60");
    let saved = leased(dir.path());
    assert_eq!(saved.len(), 2);
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");

    // Served again, the poster's request finds its lease by its token: no second one.
    let poster = poster.wait_with_output().expect("the poster ends");
    assert!(
        poster.status.success(),
        "{}",
        String::from_utf8_lossy(&poster.stderr)
    );
    assert!(
        saved.contains(&port_of(&poster)),
        "the lease saved for it: {saved:?}"
    );
    // Nothing more was leased, and the dead server's own lease, which it never
    // printed, was ended.
    assert_eq!(leased(dir.path()), [port_of(&poster)]);
}

#[test]
fn posted_requests_are_served_in_one_transaction() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(96, 10);
    let lock = hold_lock(dir.path());
    let posters: Vec<Child> = (1..=4)
        .map(|n| {
            let child = spawn(alloc(dir.path(), &range, "60"));
            wait_until("a request is posted", || slots_in(dir.path(), POSTED) == n);
            child
        })
        .collect();
    drop(lock);
    let outputs: Vec<Output> = posters
        .into_iter()
        .map(|child| child.wait_with_output().expect("a poster ends"))
        .collect();
    let mut ports: Vec<u16> = outputs.iter().map(port_of).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "four distinct ports");
    let served_together = outputs.iter().any(|o| {
        String::from_utf8_lossy(&o.stderr).contains("served 4 requests in one transaction")
    });
    assert!(
        served_together,
        "one holder served all four posted requests in one transaction: {:?}",
        outputs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_board_truncated_under_a_waiting_poster_crashes_nothing() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(97, 10);
    let lock = hold_lock(dir.path());
    let poster = spawn(alloc(dir.path(), &range, "60"));
    wait_until("the poster posted", || slots_in(dir.path(), POSTED) == 1);
    File::options()
        .write(true)
        .open(dir.path().join(BOARD_FILE))
        .expect("the board")
        .set_len(0)
        .expect("truncated");
    drop(lock);
    let output = poster.wait_with_output().expect("the poster ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.signal(), None, "no signal (SIGBUS) ended it");
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("shrank under its mapping"), "{stderr}");
    assert_eq!(leased(dir.path()), [port_of(&output)]);
}

/// `portlease alloc` with its file size limit set to `bytes` (SIGXFSZ ignored), as on
/// a filesystem with that much room left.
fn alloc_with_room(dir: &Path, range: &str, bytes: u64) -> Output {
    let mut command = alloc(dir, range, "30");
    // SAFETY: between fork and exec only async-signal-safe calls (setrlimit, signal).
    unsafe {
        command.pre_exec(move || {
            rustix::process::setrlimit(
                rustix::process::Resource::Fsize,
                rustix::process::Rlimit {
                    current: Some(bytes),
                    maximum: Some(bytes),
                },
            )?;
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    command.output().expect("portlease runs")
}

#[test]
fn without_room_for_the_board_the_command_works_without_it() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(98, 10);
    let output = alloc_with_room(dir.path(), &range, 16 * 1024);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("working without the request board"),
        "{stderr}"
    );
    assert_eq!(leased(dir.path()), [port_of(&output)]);
}

#[test]
fn without_room_for_the_registry_the_command_fails_cleanly() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(99, 10);
    let output = alloc_with_room(dir.path(), &range, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.path().join(portlease::REGISTRY_FILE).exists());
}

#[test]
fn a_lock_timeout_of_1e19_seconds_is_no_panic() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(100, 10);
    let output = alloc(dir.path(), &range, "1e19")
        .output()
        .expect("portlease runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(leased(dir.path()), [port_of(&output)]);
}

#[test]
fn ctrl_c_ends_exec_while_it_waits_for_the_lock() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(51, 10);
    let lock = hold_lock(dir.path());
    let exec = Command::new(binary())
        .env("PORTLEASE_DIR", dir.path())
        .args([
            "exec",
            "--range",
            &range,
            "--lock-timeout",
            "60",
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("portlease runs");
    wait_until("exec posted its request", || {
        slots_in(dir.path(), POSTED) == 1
    });
    signal(&exec, rustix::process::Signal::INT);
    let output = exec.wait_with_output().expect("exec ends");
    assert_eq!(
        output.status.code(),
        Some(130),
        "ended by Ctrl-C, not by the lock timeout: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(lock);
    let list = Command::new(binary())
        .env("PORTLEASE_DIR", dir.path())
        .args(["list", "--json"])
        .output()
        .expect("list runs");
    assert!(list.status.success());
    let leases: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).expect("JSON");
    assert!(
        leases.iter().all(|lease| lease["stale"] == true),
        "nothing live is leased for the interrupted exec: {leases:?}"
    );
}

#[test]
fn a_poster_killed_before_it_is_served_gets_nothing() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(72, 10);
    let lock = hold_lock(dir.path());
    let mut poster = spawn(alloc(dir.path(), &range, "60"));
    wait_until("the poster posted", || slots_in(dir.path(), POSTED) == 1);
    poster.kill().expect("SIGKILL");
    poster.wait().expect("reaped");
    let server = spawn(alloc(dir.path(), &range, "60"));
    wait_until("the server posted", || slots_in(dir.path(), POSTED) == 2);
    drop(lock);
    let server = server.wait_with_output().expect("the server ends");
    assert!(
        server.status.success(),
        "{}",
        String::from_utf8_lossy(&server.stderr)
    );
    assert_eq!(
        leased(dir.path()),
        [port_of(&server)],
        "nothing for the dead poster"
    );
    assert_eq!(slots_in(dir.path(), POSTED), 0, "its slot was freed");
}

#[test]
fn a_killed_designated_waiter_holds_nobody_up() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(38, 10);
    let lock = hold_lock(dir.path());
    // The first poster becomes the designated waiter, blocking on the lock.
    let mut designated = spawn(alloc(dir.path(), &range, "60"));
    wait_until("the designated waiter posted", || {
        slots_in(dir.path(), POSTED) == 1
    });
    let poster = spawn(alloc(dir.path(), &range, "60"));
    wait_until("the second poster posted", || {
        slots_in(dir.path(), POSTED) == 2
    });
    designated.kill().expect("SIGKILL");
    designated.wait().expect("reaped");
    drop(lock);
    let poster = poster.wait_with_output().expect("the poster ends");
    assert!(
        poster.status.success(),
        "{}",
        String::from_utf8_lossy(&poster.stderr)
    );
    assert_eq!(leased(dir.path()), [port_of(&poster)]);
}

#[test]
fn a_poster_killed_while_its_request_is_served_gets_nothing() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(39, 10);
    let (server, mut poster) = stopped_server_and_poster(dir.path(), &range, "taken", "60");
    poster.kill().expect("SIGKILL, as Ctrl-C would");
    poster.wait().expect("reaped");
    signal(&server, rustix::process::Signal::CONT);
    let server = server.wait_with_output().expect("the server ends");
    assert!(
        server.status.success(),
        "{}",
        String::from_utf8_lossy(&server.stderr)
    );
    assert_eq!(
        leased(dir.path()),
        [port_of(&server)],
        "nothing for the dead poster"
    );
}

#[test]
fn leases_saved_for_posters_that_died_with_their_server_are_ended_by_the_next_holder() {
    if !has_board() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(73, 10);
    let (mut server, mut poster) = stopped_server_and_poster(dir.path(), &range, "saved", "60");
    assert_eq!(leased(dir.path()).len(), 2, "both saved before the stop");
    // Both die before either prints a port: nobody knows of those leases.
    poster.kill().expect("SIGKILL");
    poster.wait().expect("reaped");
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");

    gc(dir.path());
    assert_eq!(
        leased(dir.path()),
        Vec::<u16>::new(),
        "no lease left behind"
    );
    assert_eq!(slots_in(dir.path(), TAKEN), 0);
}

//! `portlease exec` hands its lease to the command before the command runs: killed at
//! any moment, portlease leaves no command running on a port leased to nobody.

#![expect(
    clippy::cast_possible_truncation,
    reason = "pids and ports the test itself started or leased fit the C types"
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{Reaped, Run, binary, first_ports, registry_json};

/// The processes (not zombies) whose command line holds `marker` as one argument,
/// with their `comm`.
fn processes_with(marker: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == marker.as_bytes())
        {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        if state == Some(Some('Z')) || stat.is_empty() {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        found.push((pid, comm.trim().to_owned()));
    }
    found
}

/// Waits (a bounded while) until every process carrying `marker` is the command
/// (`sleep`) or gone: none is left between fork and exec. Returns the running commands.
fn settled_commands(marker: &str) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = processes_with(marker);
        if found.iter().all(|(_, comm)| comm == "sleep") || Instant::now() > deadline {
            return found.into_iter().map(|(pid, _)| pid).collect();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill(pid: i32) {
    // SAFETY: sends SIGKILL to a process this test started (directly or through exec).
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// A small pseudo-random sequence (xorshift), seeded from the clock: the moments
/// differ from run to run, and the seed is printed for a failure to be replayed.
struct Moments(u64);

impl Moments {
    fn new() -> Moments {
        let seed = std::env::var("PORTLEASE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("kill storm seed: PORTLEASE_TEST_SEED={seed}");
        Moments(seed)
    }

    /// A moment in the first 15 ms, in microseconds.
    fn next_micros(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 15_000
    }
}

#[test]
fn exec_killed_at_random_moments_never_leaves_a_command_on_a_free_port() {
    storm(*first_ports(67, 1).start(), &[], 200);
}

/// The same with --listen, where the child execs itself (to set LISTEN_PID).
#[test]
fn exec_listen_killed_at_random_moments_never_leaves_a_command_on_a_free_port() {
    storm(*first_ports(67, 2).end(), &["--listen"], 100);
}

/// `runs` times: `portlease exec [extra] --range PORT-PORT -- sleep ...` killed at a
/// random moment of its first 15 ms, then `alloc` of the port while the command
/// (if it started) still runs: the port must never go out again meanwhile.
fn storm(port: u16, extra: &[&str], runs: usize) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = format!("{port}-{port}");
    let mut moments = Moments::new();
    let mut twice = Vec::new();
    let mut unowned = Vec::new();
    let mut commands_ran = 0;
    for run in 0..runs {
        // A marker of this run in the command line: the command (sleep) carries it as
        // its argument, and so does portlease, and its child until it execs.
        let marker = format!("600.{port}{run:04}");
        let mut portlease = Reaped(
            Command::new(binary())
                .env("PORTLEASE_DIR", dir.path())
                .arg("exec")
                .args(extra)
                .args(["--range", &range, "--", "sleep", &marker])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("portlease runs"),
        );
        std::thread::sleep(Duration::from_micros(moments.next_micros()));
        let _ = portlease.0.kill();
        let _ = portlease.0.wait();
        let commands = settled_commands(&marker);
        // A command that runs owns the port's lease, alive (with --listen its socket
        // alone would also keep `alloc` off the port: so the registry is read too).
        if !commands.is_empty() {
            let leases: Vec<portlease::LeaseInfo> =
                Run::new(dir.path()).args(["list", "--json"]).run().json();
            let owned = leases.iter().any(|l| {
                l.port == Some(port)
                    && l.pid.is_some_and(|pid| commands.contains(&(pid as i32)))
                    && l.owner_alive == Some(true)
            });
            if !owned {
                unowned.push((run, commands.clone(), leases));
            }
        }
        let alloc = Run::new(dir.path())
            .args(["alloc", "--range", &range, "--ttl", "60"])
            .run();
        let still_running = settled_commands(&marker);
        if alloc.code() == 0 {
            if !still_running.is_empty() {
                twice.push((run, still_running.clone()));
            }
            Run::new(dir.path())
                .args(["release", "--force", &port.to_string()])
                .run()
                .success();
        }
        commands_ran += usize::from(!commands.is_empty());
        for pid in commands.iter().chain(&still_running) {
            kill(*pid);
        }
        // The killed command's lease ends with it: gone before the next run.
        let deadline = Instant::now() + Duration::from_secs(30);
        while registry_json(dir.path()).contains_key(&port.to_string()) && Instant::now() < deadline
        {
            let _ = Run::new(dir.path()).args(["gc"]).run();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    eprintln!("the command ran in {commands_ran} of {runs} runs");
    assert!(
        commands_ran > 0,
        "no run got as far as the command: the storm tested nothing"
    );
    assert!(
        unowned.is_empty(),
        "in {} runs the command ran without owning its lease: {unowned:?}",
        unowned.len()
    );
    assert!(
        twice.is_empty(),
        "in {} runs the command ran while port {port} was leased again: {twice:?}",
        twice.len()
    );
}

/// Whether process `pid` is stopped (as `PORTLEASE_TEST_STOP_AT` stops portlease, with
/// SIGSTOP, at a step of the hand-over).
fn stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('T'))
}

/// portlease exec stopped at `step` of the hand-over, then killed: whether the
/// command ran, and whether the port could be leased again while it ran.
fn kill_at_step(step: &str, block: u16) -> (bool, bool) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *first_ports(block, 1).start();
    let range = format!("{port}-{port}");
    let marker = dir.path().join("ran");
    let script = format!("echo ran > '{}'; exec sleep 600", marker.display());
    let mut portlease = Reaped(
        Command::new(binary())
            .env("PORTLEASE_DIR", dir.path())
            .env("PORTLEASE_TEST_STOP_AT", step)
            .args(["exec", "--range", &range, "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("portlease runs"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stopped(portlease.0.id()) {
        assert!(
            Instant::now() < deadline,
            "portlease never stopped at {step}"
        );
        assert!(
            portlease.0.try_wait().expect("wait").is_none(),
            "portlease ended without stopping at {step}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", portlease.0.id()))
            .unwrap_or_default();
    let mut children: Vec<i32> = children
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    // The hand-over runs on a thread of its own: its children are listed there.
    for task in std::fs::read_dir(format!("/proc/{}/task", portlease.0.id()))
        .expect("the tasks")
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(
            text.split_whitespace()
                .filter_map(|s| s.parse::<i32>().ok()),
        );
    }
    children.sort_unstable();
    children.dedup();
    assert_eq!(children.len(), 1, "one child, forked: {children:?}");
    let child = children[0];
    let _ = portlease.0.kill();
    let _ = portlease.0.wait();
    // The child either runs the command, or ends; wait until one of them is so.
    let deadline = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        // A zombie counts as gone where owners are known by more than their pid;
        // elsewhere its pid answers `kill(pid, 0)` until it is reaped.
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'));
        let gone = stat.is_empty() || (zombie && portlease::platform::PROCESS_IDENTITY);
        if gone {
            break false;
        }
        if comm.trim() == "sleep" {
            break true;
        }
        assert!(Instant::now() < deadline, "the child neither ran nor ended");
        std::thread::sleep(Duration::from_millis(5));
    };
    let leased_again = Run::new(dir.path())
        .args(["alloc", "--range", &range, "--ttl", "60"])
        .run()
        .code()
        == 0;
    if runs {
        kill(child);
    }
    assert_eq!(
        runs,
        marker.exists(),
        "the command ran exactly when it was let"
    );
    (runs, leased_again)
}

#[test]
fn killed_before_the_hand_over_the_command_never_runs() {
    assert_eq!(kill_at_step("forked", 68), (false, true));
}

#[test]
fn killed_after_the_hand_over_but_before_the_go_the_command_never_runs() {
    assert_eq!(kill_at_step("handed", 69), (false, true));
}

#[test]
fn killed_once_the_command_runs_the_port_stays_the_commands() {
    assert_eq!(kill_at_step("started", 74), (true, false));
}

/// A SIGTERM that comes after the hand-over let the command run, but before `exec`
/// knew its pid, reaches the command: `exec` must not end and leave it running.
#[test]
fn a_signal_during_the_hand_over_reaches_the_command_once_it_runs() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *first_ports(2, 1).start();
    let range = format!("{port}-{port}");
    let mut portlease = Reaped(
        Command::new(binary())
            .env("PORTLEASE_DIR", dir.path())
            .env("PORTLEASE_TEST_STOP_AT", "started")
            .args(["exec", "--range", &range, "--", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("portlease runs"),
    );
    let pid = i32::try_from(portlease.0.id()).expect("a pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stopped(portlease.0.id()) {
        assert!(Instant::now() < deadline, "portlease never stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
    let owner: i32 = registry_json(dir.path())[&port.to_string()]["pid"]
        .as_i64()
        .and_then(|pid| i32::try_from(pid).ok())
        .expect("the command's pid");
    // SAFETY: signals a process this test started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        libc::kill(pid, libc::SIGCONT);
    }
    let status = portlease.0.wait().expect("portlease ends");
    let gone = (0..1000).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        !std::path::Path::new(&format!("/proc/{owner}")).exists()
    });
    if !gone {
        kill(owner);
    }
    assert!(gone, "the command got the SIGTERM and ended");
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "exec ends as its command did"
    );
    assert!(
        registry_json(dir.path()).is_empty(),
        "the lease ended with it"
    );
}

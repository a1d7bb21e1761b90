//! Owners that look gone but run, and keep their ports: one in another PID namespace
//! (with a /proc of its own or the host's), one in another time namespace, one whose
//! main thread has exited while its other threads serve on. And a kernel thread, which
//! never exits, is never made an owner.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portlease::{Error, Owner, Request};

use crate::helpers::{
    Reaped, Run, binary, exec_in_new_pid_namespace, first_ports, in_new_pid_namespace,
    kernel_thread, portlease_in, ports, registry, registry_bytes, registry_json, required,
    run_within, skipped, wait_until_leased,
};

#[test]
fn an_owner_in_another_pid_namespace_keeps_its_port() {
    if !crate::helpers::platform_has(portlease::platform::PROCESS_IDENTITY, "PID namespaces") {
        return;
    }
    let (dir, _allocator) = registry();
    let port = *first_ports(77, 1).start();
    let range = format!("{port}-{port}");
    // `portlease exec` is pid 1 of a new PID namespace, and owns the lease.
    let Some(sleeper) = exec_in_new_pid_namespace(dir.path(), port) else {
        return;
    };
    let lease = &crate::helpers::registry_json(dir.path())[&port.to_string()];
    assert!(
        lease["pid_ns"].is_u64(),
        "the owner's namespace is recorded: {lease}"
    );

    run_within(
        portlease_in(
            dir.path(),
            &["alloc", "--range", &range, "--lock-timeout", "5"],
        ),
        Duration::from_secs(60),
    )
    .fails(3, "no port free");
    run_within(
        portlease_in(dir.path(), &["gc", "--lock-timeout", "5"]),
        Duration::from_secs(60),
    )
    .success();
    run_within(
        portlease_in(
            dir.path(),
            &["alloc", "--range", &range, "--lock-timeout", "5"],
        ),
        Duration::from_secs(60),
    )
    .fails(3, "no port free");
    drop(sleeper);

    // Within the owner's own namespace, its death is seen: an owner there that has
    // exited gives its port up to the next allocation made there.
    let script = format!(
        "sleep 120 & owner=$!; \
         {bin} alloc --range {range} --owner-pid $owner --lock-timeout 5 >/dev/null || exit 10; \
         kill $owner; wait $owner; \
         {bin} alloc --range {range} --ttl 5 --lock-timeout 5",
        bin = binary().display(),
    );
    let other_dir = tempfile::tempdir().expect("a temp dir");
    let mut inside = in_new_pid_namespace();
    inside
        .args(["sh", "-c", &script])
        .env("PORTLEASE_DIR", other_dir.path());
    let outcome = run_within(inside, Duration::from_secs(60));
    assert_eq!(
        outcome.success().trim(),
        port.to_string(),
        "{}",
        outcome.stderr()
    );
}

/// A C program whose main thread calls `pthread_exit` while another thread runs on;
/// that thread prints "ready" once the leader shows as a zombie.
const MAIN_EXITS: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void *serve(void *unused) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)getpid());
    for (;;) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f) fclose(f);
        buf[n] = 0;
        char *close = strrchr(buf, ')');
        if (close && close[1] == ' ' && close[2] == 'Z') break;
        usleep(1000);
    }
    printf("ready\n");
    fflush(stdout);
    sleep(120);
    return unused;
}

int main(void) {
    pthread_t thread;
    pthread_create(&thread, NULL, serve, NULL);
    pthread_exit(NULL);
}
"#;

#[test]
fn an_owner_whose_main_thread_exited_keeps_its_port() {
    let (dir, allocator) = registry();
    let port = *first_ports(78, 1).start();
    let build = tempfile::tempdir().expect("a temp dir");
    let source = build.path().join("main_exits.c");
    std::fs::write(&source, MAIN_EXITS).expect("write the C source");
    let program = build.path().join("main_exits");
    let compiled = Command::new("cc")
        .args(["-pthread", "-o"])
        .arg(&program)
        .arg(&source)
        .status();
    match compiled {
        Ok(status) if status.success() => {}
        other => {
            let what = format!("a C compiler to build the helper ({other:?})");
            crate::helpers::required(false, &what, "apt-get install gcc");
            return;
        }
    }
    let mut owner = Command::new(&program);
    owner.stdout(Stdio::piped());
    let mut owner = Reaped(owner.spawn().expect("the helper runs"));
    let stdout = owner.0.stdout.take().expect("its stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("a line");
    assert_eq!(line.trim(), "ready", "the main thread has exited");
    let pid = owner.0.id();

    let request = Request::new().range(port..=port);
    allocator
        .allocate(&request.clone().owner(Owner::Process(pid)))
        .expect("a process whose main thread exited still runs")
        .keep();
    assert!(
        matches!(
            allocator.allocate(
                &request
                    .clone()
                    .owner(Owner::Nobody)
                    .ttl(Some(Duration::from_secs(5)))
            ),
            Err(Error::Exhausted { .. })
        ),
        "held while its threads run"
    );
    let range = format!("{port}-{port}");
    run_within(
        portlease_in(
            dir.path(),
            &["alloc", "--range", &range, "--lock-timeout", "5"],
        ),
        Duration::from_secs(60),
    )
    .fails(3, "no port free");

    drop(owner);
    let _free = allocator
        .allocate(
            &request
                .owner(Owner::Nobody)
                .ttl(Some(Duration::from_secs(5))),
        )
        .expect("free once the whole process is gone");
}

/// `alloc` in a loop, from this PID namespace or (with `unshare`) a new one: prints
/// each port it gets, and `failed N` for each command that exits with code N.
fn alloc_loop(dir: &std::path::Path, range: &str, rounds: u32, own_namespace: bool) -> Child {
    let script = format!(
        "for i in $(seq {rounds}); do \
           \"$PORTLEASE\" alloc --range {range} --ttl 600 --lock-timeout 10 || echo \"failed $?\"; \
         done"
    );
    let mut command = if own_namespace {
        let mut unshare = in_new_pid_namespace();
        unshare.args(["sh", "-c"]);
        unshare
    } else {
        let mut sh = Command::new("sh");
        sh.arg("-c");
        sh
    };
    command
        .arg(script)
        .env("PORTLEASE", binary())
        .env("PORTLEASE_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the loop starts")
}

#[test]
fn processes_of_two_pid_namespaces_on_one_registry_all_get_their_ports() {
    let (dir, _allocator) = registry();
    let range = crate::helpers::range_arg(71, 100);
    let loops: Vec<Child> = (0..6)
        .map(|i| alloc_loop(dir.path(), &range, 15, i % 2 == 1))
        .collect();
    let mut printed = Vec::new();
    for child in loops {
        let output = child.wait_with_output().expect("the loop ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("unshare failed") {
            let what = format!("unshare ({})", stderr.trim());
            crate::helpers::required(false, &what, "run the tests as root, as CI does");
            return;
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            assert!(!line.starts_with("failed"), "an alloc {line}: {stderr}");
            printed.push(line.parse::<u16>().expect("a port per line"));
        }
    }
    let mut distinct = printed.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), printed.len(), "no port twice: {printed:?}");
    // Every lease in the registry is one a command printed: none left by an error.
    let mut leased: Vec<u16> = crate::helpers::registry_json(dir.path())
        .keys()
        .filter_map(|key| key.parse().ok())
        .collect();
    leased.sort_unstable();
    assert_eq!(leased, distinct);
}

/// A pid no process of this namespace has, nor the nine after it.
fn unused_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(32768);
    (300..max - 20)
        .rev()
        .find(|pid| (*pid..pid + 10).all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()))
        .expect("a free stretch of pids")
}

#[test]
fn an_owner_in_a_pid_namespace_that_kept_the_hosts_proc_keeps_its_port() {
    if !crate::helpers::platform_has(portlease::platform::PROCESS_IDENTITY, "PID namespaces") {
        return;
    }
    // `unshare --pid --fork` without `--mount-proc`: the owner's pid is its new
    // namespace's, while /proc (and so /proc/PID) is still the host's. The owner's
    // pid is steered to one the host does not have.
    let dir = tempfile::tempdir().expect("a temp dir");
    portlease::Allocator::with_dir(dir.path()).expect("an allocator");
    let port = *ports(87).start();
    let range = format!("{port}-{port}");
    let pid = unused_pid();
    let script = format!(
        "echo {last} > /proc/sys/kernel/ns_last_pid && {{ '{bin}' exec --range {range} -- sleep 120 & wait; }}",
        last = pid - 1,
        bin = binary().display(),
    );
    let mut owner = Command::new("unshare");
    owner
        .args(["--pid", "--fork", "--kill-child", "sh", "-c", &script])
        .env("PORTLEASE_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut owner = Reaped(owner.spawn().expect("unshare runs"));
    if let Err((status, stderr)) = wait_until_leased(&mut owner, dir.path(), port, |_| true) {
        let refused = stderr.contains("unshare failed")
            || stderr.contains("Operation not permitted")
            || stderr.contains("ns_last_pid");
        if !required(
            !refused,
            &format!(
                "a PID namespace whose ns_last_pid may be written (unshare: {})",
                stderr.trim()
            ),
            "run the tests as root, as CI does",
        ) {
            return;
        }
        panic!("the namespaced owner ended first ({status}): {stderr}");
    }
    let lease = &registry_json(dir.path())[&port.to_string()];
    assert!(
        lease["pid_ns"].is_u64(),
        "the owner's namespace is recorded: {lease}"
    );
    let args = ["alloc", "--range", &range, "--lock-timeout", "5"];
    run_within(portlease_in(dir.path(), &args), Duration::from_secs(60)).fails(3, "no port free");
}

#[test]
fn an_owner_in_another_time_namespace_keeps_its_port() {
    // A time namespace (CRIU's, or `unshare --time`) shifts the boot time that
    // /proc/PID/stat's start times count from, for the processes in it only.
    // SIGTERM, which `exec` passes on, so that the sleeper ends with the test.
    let dir = tempfile::tempdir().expect("a temp dir");
    portlease::Allocator::with_dir(dir.path()).expect("an allocator");
    let port = *ports(88).start();
    let range = format!("{port}-{port}");
    let mut owner = Command::new("unshare");
    owner
        .args(["--time", "--boottime", "100000", "--kill-child=SIGTERM"])
        .arg(binary())
        .args(["exec", "--range", &range, "--", "sleep", "120"])
        .env("PORTLEASE_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut owner = Reaped(owner.spawn().expect("unshare runs"));
    if let Err((status, stderr)) = wait_until_leased(&mut owner, dir.path(), port, |_| true) {
        // It ended before it held the port: `unshare --time` is refused here.
        required(
            false,
            &format!(
                "a time namespace (unshare --time: {status}: {})",
                stderr.trim()
            ),
            "run the tests as root on Linux 5.6 or later, as CI does",
        );
        return;
    }
    let args = ["alloc", "--range", &range, "--lock-timeout", "5"];
    run_within(portlease_in(dir.path(), &args), Duration::from_secs(60)).fails(3, "no port free");
}

#[test]
fn a_lease_is_never_given_to_a_kernel_thread_which_never_exits() {
    if !crate::helpers::platform_has(
        portlease::platform::PROCESS_IDENTITY,
        "kernel threads told apart",
    ) {
        return;
    }
    let Some(kthread) = kernel_thread() else {
        // Kernel threads are the host PID namespace's alone: in any other (a
        // container's) no pid names one, so none can be named as an owner either.
        skipped("no kernel thread is visible from this PID namespace (a container's)");
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *ports(125).start();
    let range = format!("{port}-{port}");
    let kthread = kthread.to_string();
    Run::new(dir.path())
        .args(["alloc", "--range", &range, "--owner-pid", &kthread])
        .run()
        .fails(2, &kthread);
    assert!(
        registry_bytes(dir.path()).is_none_or(|_| registry_json(dir.path()).is_empty()),
        "nothing was leased"
    );
    Run::new(dir.path())
        .args(["alloc", "--range", &range, "--ttl", "60"])
        .run()
        .success();
    Run::new(dir.path())
        .args(["hand", &port.to_string(), "--to", &kthread])
        .run()
        .fails(2, &kthread);
    let registry = registry_json(dir.path());
    assert_eq!(
        registry[&port.to_string()]["owner"],
        "none",
        "the lease is not handed on: {registry:?}"
    );
}

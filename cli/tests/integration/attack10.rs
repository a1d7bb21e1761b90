//! Attacks on issue 10's promises from outside: owners that can never end, output
//! that cannot be written, and the seed judging what portlease writes.

use crate::helpers::{Run, ports, registry_bytes, registry_json};

/// A kernel thread's pid (it never exits), read from `/proc`: `PF_KTHREAD` in field 9
/// of its stat. `None` where none is visible (a PID namespace of its own).
fn kernel_thread() -> Option<u32> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let flags: u64 = stat[stat.rfind(')')? + 1..]
                .split_ascii_whitespace()
                .nth(6)?
                .parse()
                .ok()?;
            (flags & PF_KTHREAD != 0).then_some(pid)
        })
}

#[test]
fn a_lease_is_never_given_to_a_kernel_thread_which_never_exits() {
    let Some(kthread) = kernel_thread() else {
        eprintln!("skipped: no kernel thread is visible in this PID namespace");
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

/// A launcher that starts each command in a session of its own (a terminal
/// multiplexer's server, a user service manager) is no shell: a `release` it starts
/// must not end the lease of a job it started earlier in another session.
#[test]
fn release_started_by_a_launcher_of_sessions_spares_a_job_in_another_session() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = *ports(126).start();
    let range = format!("{port}-{port}");
    let mut job = std::process::Command::new("setsid")
        .arg(crate::helpers::binary())
        .args(["exec", "--range", &range, "--", "sleep", "30"])
        .env("PORTLEASE_DIR", dir.path())
        .spawn()
        .expect("setsid runs");
    let key = port.to_string();
    while registry_bytes(dir.path()).is_none_or(|_| !registry_json(dir.path()).contains_key(&key)) {
        assert!(
            job.try_wait().expect("wait").is_none(),
            "the job ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let release = std::process::Command::new("setsid")
        .arg(crate::helpers::binary())
        .args(["release", &key])
        .env("PORTLEASE_DIR", dir.path())
        .output()
        .expect("setsid runs");
    let leased = registry_json(dir.path()).contains_key(&key);
    let _ = job.kill();
    let _ = job.wait();
    assert_eq!(
        release.status.code(),
        Some(6),
        "refused: {}",
        String::from_utf8_lossy(&release.stderr)
    );
    assert!(leased, "the job's lease is still there");
}

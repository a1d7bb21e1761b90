//! `Lease::spawn` and `Lease::spawn_listening` (issue 18): the child owns its lease
//! from before its program runs; sockets reach it as descriptors 3, 4, ... with
//! LISTEN_* set. Ports 38400-38499 are this file's.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use portlease::{Allocator, Error, Protocol, Request};

fn allocator() -> (tempfile::TempDir, Allocator) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
    (dir, allocator)
}

/// Kills and reaps a child when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_spawned_child_owns_the_lease_as_soon_as_spawn_returns() {
    let (_dir, allocator) = allocator();
    let lease = allocator
        .allocate(
            &Request::new()
                .range(38400..=38409)
                .ttl(Some(Duration::from_secs(600))),
        )
        .expect("a port");
    let mut child = Reaped(
        lease
            .spawn(Command::new("sleep").arg("600"))
            .expect("spawned"),
    );
    let infos = allocator.leases().expect("the leases");
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].pid, Some(i64::from(child.0.id())));
    assert_eq!(infos[0].owner_alive, Some(true));
    assert_eq!(
        infos[0].ttl_secs, None,
        "handed, it lasts as long as the child"
    );
    let _ = child.0.kill();
    let _ = child.0.wait();
    lease.release().expect("released after the child");
    assert!(allocator.leases().expect("the leases").is_empty());
}

#[test]
fn a_command_that_cannot_run_is_an_error_and_the_lease_stays_the_callers() {
    let (_dir, allocator) = allocator();
    let lease = allocator
        .allocate(&Request::new().range(38410..=38419))
        .expect("a port");
    let err = lease
        .spawn(&mut Command::new("no-such-command-for-portlease"))
        .expect_err("not found");
    match &err {
        Error::Spawn { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{err}");
        }
        other => panic!("expected Error::Spawn, got {other:?}"),
    }
    assert!(err.to_string().contains("no-such-command-for-portlease"));
    let infos = allocator.leases().expect("the leases");
    assert_eq!(infos[0].pid, Some(i64::from(std::process::id())));
    lease.renew(None).expect("still this process's lease");
}

#[test]
fn a_child_that_fails_its_exec_gives_the_lease_back_with_its_ttl() {
    // The script passes the checks before the fork; its interpreter is missing, so
    // the child's exec fails after the lease was handed to it.
    let dir = tempfile::tempdir().expect("a temp dir");
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/no/such/interpreter-for-portlease\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (_registry, allocator) = allocator();
    let lease = allocator
        .allocate(
            &Request::new()
                .range(38440..=38449)
                .ttl(Some(Duration::from_secs(600))),
        )
        .expect("a port");
    let before = allocator.leases().expect("the leases");
    let err = lease
        .spawn(&mut Command::new(&script))
        .expect_err("no interpreter");
    assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
    let after = allocator.leases().expect("the leases");
    assert_eq!(after[0].pid, Some(i64::from(std::process::id())));
    assert_eq!(after[0].ttl_secs, Some(600.0), "the TTL is back");
    assert!(
        after[0].age_secs >= before[0].age_secs,
        "its time was not started again"
    );
    lease.renew(None).expect("still this process's lease");
}

#[test]
fn sockets_reach_the_child_with_its_own_pid_in_listen_pid() {
    let (_dir, allocator) = allocator();
    let lease = allocator
        .allocate(&Request::new().range(38420..=38429).count(2))
        .expect("two ports");
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            "echo \"$LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES $KEPT\"; \
             [ -e /proc/self/fd/3 ] && [ -e /proc/self/fd/4 ] && ! [ -e /proc/self/fd/5 ] \
             && readlink /proc/$$/fd/3",
        ])
        .env("KEPT", "yes")
        .stdout(Stdio::piped());
    let mut child = Reaped(
        lease
            .spawn_listening(&mut command, Protocol::Tcp, &["web", "admin"])
            .expect("spawned"),
    );
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("the output");
    let status = child.0.wait().expect("ends");
    assert!(status.success(), "{out}");
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields[0], fields[1], "LISTEN_PID is the child's pid: {out}");
    assert_eq!(fields[1], child.0.id().to_string());
    assert_eq!(&fields[2..5], ["2", "web:admin", "yes"], "{out}");
    assert!(fields[5].starts_with("socket:"), "{out}");
}

#[test]
fn both_protocols_or_wrong_names_are_refused_before_anything_runs() {
    let (_dir, allocator) = allocator();
    let lease = allocator
        .allocate(&Request::new().range(38430..=38439).protocol(Protocol::Both))
        .expect("a port");
    let refused = lease.spawn_listening(&mut Command::new("true"), Protocol::Both, &[]);
    assert!(matches!(refused, Err(Error::InvalidRequest(_))));
    let refused = lease.spawn_listening(&mut Command::new("true"), Protocol::Tcp, &["a", "b"]);
    assert!(matches!(refused, Err(Error::InvalidRequest(_))));
}

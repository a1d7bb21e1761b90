//! A stderr that cannot be written: the command still exits with its own code, never
//! with a panic.

use std::process::{Command, Stdio};

use crate::helpers::{binary, first_ports};

#[test]
fn exec_of_a_missing_program_with_stderr_unwritable_exits_127_not_a_panic() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ports = first_ports(37, 1);
    let range = format!("{}-{}", ports.start(), ports.end());
    // Every write to /dev/full fails (ENOSPC); std takes a closed descriptor (EBADF)
    // for success, so closing it would prove nothing.
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" exec --range "$1" -- /nonexistent/program 2>/dev/full"#)
        .arg(binary())
        .arg(&range)
        .env("PORTLEASE_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("sh runs");
    assert_eq!(
        status.code(),
        Some(127),
        "exec exits as a shell would: {status}"
    );
}

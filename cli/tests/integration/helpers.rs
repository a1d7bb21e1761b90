//! What the tests share: temp registries, port ranges, the worker process and a
//! small builder that runs the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use portlease::Allocator;
use tempfile::TempDir;

// Shared with the library's tests, by its path in the workspace: these tests build
// in the workspace, not from the command's package alone.
#[path = "../../../tests/common/shared.rs"]
mod shared;
pub use shared::*;

/// Whether this build has `portlease serve`, which is Linux's alone (it reads its
/// clients' credentials with `SO_PEERCRED`); if not, the test is skipped, saying so.
pub fn has_serve() -> bool {
    platform_has(cfg!(linux_kernel), "`serve` (it needs Linux's SO_PEERCRED)")
}

/// Ports 20000-32699, below the usual ephemeral range, cut into blocks of 100: each
/// test uses the block of its own number, written once at its top, and no other.
pub fn ports(block: u16) -> std::ops::RangeInclusive<u16> {
    assert!(block < 127, "port block {block} is past 32699");
    let start = 20000 + block * 100;
    start..=start + 99
}

/// The `count` ports at the start of a test's block.
pub fn first_ports(block: u16, count: u16) -> std::ops::RangeInclusive<u16> {
    let start = *ports(block).start();
    start..=start + count - 1
}

/// `first_ports(block, count)` as the command line writes it: "START-END".
pub fn range_arg(block: u16, count: u16) -> String {
    let range = first_ports(block, count);
    format!("{}-{}", range.start(), range.end())
}

/// A fresh registry directory and an allocator on it.
pub fn registry() -> (TempDir, Allocator) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let allocator = Allocator::with_dir(dir.path()).expect("an allocator on a temp dir");
    (dir, allocator)
}

/// Starts this test binary again as a worker process (see `worker.rs`).
pub fn worker(mode: &str, dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([
            "worker::worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PORTLEASE_WORKER", mode)
        .env("PORTLEASE_WORKER_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// The path of the `portlease` binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portlease"))
}

/// Runs the real binary in a registry dir: `Run::new(dir).args([..]).run()`.
pub struct Run {
    command: Command,
}

impl Run {
    pub fn new(dir: &Path) -> Run {
        let mut command = Command::new(binary());
        command
            .env("PORTLEASE_DIR", dir)
            .env_remove("RUST_BACKTRACE");
        Run { command }
    }

    pub fn args<I, S>(mut self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: &Path) -> Run {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Run {
        self.command.env_remove(key);
        self
    }

    pub fn arg_path(mut self, path: &Path) -> Run {
        self.command.arg(path);
        self
    }

    pub fn run(mut self) -> Outcome {
        let output = self
            .command
            .stdin(Stdio::null())
            .output()
            .expect("the portlease binary runs");
        Outcome(output)
    }
}

/// What a run of the binary did.
pub struct Outcome(pub Output);

impl Outcome {
    pub fn code(&self) -> i32 {
        self.0.status.code().expect("an exit code, not a signal")
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts exit 0; returns stdout.
    pub fn success(&self) -> String {
        assert_eq!(
            self.code(),
            0,
            "stdout: {}\nstderr: {}",
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts the exit code and a one-line error naming `needle`; returns stderr.
    pub fn fails(&self, code: i32, needle: &str) -> String {
        let stderr = self.stderr();
        assert_eq!(
            self.code(),
            code,
            "stdout: {}\nstderr: {stderr}",
            self.stdout()
        );
        assert!(stderr.starts_with("portlease: error: "), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.success()).expect("the output is JSON of the documented shape")
    }
}

/// Runs `command` to its end, which must come within `limit`: a command that hangs
/// (on a FIFO, say) is killed, and the test fails saying so.
pub fn run_within(mut command: Command, limit: std::time::Duration) -> Outcome {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("reap");
            panic!(
                "{command:?} hung: killed after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Outcome(child.wait_with_output().expect("the output"))
}

/// The binary on registry dir `dir` with `args`, as a `Command`.
pub fn portlease_in(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .env("PORTLEASE_DIR", dir)
        .env_remove("RUST_BACKTRACE")
        .args(args);
    command
}

/// Runs `script` in the shell with the binary as `$PL` and the registry in `dir`.
pub fn shell(dir: &Path, script: &str) -> Outcome {
    let output = Command::new("sh")
        .args(["-c", script])
        .env("PL", binary())
        .env("PORTLEASE_DIR", dir)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .expect("sh runs");
    Outcome(output)
}

/// The first kernel thread in /proc (flag PF_KTHREAD in /proc/PID/stat): a process
/// that never exits. `None` where none is visible (a PID namespace of its own).
pub fn kernel_thread() -> Option<u32> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let flags: u64 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(6)?
            .parse()
            .ok()?;
        (flags & PF_KTHREAD != 0).then_some(pid)
    })
}

/// `portlease exec -- sleep 120` on `port` alone, as pid 1 of a new PID namespace,
/// once its lease is the command's in the registry in `dir`; `None` (with the reason printed)
/// where `unshare` is refused.
pub fn exec_in_new_pid_namespace(dir: &Path, port: u16) -> Option<Reaped> {
    let range = format!("{port}-{port}");
    let mut owner = in_new_pid_namespace();
    owner
        .arg(binary())
        .args(["exec", "--range", &range, "--", "sleep", "120"])
        .env("PORTLEASE_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut owner = Reaped(owner.spawn().expect("unshare runs"));
    // Leased first to `exec` (pid 1 there), then handed to its command: wait for the
    // hand-over, so that the test sees the lease's last owner.
    match wait_until_leased(&mut owner, dir, port, |pid| pid != 1) {
        Ok(()) => Some(owner),
        Err((_, stderr))
            if stderr.contains("unshare failed") || stderr.contains("Operation not permitted") =>
        {
            let what = format!("unshare ({})", stderr.trim());
            required(false, &what, "run the tests as root, as CI does");
            None
        }
        Err((status, stderr)) => panic!("the namespaced owner ended first ({status}): {stderr}"),
    }
}

/// Waits while `owner` runs until the registry in `dir` leases `port` to a pid that
/// `holder` accepts; `Err` with the owner's exit status and stderr (piped) if it ends
/// first.
pub fn wait_until_leased(
    owner: &mut Reaped,
    dir: &Path,
    port: u16,
    holder: impl Fn(u64) -> bool,
) -> Result<(), (std::process::ExitStatus, String)> {
    let registry_file = dir.join(portlease::REGISTRY_FILE);
    loop {
        if let Some(status) = owner.0.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut err) = owner.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
            }
            return Err((status, stderr));
        }
        let text = std::fs::read_to_string(&registry_file).unwrap_or_default();
        let registry: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if registry[port.to_string()]["pid"]
            .as_u64()
            .is_some_and(&holder)
        {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs the integration test `test` of this binary alone, with `PORTLEASE_REQUIRE_PEERS` set to `ci` and
/// the variable `env.0` pointing a requirement at `env.1`, where it is not.
pub fn run_test_without(test: &str, ci: &str, env: (&str, &str)) -> Output {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(REQUIRE_PEERS, ci)
        // Its skip is the point of the test that runs it, not one of the run's.
        .env("PORTLEASE_TEST_SKIP_LIST", "/dev/null")
        .env(env.0, env.1)
        .output()
        .expect("the test binary runs")
}

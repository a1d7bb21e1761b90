//! What the tests share: temp registries, port ranges, the worker process and a
//! small builder that runs the real binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use portlease::Allocator;
use tempfile::TempDir;

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

/// The registry file as JSON.
pub fn registry_json(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(portlease::REGISTRY_FILE)).expect("the registry");
    serde_json::from_str(&text).expect("the registry is a JSON object")
}

/// Seconds since the Unix epoch, as the registry writes them.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time after 1970")
        .as_secs_f64()
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

/// Starts a worker and waits for the first line it prints with `prefix`; returns the
/// worker, killed and reaped when dropped, and the rest of that line.
pub fn start_worker_until(mut command: Command, prefix: &str) -> (Reaped, String) {
    let mut child = Reaped(command.spawn().expect("a worker process"));
    let stdout = child.0.stdout.take().expect("the worker's stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a line from the worker");
        if let Some((_, rest)) = line.split_once(prefix) {
            return (child, rest.trim().to_owned());
        }
    }
    panic!("the worker ended without printing {prefix:?}");
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

/// The registry's bytes, or none.
pub fn registry_bytes(dir: &Path) -> Option<Vec<u8>> {
    std::fs::read(dir.join(portlease::REGISTRY_FILE)).ok()
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

/// The project setting that makes a missing test requirement (the seed's copy,
/// portpicker) fail its test instead of skipping it: `.ci/run` sets it to 1.
pub const REQUIRE_PEERS: &str = "PORTLEASE_REQUIRE_PEERS";

/// Whether something a test needs from outside the project (a Python package, the
/// seed's copy) is there. With `PORTLEASE_REQUIRE_PEERS=1` (which `.ci/run` sets) a
/// missing one fails the test, saying
/// what to install; elsewhere the test is skipped, with the reason printed.
pub fn required(available: bool, what: &str, install: &str) -> bool {
    if available {
        return true;
    }
    let under_ci = std::env::var(REQUIRE_PEERS).is_ok_and(|required| required == "1");
    assert!(
        !under_ci,
        "{what} is missing, and {REQUIRE_PEERS}=1 needs it: {install}"
    );
    skipped(&format!(
        "{what} is missing ({install}); with {REQUIRE_PEERS}=1 this test fails"
    ));
    false
}

/// Whether this build has a part of Linux that a test is about (one of the flags of
/// `portlease::platform`); if not (a build of other Unix systems' paths, `--cfg
/// portlease_other_unix`), the test is skipped, saying so: there is nothing to test.
pub fn platform_has(available: bool, what: &str) -> bool {
    if !available {
        skipped(&format!(
            "this build has no {what} (the paths of other Unix systems)"
        ));
    }
    available
}

/// Says that a test skipped, and why, where the run shows it: straight to stderr (a
/// passing test's captured output is never shown), and as a line of the run's list
/// of skips, `$CARGO_TARGET_TMPDIR/skipped-tests` (or `$PORTLEASE_TEST_SKIP_LIST`),
/// which `.ci/run` counts.
pub fn skipped(why: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!("portlease test skipped: {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    let list = std::env::var_os("PORTLEASE_TEST_SKIP_LIST").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests"),
        PathBuf::from,
    );
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(list)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

/// The Python interpreter the tests run: `$PORTLEASE_TEST_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PORTLEASE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The seed's runnable copy: `$PORTLEASE_TEST_SEED_DIR/port_allocator.py`, else
/// `../shared/seed/port_allocator.py` beside the project. Under CI a missing copy
/// fails the test that needs it; elsewhere it is skipped.
pub fn seed_module() -> Option<PathBuf> {
    let dir = std::env::var_os("PORTLEASE_TEST_SEED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/seed"),
        PathBuf::from,
    );
    let path = dir.join("port_allocator.py");
    required(
        path.exists(),
        &format!("the seed's copy {}", path.display()),
        "put the seed module port_allocator.py in ../shared/seed beside the project, or name \
         its directory in PORTLEASE_TEST_SEED_DIR",
    )
    .then_some(path)
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

/// Kills and reaps a child when dropped, so a failed assertion leaves no process.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let mut owner = Command::new("unshare");
    owner
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
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

/// The names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The files a damaged registry was kept aside as (`port_registry.json.corrupt-*`).
pub fn kept_aside(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("the dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("port_registry.json.corrupt-")
        })
        .map(|e| e.path())
        .collect()
}

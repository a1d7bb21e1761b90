//! What the library's tests (`tests/common`) and the command's
//! (`cli/tests/integration/helpers.rs`, which includes this file by its path) both
//! use: the one way to skip a test, a kill-on-drop child, the seed's copy, and
//! readers of a registry directory.

#![allow(dead_code)] // Each test binary uses its own part.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The workspace's root: the nearest directory above this crate's with `Cargo.lock`.
fn workspace_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .unwrap_or(manifest)
}

/// The project setting that makes a missing test requirement (the seed's copy, root,
/// namespaces) fail its test instead of skipping it: `.ci/run` sets it to 1.
pub const REQUIRE_PEERS: &str = "PORTLEASE_REQUIRE_PEERS";

/// Whether something a test needs from outside the project (the seed's copy, root, a
/// namespace) is there. With `PORTLEASE_REQUIRE_PEERS=1` (which `.ci/run` sets) a
/// missing one fails the test, saying what to install; elsewhere the test is skipped,
/// with the reason printed.
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
/// which `.ci/run` counts. The command's tests (`cli/tests/integration/helpers.rs`)
/// write the same list.
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

/// Kills and reaps a child when dropped, so a failed assertion leaves no process.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Python interpreter the tests run: `$PORTLEASE_TEST_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PORTLEASE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The seed's runnable copy: `$PORTLEASE_TEST_SEED_DIR/port_allocator.py`, else
/// `../shared/seed/port_allocator.py` beside the project. Under CI a missing copy
/// fails the test that needs it; elsewhere it is skipped (see [`required`]).
pub fn seed_module() -> Option<PathBuf> {
    let dir = std::env::var_os("PORTLEASE_TEST_SEED_DIR")
        .map_or_else(|| workspace_root().join("../shared/seed"), PathBuf::from);
    let path = dir.join("port_allocator.py");
    required(
        path.exists(),
        &format!("the seed's copy {}", path.display()),
        "put the seed module port_allocator.py in ../shared/seed beside the project, or name \
         its directory in PORTLEASE_TEST_SEED_DIR",
    )
    .then_some(path)
}

/// The registry file as JSON.
pub fn registry_json(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(portlease::REGISTRY_FILE)).expect("the registry");
    serde_json::from_str(&text).expect("the registry is a JSON object")
}

/// The registry's bytes, or none.
pub fn registry_bytes(dir: &Path) -> Option<Vec<u8>> {
    std::fs::read(dir.join(portlease::REGISTRY_FILE)).ok()
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

/// Seconds since the Unix epoch, as the registry writes them.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time after 1970")
        .as_secs_f64()
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

/// `unshare` set to start what the caller adds as pid 1 of a new PID namespace with
/// its own `/proc`, killed with `unshare` (which needs root).
pub fn in_new_pid_namespace() -> Command {
    let mut unshare = Command::new("unshare");
    unshare.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
    unshare
}

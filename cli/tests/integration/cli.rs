//! The `portlease` command, run for real in temp dirs: every subcommand, JSON parsed
//! with serde, and every bad input answered with one clear line and no change.

use std::net::TcpListener;
use std::path::Path;

use portlease::LeaseInfo;
use serde::Deserialize;

use crate::helpers::{Run, binary, first_ports, range_arg, registry_bytes, registry_json};

fn list(dir: &Path) -> Vec<LeaseInfo> {
    Run::new(dir).args(["list", "--json"]).run().json()
}

#[derive(Deserialize)]
struct Allocated {
    ports: Vec<u16>,
    dir: std::path::PathBuf,
    owner_pid: Option<u32>,
    ttl_secs: Option<f64>,
    label: Option<String>,
}

#[test]
fn alloc_prints_ports_that_outlive_the_command() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = Run::new(dir.path())
        .args(["alloc", "--range", &range_arg(40, 10), "-n", "2"])
        .run()
        .success();
    let ports: Vec<u16> = out
        .lines()
        .map(|l| l.parse().expect("a port per line"))
        .collect();
    assert_eq!(ports.len(), 2);
    let leases = list(dir.path());
    assert_eq!(
        leases.iter().filter_map(|l| l.port).collect::<Vec<_>>(),
        ports
    );
    assert!(
        leases
            .iter()
            .all(|l| !l.owned_by_process && l.ttl_secs == Some(300.0) && !l.stale)
    );

    let json: Allocated = Run::new(dir.path())
        .args([
            "alloc",
            "--range",
            &range_arg(40, 10),
            "--label",
            "api",
            "--ttl",
            "60",
            "--json",
        ])
        .run()
        .json();
    assert_eq!(
        (json.ports.len(), json.ttl_secs, json.label.as_deref()),
        (1, Some(60.0), Some("api"))
    );
    assert_eq!((json.dir.as_path(), json.owner_pid), (dir.path(), None));
}

#[test]
fn a_port_from_command_substitution_stays_leased() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let script = format!(
        "PORT=$({} alloc --range {}) && echo \"got $PORT\"",
        binary().display(),
        range_arg(41, 5)
    );
    let output = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("PORTLEASE_DIR", dir.path())
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let port: u16 = stdout
        .trim()
        .strip_prefix("got ")
        .expect("the port")
        .parse()
        .expect("a number");
    assert!(
        registry_json(dir.path()).contains_key(&port.to_string()),
        "still leased after sh exited"
    );
}

#[test]
fn an_owner_pid_holds_the_lease_while_it_lives() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut owner = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep");
    let pid = owner.id().to_string();
    let out = Run::new(dir.path())
        .args(["alloc", "--range", &range_arg(42, 1), "--owner-pid", &pid])
        .run()
        .success();
    let leases = list(dir.path());
    assert_eq!(leases[0].port, out.trim().parse().ok());
    assert_eq!(
        (leases[0].owner_alive, leases[0].ttl_secs),
        (Some(true), None)
    );
    owner.kill().expect("kill");
    owner.wait().expect("reap");
    let reclaimed = Run::new(dir.path())
        .args(["gc", "--json"])
        .run()
        .json::<Vec<LeaseInfo>>();
    assert_eq!(reclaimed.len(), 1);
    assert!(list(dir.path()).is_empty());
}

#[test]
fn release_by_port_label_and_owner() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(43, 10);
    let alloc = |extra: &[&str]| -> Vec<u16> {
        let out = Run::new(dir.path())
            .args(["alloc", "--range", &range])
            .args(extra)
            .run()
            .success();
        out.lines().map(|l| l.parse().expect("a port")).collect()
    };
    let plain = alloc(&[]);
    let web = alloc(&["-n", "2", "--label", "web"]);
    let me = std::process::id().to_string();
    let mine = alloc(&["--owner-pid", &me]);

    let run = Run::new(dir.path())
        .args(["release", &plain[0].to_string(), "29999"])
        .run();
    assert!(run.success().contains(&format!("released {}", plain[0])));
    assert!(
        run.stderr().contains("port 29999 was not leased"),
        "{}",
        run.stderr()
    );
    Run::new(dir.path())
        .args(["release", "--label", "web"])
        .run()
        .success();
    let left: Vec<u16> = list(dir.path()).iter().filter_map(|l| l.port).collect();
    assert_eq!(left, mine, "web's {web:?} and {} released", plain[0]);
    Run::new(dir.path())
        .args(["release", "--owner-pid", &me])
        .run()
        .success();
    assert!(list(dir.path()).is_empty());
    Run::new(dir.path())
        .args(["release"])
        .run()
        .fails(2, "name the ports");
}

#[test]
fn renew_sets_a_new_ttl_and_gc_reclaims_expired_leases() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(44, 5);
    let port = Run::new(dir.path())
        .args(["alloc", "--range", &range, "--ttl", "0.3"])
        .run()
        .success();
    let port = port.trim();
    Run::new(dir.path())
        .args(["renew", port, "--ttl", "600"])
        .run()
        .success();
    assert_eq!(list(dir.path())[0].ttl_secs, Some(600.0));
    Run::new(dir.path())
        .args(["renew", port, "--ttl", "0.2"])
        .run()
        .success();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(list(dir.path())[0].stale);
    Run::new(dir.path())
        .args(["renew", port])
        .run()
        .fails(1, "is gone");
    let gc = Run::new(dir.path()).args(["gc"]).run();
    assert!(
        gc.success().contains(port),
        "gc prints what it reclaimed: {}",
        gc.stdout()
    );
    assert!(list(dir.path()).is_empty());
}

#[test]
fn list_shows_aligned_columns_for_people() {
    let dir = tempfile::tempdir().expect("a temp dir");
    Run::new(dir.path())
        .args([
            "alloc",
            "--range",
            &range_arg(45, 5),
            "-n",
            "2",
            "--label",
            "db",
        ])
        .run()
        .success();
    let table = Run::new(dir.path()).args(["list"]).run().success();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("PORT") && lines[0].contains("TTL LEFT") && lines[0].contains("LABEL")
    );
    let column = lines[0].find("LABEL").expect("a label column");
    assert!(lines[1..].iter().all(|l| &l[column..] == "db"), "{table}");
}

#[derive(Deserialize)]
struct PortState {
    port: u16,
    free: bool,
    lease: Option<LeaseInfo>,
    sockets: Vec<BoundSocket>,
}

/// A socket as `check --json` prints it.
#[derive(Deserialize)]
struct BoundSocket {
    protocol: String,
    address: std::net::SocketAddr,
    state: String,
    pid: Option<u32>,
}

#[test]
fn check_tells_free_leased_and_bound_ports_apart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = first_ports(46, 3);
    let [free, leased, bound] = [*range.start(), range.start() + 1, range.start() + 2];
    Run::new(dir.path())
        .args(["alloc", "--prefer", &leased.to_string(), "--label", "x"])
        .run()
        .success();
    let _listener = TcpListener::bind(("127.0.0.1", bound)).expect("bind");

    assert_eq!(
        Run::new(dir.path())
            .args(["check", &free.to_string()])
            .run()
            .success()
            .trim(),
        format!("{free} free")
    );
    let run = Run::new(dir.path())
        .args(["check", "--json"])
        .args([free, leased, bound].map(|p| p.to_string()))
        .run();
    assert_eq!(run.code(), 5, "not all free");
    let states: Vec<PortState> = serde_json::from_str(&run.stdout()).expect("JSON");
    assert_eq!(
        states.iter().map(|s| (s.port, s.free)).collect::<Vec<_>>(),
        [(free, true), (leased, false), (bound, false)]
    );
    assert_eq!(
        states[1].lease.as_ref().and_then(|l| l.label.as_deref()),
        Some("x")
    );
    let socket = &states[2].sockets[0];
    assert_eq!(
        (
            socket.protocol.as_str(),
            socket.address.port(),
            socket.pid,
            socket.state.as_str()
        ),
        ("tcp", bound, Some(std::process::id()), "LISTEN")
    );
    let text = Run::new(dir.path())
        .args(["check", &bound.to_string()])
        .run()
        .stdout();
    assert!(
        text.contains(&format!("by pid {}", std::process::id())),
        "{text}"
    );
}

#[derive(Deserialize)]
struct Info {
    dir: std::path::PathBuf,
    ram_backed: Option<bool>,
    ephemeral_range: Option<[u16; 2]>,
    lock_timeout_secs: f64,
    leases: usize,
}

#[test]
fn info_describes_the_setup() {
    let dir = tempfile::tempdir().expect("a temp dir");
    Run::new(dir.path())
        .args(["alloc", "--range", &range_arg(47, 5)])
        .run()
        .success();
    let info: Info = Run::new(dir.path())
        .args(["info", "--json", "--lock-timeout", "7"])
        .run()
        .json();
    assert_eq!(
        (info.dir.as_path(), info.leases, info.lock_timeout_secs),
        (dir.path(), 1, 7.0)
    );
    assert!(info.ram_backed.is_some() && info.ephemeral_range.is_some());
    let shm = tempfile::tempdir_in("/dev/shm").expect("a dir in /dev/shm");
    let info: Info = Run::new(shm.path()).args(["info", "--json"]).run().json();
    assert_eq!(info.ram_backed, Some(true));
    assert!(
        Run::new(dir.path())
            .args(["info"])
            .run()
            .success()
            .contains("RAM-backed")
    );
}

#[test]
fn bad_input_gets_one_clear_line_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(48, 3);
    Run::new(dir.path())
        .args(["alloc", "--range", &range])
        .run()
        .success();
    let before = registry_bytes(dir.path());
    let cases: &[(&[&str], &str)] = &[
        (&["alloc", "--prefer", "0"], "0 is not a port"),
        (&["alloc", "--prefer", "65536"], "65536 is not a port"),
        (&["alloc", "--prefer", "-1"], "-1 is not a port"),
        (&["alloc", "--prefer", "abc"], "\"abc\" is not a port"),
        (&["alloc", "--range", "5-3"], "runs backwards"),
        (&["alloc", "--range", "10000-"], "is not START-END"),
        (&["alloc", "--range", "70000-80000"], "70000 is not a port"),
        (&["alloc", "--count", "0"], "count of 0"),
        (&["alloc", "--range", &range, "--count", "4"], "only 3"),
        (&["alloc", "--ttl", "-5"], "TTL \"-5\""),
        (&["alloc", "--ttl", "none"], "needs a TTL"),
        (
            &["alloc", "--owner-pid", "999999999"],
            "no process with pid 999999999",
        ),
        (
            &["alloc", "--proto", "sctp"],
            "possible values: tcp, udp, both",
        ),
        (&["release", "abc"], "not a port"),
        (&["renew", "0"], "0 is not a port"),
        (&["check"], "required"),
        (&["exec"], "required"),
        (
            &["exec", "--env", "A=B", "--", "true"],
            "not a variable name",
        ),
        (&["bogus"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let run = Run::new(dir.path()).args(*args).run();
        run.fails(2, needle);
        assert_eq!(
            registry_bytes(dir.path()),
            before,
            "{args:?} changed the registry"
        );
    }
    Run::new(dir.path())
        .args(["alloc", "--range", &range, "-n", "3"])
        .run()
        .fails(3, "no 3 ports free");
    assert_eq!(registry_bytes(dir.path()), before);
}

#[test]
fn unusable_directories_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("file");
    std::fs::write(&file, "").expect("write");
    Run::new(dir.path())
        .args(["alloc", "--dir"])
        .arg_path(&file)
        .run()
        .fails(1, "not a directory");

    // A directory the user cannot write: as root, ask as the unprivileged `nobody`.
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    // SAFETY: geteuid cannot fail.
    let run = if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&locked, Some(65534), Some(65534)).expect("chown");
        let copy = dir.path().join("portlease");
        std::fs::copy(binary(), &copy).expect("a copy nobody can run");
        let output = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy)
            .args(["alloc", "--dir"])
            .arg(&locked)
            .output()
            .expect("setpriv runs");
        crate::helpers::Outcome(output)
    } else {
        Run::new(dir.path())
            .args(["alloc", "--dir"])
            .arg_path(&locked)
            .run()
    };
    run.fails(1, "Permission denied");
    assert!(!locked.join(portlease::REGISTRY_FILE).exists());
}

#[test]
fn a_full_disk_fails_the_command_and_keeps_the_registry() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = range_arg(50, 3);
    Run::new(dir.path())
        .args(["alloc", "--range", &range])
        .run()
        .success();
    let before = registry_bytes(dir.path());
    // A file size limit of 0: every write fails as on a full disk (EFBIG).
    let script = format!(
        "trap '' XFSZ; ulimit -f 0; exec {} alloc --range {range}",
        binary().display()
    );
    let output = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("PORTLEASE_DIR", dir.path())
        .output()
        .expect("sh runs");
    crate::helpers::Outcome(output).fails(1, "cannot write");
    assert_eq!(registry_bytes(dir.path()), before);
}

#[test]
fn every_subcommand_explains_itself_with_an_example() {
    for sub in [
        "alloc", "release", "renew", "list", "gc", "check", "exec", "info", "serve",
    ] {
        let help = Run::new(Path::new("/nonexistent"))
            .args([sub, "--help"])
            .run()
            .success();
        assert!(
            help.contains("Example"),
            "{sub} --help has no example:\n{help}"
        );
    }
    let version = Run::new(Path::new("/nonexistent"))
        .args(["--version"])
        .run()
        .success();
    assert!(version.starts_with("portlease "), "{version}");
}

#[test]
fn warnings_reach_stderr_without_verbose() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // A range inside the kernel's ephemeral range (32768-60999 by default).
    let ephemeral = portlease::probe::ephemeral_port_range().expect("Linux tells it");
    let start = *ephemeral.start() + 1000;
    let range = format!("{start}-{}", start + 9);
    let run = Run::new(dir.path())
        .args(["alloc", "--range", &range])
        .run();
    run.success();
    assert!(
        run.stderr()
            .contains("overlaps the kernel's ephemeral range"),
        "{}",
        run.stderr()
    );

    std::fs::write(
        dir.path().join(portlease::REGISTRY_FILE),
        "{\"1\": {\"pid\": 1,",
    )
    .expect("write");
    let run = Run::new(dir.path()).args(["list"]).run();
    run.success();
    assert!(run.stderr().contains("is damaged"), "{}", run.stderr());
    let quiet = Run::new(dir.path())
        .args(["alloc", "--range", &range])
        .run();
    assert!(!quiet.stderr().contains("debug:"), "{}", quiet.stderr());
    let verbose = Run::new(dir.path())
        .args(["-vv", "alloc", "--range", &range])
        .run();
    assert!(
        verbose.stderr().contains("portlease: debug: leased"),
        "{}",
        verbose.stderr()
    );
}

#[test]
fn the_default_directory_follows_the_environment() {
    let runtime = tempfile::tempdir().expect("a temp dir");
    // `info` only reads, so it creates no directory.
    std::fs::create_dir(runtime.path().join("portlease")).expect("mkdir");
    let info: Info = Run::new(Path::new("unused"))
        .env_remove("PORTLEASE_DIR")
        .env("XDG_RUNTIME_DIR", runtime.path())
        .args(["info", "--json"])
        .run()
        .json();
    assert_eq!(info.dir, runtime.path().join("portlease"));
    let chosen = tempfile::tempdir().expect("a temp dir");
    let info: Info = Run::new(chosen.path())
        .args(["info", "--json"])
        .run()
        .json();
    assert_eq!(info.dir, chosen.path(), "PORTLEASE_DIR wins");
}

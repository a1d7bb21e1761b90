//! Things planted where portlease's files should be: a link for the directory, and a
//! FIFO, a device or a hard link for each file. Each is refused at once with a clear
//! one-line error (exit 1), nothing hangs, and nothing is written through it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::helpers::{first_ports, portlease_in, run_within};

/// Long enough for any honest run; a hung one is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(30);

/// The files of a registry directory.
const FILES: [&str; 4] = [
    "port_registry.json",
    "port_registry.json.tmp",
    "port_registry.lock",
    "port_registry.queue",
];

fn private_dir(parent: &Path, name: &str) -> std::path::PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

fn mknod(path: &Path, mode: libc::mode_t, device: libc::dev_t) -> std::io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a temp path");
    // SAFETY: `path` is NUL-terminated; mknod touches no memory of ours.
    if unsafe { libc::mknod(path.as_ptr(), mode, device) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn a_directory_link_is_refused_naming_it() {
    let root = tempfile::tempdir().expect("a temp dir");
    let real = private_dir(root.path(), "real");
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let range = format!(
        "{}-{}",
        first_ports(79, 1).start(),
        first_ports(79, 1).end()
    );
    for args in [
        vec!["alloc", "--range", &range, "--lock-timeout", "2"],
        vec!["list"],
    ] {
        let stderr = run_within(portlease_in(&link, &args), LIMIT).fails(1, "symbolic link");
        assert!(stderr.contains(&link.display().to_string()), "{stderr}");
    }
    assert_eq!(
        std::fs::read_dir(&real).expect("the real dir").count(),
        0,
        "nothing was made through the link"
    );
}

/// What to plant in place of a file.
#[derive(Debug, Clone, Copy)]
enum Planted {
    Fifo,
    /// A character device node (the null device, made with mknod: reading it cannot
    /// exhaust memory even where a bug would read it).
    Device,
    /// A hard link to a file outside the directory.
    HardLink,
}

#[test]
fn fifos_devices_and_hard_links_in_place_of_each_file_are_refused() {
    let root = tempfile::tempdir().expect("a temp dir");
    let range = format!(
        "{}-{}",
        first_ports(80, 4).start(),
        first_ports(80, 4).end()
    );
    let mut failures = Vec::new();
    for name in FILES {
        for planted in [Planted::Fifo, Planted::Device, Planted::HardLink] {
            let case = format!("{planted:?} as {name}");
            let dir = private_dir(root.path(), &case.replace(' ', "-"));
            let victim = root
                .path()
                .join(format!("victim-{}", case.replace(' ', "-")));
            std::fs::write(&victim, b"precious").expect("write the victim");
            let made = match planted {
                Planted::Fifo => mknod(&dir.join(name), libc::S_IFIFO | 0o600, 0),
                Planted::Device => {
                    mknod(&dir.join(name), libc::S_IFCHR | 0o600, libc::makedev(1, 3))
                }
                Planted::HardLink => std::fs::hard_link(&victim, dir.join(name)),
            };
            if let Err(e) = made {
                let what = format!("making {case} here ({e})");
                crate::helpers::required(false, &what, "run the tests as root, as CI does");
                continue;
            }
            let outcome = run_within(
                portlease_in(&dir, &["alloc", "--range", &range, "--lock-timeout", "2"]),
                LIMIT,
            );
            // The registry itself is only read, and replaced by renaming: a hard link
            // to it is read, and the file it shares is left alone.
            let read_only = matches!(planted, Planted::HardLink) && name == "port_registry.json";
            // Without a request board its file is never opened: whatever is there.
            let unused = name == portlease::BOARD_FILE && !portlease::platform::REQUEST_BOARD;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if read_only || unused {
                    outcome.success();
                } else {
                    let needle = match planted {
                        Planted::HardLink => "hard links",
                        _ => "not a regular file",
                    };
                    let stderr = outcome.fails(1, needle);
                    assert!(stderr.contains(name), "{stderr}");
                    assert!(
                        !dir.join("port_registry.json").is_file() || name == "port_registry.json",
                        "no lease was written"
                    );
                }
                assert_eq!(
                    std::fs::read(&victim).expect("the victim"),
                    b"precious",
                    "nothing written through the link"
                );
            }));
            if result.is_err() {
                failures.push(case);
            }
        }
    }
    assert!(failures.is_empty(), "failed: {failures:?}");
}

#[test]
fn a_registry_past_the_size_limit_is_salvaged_and_kept_aside_not_refused() {
    let root = tempfile::tempdir().expect("a temp dir");
    let dir = private_dir(root.path(), "registry");
    let huge = std::fs::File::create(dir.join("port_registry.json")).expect("create");
    huge.set_len(65 << 20).expect("a sparse 65 MiB file");
    let range = format!(
        "{}-{}",
        first_ports(81, 1).start(),
        first_ports(81, 1).end()
    );
    let outcome = run_within(
        portlease_in(&dir, &["alloc", "--range", &range, "--lock-timeout", "2"]),
        LIMIT,
    );
    outcome.success();
    assert!(
        outcome.stderr().contains("larger than 64 MiB"),
        "{}",
        outcome.stderr()
    );
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .expect("the dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
        .map(|e| e.metadata().expect("stat").len())
        .collect();
    assert_eq!(aside, [65 << 20], "the original kept aside whole");
    let registry = std::fs::metadata(dir.join("port_registry.json")).expect("stat");
    assert!(registry.len() < 4096, "a new, small registry");
}

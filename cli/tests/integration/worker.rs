//! The worker process other tests start: this test binary run again with
//! `PORTLEASE_WORKER` set (see `helpers::worker`). Ignored in ordinary runs. (The
//! library's own tests have workers of more kinds: `tests/common/mod.rs`.)

use std::time::Duration;

#[test]
#[ignore = "a worker process that other tests start"]
fn worker() {
    let mode = std::env::var("PORTLEASE_WORKER").expect("PORTLEASE_WORKER names the mode");
    let dir = std::env::var("PORTLEASE_WORKER_DIR").expect("PORTLEASE_WORKER_DIR");
    match mode.as_str() {
        // Hold the registry lock itself, then wait.
        "lock" => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(std::path::Path::new(&dir).join(portlease::LOCK_FILE))
                .expect("the lock file");
            file.lock().expect("the lock");
            println!("LOCKED");
            std::thread::sleep(Duration::from_secs(600));
        }
        other => panic!("unknown worker mode {other}"),
    }
}

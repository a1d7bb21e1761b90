//! The seed's two functions through the library, on the default directory.

use crate::helpers::ports;

#[test]
fn the_seeds_functions_work_on_the_default_directory() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let range = ports(29);
    let output = crate::helpers::worker("seed_api", dir.path(), &[range.start().to_string()])
        .env("PORTLEASE_DIR", dir.path())
        .output()
        .expect("a worker");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("SEED ").map(|(_, rest)| rest))
        .expect("the worker's report");
    let [leased, after]: [&str; 2] = line
        .split(' ')
        .collect::<Vec<_>>()
        .try_into()
        .expect("two fields");
    assert!(range.contains(&leased.parse().expect("a port")));
    assert_eq!(after, "released");
}

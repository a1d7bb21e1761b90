//! The `portlease` command: port leases for shells, scripts and CI jobs.

mod cli;

fn main() {
    std::process::exit(cli::main());
}

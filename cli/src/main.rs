//! The `portlease` command: port leases for shells, scripts and CI jobs.

fn main() -> std::process::ExitCode {
    portlease_cli::main()
}

//! `portlease gc`: reclaim stale leases.

use super::Global;
use super::list::print_table;

/// Reclaim every stale lease (owner gone, or TTL passed) and print what was reclaimed.
///
/// Example: portlease gc
#[derive(clap::Args, Debug)]
pub(crate) struct GcArgs {
    /// Print the reclaimed leases as JSON (the schema of `list --json`)
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(global: &Global, args: &GcArgs) -> anyhow::Result<i32> {
    let reclaimed = global.allocator()?.gc()?;
    if args.json {
        println!("{}", serde_json::to_string(&reclaimed)?);
    } else if reclaimed.is_empty() {
        eprintln!("portlease: nothing to reclaim");
    } else {
        print_table(&reclaimed);
    }
    Ok(0)
}

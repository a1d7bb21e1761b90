//! `portlease gc`: reclaim stale leases.

use super::Global;
use super::list::table;
use super::output::{note, print};

/// Reclaim every stale lease (owner gone, or TTL passed) and print what was reclaimed.
///
/// Example: portlease gc
#[derive(clap::Args, Debug)]
pub(crate) struct GcArgs {
    /// Print the reclaimed leases as JSON (the schema of `list --json`)
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(global: &Global, args: &GcArgs) -> Result<i32, crate::error::Error> {
    let reclaimed = global.allocator()?.gc()?;
    if args.json {
        print(&format!("{}\n", serde_json::to_string(&reclaimed)?))?;
    } else if reclaimed.is_empty() {
        note("nothing to reclaim");
    } else {
        print(&table(&reclaimed))?;
    }
    Ok(0)
}

//! `portlease info`: where the registry is and how the host is set up.

use std::fmt::Write;

use serde::Serialize;

use super::Global;

/// Show the registry directory and whether it is RAM-backed, the kernel's ephemeral
/// port range, the lock timeout, and the number of leases.
/// Only reads: creates nothing, says so where the registry directory does not exist
/// yet (before the first `alloc`), and works on one you may read but not write.
///
/// Example: portlease info --json
#[derive(clap::Args, Debug)]
pub(crate) struct InfoArgs {
    /// Print JSON: {"dir", "exists", "ram_backed", "ephemeral_range": [start, end], "lock_timeout_secs", "leases", "stale"}
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Info {
    dir: std::path::PathBuf,
    /// Whether the registry directory exists (the first `alloc` creates it).
    exists: bool,
    ram_backed: Option<bool>,
    ephemeral_range: Option<[u16; 2]>,
    lock_timeout_secs: f64,
    leases: usize,
    stale: usize,
}

pub(crate) fn run(global: &Global, args: &InfoArgs) -> Result<i32, crate::error::Error> {
    let (dir, leases) = match global.reader()? {
        Ok(reader) => (reader.dir().to_path_buf(), Some(reader.leases()?)),
        Err(missing) => (missing, None),
    };
    let exists = leases.is_some();
    let leases = leases.unwrap_or_default();
    let info = Info {
        ram_backed: portlease::is_ram_backed(&dir),
        dir,
        exists,
        ephemeral_range: portlease::probe::ephemeral_port_range().map(|r| [*r.start(), *r.end()]),
        lock_timeout_secs: global.lock_timeout().as_secs_f64(),
        leases: leases.len(),
        stale: leases.iter().filter(|l| l.stale).count(),
    };
    if args.json {
        super::output::print(&format!("{}\n", serde_json::to_string_pretty(&info)?))?;
        return Ok(0);
    }
    let mut text = String::new();
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no (each write waits for the disk; a tmpfs dir is faster)",
        None => "unknown",
    };
    let not_yet = if info.exists {
        ""
    } else {
        " (does not exist yet: nothing is leased; the first `alloc` creates it)"
    };
    // Writing to a String cannot fail.
    let _ = writeln!(text, "registry directory: {}{not_yet}", info.dir.display());
    let _ = writeln!(text, "RAM-backed:         {}", yes_no(info.ram_backed));
    let _ = match info.ephemeral_range {
        Some([start, end]) => writeln!(
            text,
            "ephemeral range:    {start}-{end} (avoid it for leases)"
        ),
        None => writeln!(text, "ephemeral range:    unknown"),
    };
    let _ = writeln!(text, "lock timeout:       {}s", info.lock_timeout_secs);
    let _ = writeln!(
        text,
        "leases:             {} ({} stale)",
        info.leases, info.stale
    );
    super::output::print(&text)?;
    Ok(0)
}

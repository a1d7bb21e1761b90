//! `portlease list`: who holds what.

use portlease::LeaseInfo;

use super::Global;
use super::output::{note, print, printable};

/// Show every lease: port, protocol, pid, whether the owner is alive, age, TTL left,
/// label and source; stale leases are marked.
/// Only reads: creates nothing, lists no leases where the registry directory does
/// not exist yet (before the first `alloc`), and works on one you may read but not
/// write.
///
/// `--json` prints an array of objects with the fields key, port, kind
/// (portlease|seed|unknown), pid, owned_by_process, owner_alive, age_secs, ttl_secs,
/// ttl_left_secs, protocol, label, source, stale, owner_in_other_pid_namespace (whose
/// pid names another process here, or none).
///
/// Example: portlease list --json | jq '.[] | select(.label == "web") | .port'
#[derive(clap::Args, Debug)]
pub(crate) struct ListArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(global: &Global, args: &ListArgs) -> Result<i32, crate::error::Error> {
    let leases = global.leases()?;
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&leases)?))?;
    } else if leases.is_empty() {
        note("no leases");
    } else {
        print(&table(&leases))?;
    }
    Ok(0)
}

/// Leases as aligned columns, for people.
pub(crate) fn table(leases: &[LeaseInfo]) -> String {
    let header = [
        "PORT", "PROTO", "PID", "OWNER", "AGE", "TTL LEFT", "SOURCE", "STATE", "LABEL",
    ];
    let rows: Vec<[String; 9]> = leases.iter().map(row).collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut text = line(&header.map(String::from));
    for row in &rows {
        text.push_str(&line(row));
    }
    text
}

fn row(info: &LeaseInfo) -> [String; 9] {
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    let owner = match (info.owned_by_process, info.owner_alive) {
        (true, Some(true)) => "alive",
        (true, _) => "gone",
        (false, _) if info.kind == portlease::EntryKind::Portlease => "none",
        _ => "-",
    };
    [
        printable(&info.key),
        or_dash(info.protocol.map(|p| p.to_string())),
        match info.pid {
            Some(pid) if info.owner_in_other_pid_namespace => {
                format!("{pid} (another PID namespace)")
            }
            pid => or_dash(pid.map(|p| p.to_string())),
        },
        owner.into(),
        or_dash(info.age_secs.map(seconds)),
        match (info.ttl_left_secs, info.ttl_secs) {
            (Some(left), _) => seconds(left),
            (None, None) if info.owned_by_process => "owner's life".into(),
            _ => "-".into(),
        },
        or_dash(info.source.as_deref().map(printable)),
        match (info.stale, info.kind) {
            (true, _) => "STALE".into(),
            (false, portlease::EntryKind::Unknown) => "unknown".into(),
            (false, portlease::EntryKind::Seed) => "seed".into(),
            (false, portlease::EntryKind::Portlease) => "held".into(),
            (false, _) => "other".into(),
        },
        or_dash(info.label.as_deref().map(printable)),
    ]
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a float to integer cast saturates, and the seconds are clamped at 0 first"
)]
fn seconds(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

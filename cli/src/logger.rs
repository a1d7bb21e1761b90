//! Log lines on stderr as `portlease: LEVEL: message`: warnings by default, more
//! with `-v`.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            // One write a line (stderr is unbuffered, and would take one per piece):
            // a server logs a line per request.
            let line = format!("portlease: {level}: {}\n", record.args());
            // A closed stderr is no reason to panic.
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Shows `default` and above, one level more per `-v`.
pub(crate) fn init(default: LevelFilter, verbose: u8) {
    let levels = [
        LevelFilter::Warn,
        LevelFilter::Info,
        LevelFilter::Debug,
        LevelFilter::Trace,
    ];
    let start = levels.iter().position(|&l| l == default).unwrap_or(0);
    let level = levels[(start + usize::from(verbose)).min(levels.len() - 1)];
    if log::set_logger(&StderrLogger).is_ok() {
        log::set_max_level(level);
    }
}

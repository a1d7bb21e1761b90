//! The contention harness: N processes, each doing K cycles of allocate → hold →
//! release through the library on one registry, every hold recorded; prints one JSON
//! line with the fields of the seed's stress script, and exits non-zero if two holds of
//! one port ever overlapped.
//!
//! ```text
//! cargo run --release --example contention -- --dir DIR --procs N --cycles K \
//!     [--range START-END] [--hold-ms MS]
//! ```
//!
//! It runs itself again as the workers; they start together on a signal from the
//! parent, so process start-up is not timed.

#![expect(
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "timings and counts of one run, far below 2^52, and a clock that is positive"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portlease::{Allocator, Request};

struct Options {
    dir: String,
    procs: usize,
    cycles: usize,
    range: (u16, u16),
    hold: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--worker") => parse(&args[1..]).and_then(|o| worker(&o)),
        _ => parse(&args).and_then(|o| coordinate(&o)),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(message) => {
            eprintln!("contention: error: {message}");
            std::process::exit(2);
        }
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        dir: String::new(),
        procs: 1,
        cycles: 100,
        range: (41000, 41499),
        hold: Duration::ZERO,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag} {value}: not a number"))
        };
        match flag.as_str() {
            "--dir" => options.dir = value.clone(),
            "--procs" => options.procs = number()?,
            "--cycles" => options.cycles = number()?,
            "--hold-ms" => {
                let ms: f64 = value
                    .parse()
                    .map_err(|_| format!("--hold-ms {value}: not a number"))?;
                options.hold =
                    Duration::try_from_secs_f64(ms / 1000.0).map_err(|e| e.to_string())?;
            }
            "--range" => {
                let (start, end) = value.split_once('-').ok_or("--range takes START-END")?;
                let port = |p: &str| {
                    p.parse::<u16>()
                        .map_err(|_| format!("--range {value}: bad port"))
                };
                options.range = (port(start)?, port(end)?);
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if options.dir.is_empty() || options.procs == 0 || options.cycles == 0 {
        return Err(
            "usage: contention --dir DIR --procs N --cycles K [--range START-END] [--hold-ms MS]"
                .into(),
        );
    }
    Ok(options)
}

/// One worker: waits for the start signal on stdin, then prints `latency_ns port
/// hold_start_ns hold_end_ns` per cycle (monotonic clock, comparable across processes).
fn worker(options: &Options) -> Result<i32, String> {
    let allocator = Allocator::with_dir(&options.dir).map_err(|e| e.to_string())?;
    let request = Request::new().range(options.range.0..=options.range.1);
    let mut out = Vec::with_capacity(options.cycles * 40);
    std::io::stdin()
        .read_exact(&mut [0u8])
        .map_err(|e| format!("no start signal: {e}"))?;
    for _ in 0..options.cycles {
        let t0 = Instant::now();
        let lease = allocator.allocate(&request).map_err(|e| e.to_string())?;
        let allocated = t0.elapsed();
        let hold_start = monotonic_ns();
        if !options.hold.is_zero() {
            std::thread::sleep(options.hold);
        }
        let hold_end = monotonic_ns();
        let port = lease.port();
        let t2 = Instant::now();
        lease.release().map_err(|e| e.to_string())?;
        let latency = allocated + t2.elapsed();
        writeln!(out, "{} {port} {hold_start} {hold_end}", latency.as_nanos())
            .map_err(|e| e.to_string())?;
    }
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| e.to_string())?;
    Ok(0)
}

fn coordinate(options: &Options) -> Result<i32, String> {
    std::fs::create_dir_all(&options.dir).map_err(|e| format!("{}: {e}", options.dir))?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut workers = Vec::new();
    for _ in 0..options.procs {
        let child = Command::new(&me)
            .arg("--worker")
            .args([
                "--dir",
                &options.dir,
                "--cycles",
                &options.cycles.to_string(),
            ])
            .args([
                "--range",
                &format!("{}-{}", options.range.0, options.range.1),
            ])
            .args([
                "--hold-ms",
                &(options.hold.as_secs_f64() * 1000.0).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        workers.push(child);
    }
    let started = Instant::now();
    for worker in &mut workers {
        let stdin = worker.stdin.as_mut().ok_or("no worker stdin")?;
        stdin.write_all(b"g").map_err(|e| e.to_string())?;
    }
    let mut latencies = Vec::new();
    let mut holds = Vec::new();
    for worker in workers {
        let output = worker.wait_with_output().map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!("a worker failed: {}", output.status));
        }
        for line in BufReader::new(&output.stdout[..]).lines() {
            let line = line.map_err(|e| e.to_string())?;
            let f: Vec<u64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
            latencies.push(f[0]);
            holds.push((f[1], f[2], f[3]));
        }
    }
    let wall = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    holds.sort_unstable();
    let overlaps = holds
        .windows(2)
        .filter(|w| w[0].0 == w[1].0 && w[1].1 < w[0].2)
        .count();
    let n = latencies.len();
    let ms = |ns: u64| (ns as f64 / 1e6 * 1000.0).round() / 1000.0;
    println!(
        "{{\"procs\": {}, \"iters\": {}, \"cycles\": {n}, \"wall_s\": {:.3}, \"cycles_per_s\": {:.1}, \
         \"p50_ms\": {}, \"p99_ms\": {}, \"max_ms\": {}, \"overlaps\": {overlaps}}}",
        options.procs,
        options.cycles,
        wall,
        n as f64 / wall,
        ms(latencies[n / 2]),
        ms(latencies[n * 99 / 100]),
        ms(latencies[n - 1]),
    );
    Ok(if overlaps == 0 { 0 } else { 1 })
}

fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

//! `portlease exec`: run a command on leased ports, and release them when it ends.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::{Arc, Mutex};

use portlease::Owner;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::Global;
use super::args::{LeaseOptions, UsageError};
use super::error::Error;

/// Lease ports for a command, pass them to it, run it, and release them when it ends.
///
/// The ports are owned by the command's process, so they stay leased even if
/// portlease itself is killed. They are passed in the environment ($PORT, or the
/// names given with --env, one per port; $PORTLEASE_PORTS holds them all, space-
/// separated) and replace {PORT}, {PORT0}, {PORT1}, ... in the arguments (with no
/// --count or --env, as many ports are leased as the highest {PORTi} asks for; one
/// past the count is an error). SIGINT, SIGTERM and SIGHUP are forwarded to the
/// command; before it runs (say, while portlease waits for the lock) they end
/// portlease with 128 + N. portlease exits with the command's exit code, 128 + N when
/// signal N ended it, 127 when it cannot be found.
///
/// The lease is the command's from before its program runs: portlease forks, records
/// the child as the owner while the child waits, then lets it run; if portlease dies
/// before that, the child exits (code 125) without running the command. Handed to the
/// command, as by `portlease hand`, the lease lasts exactly as long as it runs: a
/// --ttl counts only until then.
///
/// With --listen, portlease binds each port (on --host, else 127.0.0.1; listening for
/// TCP, bound for --proto udp) and passes the sockets as descriptors 3, 4, ..., with
/// LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES (the --env names, else port0, port1, ...),
/// as systemd's socket activation does; {FD}, {FD0}, {FD1}, ... in the arguments name
/// them. The port is bound before the command runs: no race with anyone for it.
///
/// Example: portlease exec -- python3 -m http.server {PORT}
///
/// Example: portlease exec --listen -- uvicorn --fd {FD} app:app
#[derive(clap::Args, Debug)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    lease: LeaseOptions,
    /// An environment variable to set to a port: one per port, in order (repeatable)
    #[arg(long = "env", value_name = "NAME")]
    env: Vec<String>,
    /// Bind each port and pass the sockets as descriptors 3, 4, ... (LISTEN_FDS, {FD})
    #[arg(long)]
    listen: bool,
    /// The command to run, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

pub(crate) fn run(global: &Global, args: &ExecArgs) -> Result<i32, Error> {
    let count = port_count(args)?;
    // Listen for signals before anything is leased, so none is missed.
    let forwarding = Arc::new(Mutex::new(Forwarding::default()));
    forward_signals(Arc::clone(&forwarding))?;

    let request = args
        .lease
        .request(Owner::CurrentProcess, None, "exec")?
        .count(count);
    let lease = global.allocator()?.allocate(&request)?;
    let ports = lease.ports().to_vec();

    let mut command = Command::new(&args.command[0]);
    command.args(args.command[1..].iter().map(|arg| substitute(arg, &ports)));
    let names: Vec<&str> = if args.env.is_empty() {
        vec!["PORT"]
    } else {
        args.env.iter().map(String::as_str).collect()
    };
    for (name, port) in names.iter().zip(&ports) {
        command.env(name, port.to_string());
    }
    let all: Vec<String> = ports.iter().map(u16::to_string).collect();
    command.env("PORTLEASE_PORTS", all.join(" "));

    // From here a signal waits for the command: once the hand-over has let the child
    // run, portlease must not end without passing the signal on. A hand-over still
    // waiting for the lock is called off by it instead (the child then never runs).
    if let Ok(mut forwarding) = forwarding.lock() {
        forwarding.spawning();
    }
    let signalled = Arc::clone(&forwarding);
    let spawned = portlease::interrupt::with_check(
        move || signalled.lock().is_ok_and(|f| f.pending().is_some()),
        || {
            if args.listen {
                let socket_names: Vec<&str> = args.env.iter().map(String::as_str).collect();
                lease.spawn_listening(&mut command, args.lease.proto, &socket_names)
            } else {
                lease.spawn(&mut command)
            }
        },
    );
    let pending = forwarding.lock().ok().and_then(|f| f.pending());
    let mut child = match (spawned, pending) {
        (Ok(child), _) => child,
        (Err(_), Some(signal)) => {
            release(lease);
            crate::output::note("interrupted before the command ran");
            return Ok(128 + signal);
        }
        (Err(portlease::Error::Spawn { source, .. }), None) => {
            let program = args.command[0].to_string_lossy();
            let (code, why) = match source.kind() {
                ErrorKind::NotFound => (127, "command not found".to_string()),
                ErrorKind::PermissionDenied => (126, "permission denied".to_string()),
                _ => (126, source.to_string()),
            };
            release(lease);
            crate::output::note(format_args!("error: cannot run {program:?}: {why}"));
            return Ok(code);
        }
        (Err(e), None) => {
            release(lease);
            return Err(e.into());
        }
    };
    // The lease is the command's since before it ran (see `Lease::spawn`).
    let pid = rustix::process::Pid::from_child(&child);
    if let Ok(mut forwarding) = forwarding.lock()
        && let Some(signal) = forwarding.started(pid)
    {
        send(pid, signal);
    }
    // Wait for the command to end without reaping it, so that its pid stays its own
    // until the forwarder has stopped sending to it; then reap it.
    let ended = rustix::process::waitid(
        rustix::process::WaitId::Pid(pid),
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
    );
    if let Ok(mut forwarding) = forwarding.lock() {
        forwarding.ended();
    }
    if let Err(e) = ended {
        log::debug!("cannot wait for the command without reaping it: {e}");
    }
    let status = child
        .wait()
        .map_err(|e| Error::failure(format_args!("cannot wait for the command: {e}")))?;
    release(lease);
    Ok(status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1))
}

/// How many ports: --count, else one per --env name, else as many as the highest
/// `{PORTi}` in the command names, else 1. A `{PORTi}` past them is an error, not
/// left in the command as it is.
fn port_count(args: &ExecArgs) -> Result<usize, Error> {
    if !args.listen
        && let Some(arg) = args
            .command
            .iter()
            .filter_map(|arg| arg.to_str())
            .find(|arg| arg.contains("{FD"))
    {
        return Err(UsageError(format!(
            "{arg:?} names a descriptor ({{FD}}), but none is passed without --listen: add \
             --listen"
        ))
        .into());
    }
    if args.listen && args.lease.proto == portlease::Protocol::Both {
        return Err(UsageError(
            "--listen passes TCP or UDP sockets, not both: give --proto tcp or --proto udp".into(),
        )
        .into());
    }
    let named = args
        .command
        .iter()
        .filter_map(|arg| arg.to_str())
        .flat_map(|arg| {
            [
                highest_placeholder(arg, "{PORT"),
                highest_placeholder(arg, "{FD"),
            ]
        })
        .flatten()
        .max()
        .map(|i| i + 1);
    let count = counted_ports(args)?;
    match (count, named) {
        (Some(count), Some(named)) if named > count => Err(UsageError(format!(
            "{{PORT{0}}} (or {{FD{0}}}) names port {named}, but only {count} will be leased: \
             raise --count (or give one --env name per port)",
            named - 1
        ))
        .into()),
        (Some(count), _) => Ok(count),
        (None, named) => Ok(named.unwrap_or(1)),
    }
}

/// The highest `i` of the `{PORTi}` (or, with `open` `"{FD"`, `{FDi}`) placeholders
/// in `arg`.
fn highest_placeholder(arg: &str, open: &str) -> Option<usize> {
    arg.split(open)
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .filter_map(|(digits, _)| digits.parse::<usize>().ok())
        .max()
}

/// How many ports --count or the --env names ask for, if they do.
fn counted_ports(args: &ExecArgs) -> Result<Option<usize>, Error> {
    for name in &args.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(UsageError(format!(
                "--env {name:?} is not a variable name: use letters, digits and _"
            ))
            .into());
        }
    }
    match (args.lease.count, args.env.len()) {
        (Some(count), names) if names > 0 && names != count => Err(UsageError(format!(
            "--count {count} but {names} --env names: give one name per port"
        ))
        .into()),
        (Some(count), _) => Ok(Some(count)),
        (None, 0) => Ok(None),
        (None, names) => Ok(Some(names)),
    }
}

/// Replaces `{PORT}` with the first port and `{PORTi}` with the i-th (from 0); and
/// `{FD}`, `{FDi}` with the descriptors `--listen` passes them on (3, 4, ...).
fn substitute(arg: &OsString, ports: &[u16]) -> OsString {
    let Some(text) = arg.to_str() else {
        return arg.clone();
    };
    let mut text = text
        .replace("{PORT}", &ports[0].to_string())
        .replace("{FD}", "3");
    for (i, port) in ports.iter().enumerate() {
        text = text
            .replace(&format!("{{PORT{i}}}"), &port.to_string())
            .replace(&format!("{{FD{i}}}"), &(3 + i).to_string());
    }
    text.into()
}

/// Where the signal forwarder sends signals: nowhere before the command is spawned (a
/// signal then ends portlease itself, which may be waiting for the lock), to the
/// command once it runs (a signal that came while it was being spawned is kept, and
/// sent then), and nowhere once it has ended (its pid may be reused as soon as it is
/// reaped).
#[derive(Default)]
struct Forwarding {
    child: Child,
}

#[derive(Default, Clone, Copy, PartialEq, Debug)]
enum Child {
    #[default]
    NotYet,
    /// Being spawned; the last signal that came meanwhile.
    Spawning(Option<i32>),
    Running(rustix::process::Pid),
    Ended,
}

/// What to do with a signal that came.
#[derive(Debug, PartialEq)]
enum OnSignal {
    /// No command yet: portlease ends, as the signal asks.
    Exit(i32),
    Send(rustix::process::Pid),
    /// Kept for the command about to run.
    Keep,
    Ignore,
}

impl Forwarding {
    fn spawning(&mut self) {
        self.child = Child::Spawning(None);
    }

    /// A signal that came while the command was being spawned.
    fn pending(&self) -> Option<i32> {
        match self.child {
            Child::Spawning(signal) => signal,
            _ => None,
        }
    }

    /// The command runs as `pid`; returns the signal to send it at once, if one came
    /// while it was being spawned.
    fn started(&mut self, pid: rustix::process::Pid) -> Option<i32> {
        let pending = self.pending();
        self.child = Child::Running(pid);
        pending
    }

    fn ended(&mut self) {
        self.child = Child::Ended;
    }

    fn on_signal(&mut self, signal: i32) -> OnSignal {
        match self.child {
            Child::NotYet => OnSignal::Exit(128 + signal),
            Child::Spawning(_) => {
                self.child = Child::Spawning(Some(signal));
                OnSignal::Keep
            }
            Child::Running(pid) => OnSignal::Send(pid),
            Child::Ended => OnSignal::Ignore,
        }
    }
}

/// Forwards SIGINT, SIGTERM and SIGHUP to the child while it runs. The mutex is held
/// while a signal is sent, so the pid cannot be reaped (and reused) meanwhile.
fn forward_signals(forwarding: Arc<Mutex<Forwarding>>) -> Result<(), Error> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Error::failure(format_args!("cannot listen for signals: {e}")))?;
    std::thread::Builder::new()
        .name("portlease-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let Ok(mut forwarding) = forwarding.lock() else {
                    return;
                };
                match forwarding.on_signal(signal) {
                    OnSignal::Exit(code) => {
                        // Whatever was posted or leased is withdrawn by the board's
                        // rules, or owned by this process and ends with it.
                        crate::output::note("interrupted before the command ran");
                        std::process::exit(code);
                    }
                    OnSignal::Send(pid) => send(pid, signal),
                    OnSignal::Keep | OnSignal::Ignore => {}
                }
            }
        })
        .map_err(|e| Error::failure(format_args!("cannot start the signal forwarder: {e}")))?;
    Ok(())
}

fn send(pid: rustix::process::Pid, signal: i32) {
    if let Some(signal) = rustix::process::Signal::from_named_raw(signal)
        && let Err(e) = rustix::process::kill_process(pid, signal)
    {
        log::debug!("cannot forward signal {signal:?} to the command: {e}");
    }
}

fn release(lease: portlease::Lease) {
    if let Err(e) = lease.release() {
        log::warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_end_portlease_before_the_command_wait_for_it_while_it_is_spawned_and_never_reach_an_ended_one()
     {
        let mut forwarding = Forwarding::default();
        assert_eq!(forwarding.on_signal(SIGINT), OnSignal::Exit(130));
        let pid = rustix::process::Pid::from_raw(4242).expect("a pid");
        forwarding.spawning();
        assert_eq!(forwarding.pending(), None);
        assert_eq!(forwarding.on_signal(SIGTERM), OnSignal::Keep);
        assert_eq!(forwarding.pending(), Some(SIGTERM));
        assert_eq!(forwarding.started(pid), Some(SIGTERM), "sent once it runs");
        assert_eq!(forwarding.on_signal(SIGTERM), OnSignal::Send(pid));
        forwarding.ended();
        assert_eq!(forwarding.on_signal(SIGTERM), OnSignal::Ignore);
    }
}

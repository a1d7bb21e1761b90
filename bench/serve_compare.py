#!/usr/bin/env python3
"""`portlease serve` beside portpicker's own portserver.py, on the same load, in one run.

Each round starts one server (the two take turns, fresh each round: a new registry
directory on /dev/shm for portlease), then N client processes (default 8) that each
call portpicker.pick_unused_port() K times (default 200) with PORTSERVER_ADDRESS set,
released together. Reports requests per second (all requests over the wall time from
release to the last client done) and the p50/p99/max of one call, medians over the
rounds, and the ratios; counts every call the server refused (portpicker's client
then guesses a port on its own: a "fallback").

usage: python3 bench/serve_compare.py [--rounds 5] [--clients 8] [--requests 200]
           [--pool 15000-24999] [--portlease target/release/portlease] [--write]
       python3 bench/serve_compare.py --from bench/serve_results.json   (report again)

Needs python3 and cargo. Installs portpicker from PyPI with pip if it is missing (its
package ships portserver.py); fetches nothing else. As root it runs itself in a
private network namespace (unshare -n), so no other process's ports meet the pool.
--write puts the results in BENCHMARKS.md (section "portlease serve beside portpicker's
portserver") and bench/serve_results.json.
"""
import argparse, datetime, importlib, json, os, pathlib, platform, shutil, signal
import socket, statistics, subprocess, sys, tempfile, time

ROOT = pathlib.Path(__file__).resolve().parent.parent
START, END = "<!-- serve-bench:start -->", "<!-- serve-bench:end -->"

CLIENT = r"""
import json, os, sys, time, portpicker
requests = int(sys.argv[1])
served = portpicker.get_port_from_port_server
fallbacks = 0
def counting(address, pid=None):
    global fallbacks
    port = served(address, pid=pid)
    fallbacks += port is None
    return port
portpicker.get_port_from_port_server = counting
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
latencies = []
cpu = os.times()
for _ in range(requests):
    t = time.perf_counter_ns()
    portpicker.pick_unused_port()
    latencies.append(time.perf_counter_ns() - t)
done = os.times()
cpu_s = done.user - cpu.user + done.system - cpu.system
print(json.dumps({"latencies_ns": latencies, "fallbacks": fallbacks, "end": time.monotonic_ns(), "cpu_s": cpu_s}))
sys.stdout.flush()
sys.stdin.readline()
"""


def ensure_portpicker():
    """portpicker importable (pip-installed if missing); returns portserver.py's path."""
    try:
        importlib.import_module("portpicker")
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "portpicker"], check=True)
        importlib.invalidate_caches()
    from importlib import metadata
    for f in metadata.distribution("portpicker").files or []:
        if f.name == "portserver.py":
            return pathlib.Path(f.locate()).resolve()
    sys.exit("portpicker is installed but its portserver.py was not found")


def wait_listening(address, proc, what):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode} before listening")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # A connection without a request: both servers close it, counting an error.
            s.connect("\0" + address[1:])
            return
        except OSError:
            time.sleep(0.02)
        finally:
            s.close()
    sys.exit(f"{what} did not listen on {address}")


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(server_cmd, address, clients, requests, what):
    server = subprocess.Popen(server_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_listening(address, server, what)
        env = dict(os.environ, PORTSERVER_ADDRESS=address)
        procs = [subprocess.Popen([sys.executable, "-c", CLIENT, str(requests)], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for _ in range(clients)]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        cpu_before = cpu_seconds(server.pid)
        start = time.monotonic_ns()
        for p in procs:
            p.stdin.write("go\n"); p.stdin.flush()
        results = [json.loads(p.stdout.readline()) for p in procs]
        server_cpu = cpu_seconds(server.pid) - cpu_before
        for p in procs:
            p.stdin.write("done\n"); p.stdin.flush(); p.wait()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill(); server.wait()
    wall = (max(r["end"] for r in results) - start) / 1e9
    lat = sorted(x / 1e6 for r in results for x in r["latencies_ns"])
    n = len(lat)
    return {"requests": n, "wall_s": wall, "requests_per_s": n / wall,
            "p50_ms": lat[n // 2], "p99_ms": lat[min(n - 1, int(n * 0.99))], "max_ms": lat[-1],
            "fallbacks": sum(r["fallbacks"] for r in results),
            "server_cpu_us_per_request": server_cpu / n * 1e6,
            "clients_cpu_us_per_request": sum(r["cpu_s"] for r in results) / n * 1e6}


def median_of(rounds):
    keys = ["requests_per_s", "p50_ms", "p99_ms", "max_ms", "wall_s", "server_cpu_us_per_request",
            "clients_cpu_us_per_request"]
    out = {k: statistics.median(r[k] for r in rounds) for k in keys}
    out["fallbacks"] = sum(r["fallbacks"] for r in rounds)
    return out


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def write_report(data):
    p, s, o = data["portpicker"], data["portlease"], data["options"]
    ratio = s["requests_per_s"] / p["requests_per_s"]
    lines = [
        START,
        "## portlease serve beside portpicker's portserver",
        "",
        f"Measured {data['date']} on {data['machine']}, by `python3 bench/serve_compare.py "
        f"--rounds {o['rounds']} --write` (raw figures in `bench/serve_results.json`).",
        f"{o['clients']} client processes × {o['requests']} `portpicker.pick_unused_port()` calls each, "
        f"released together; pool {o['pool']}; the two servers take turns, {o['rounds']} rounds each, "
        "fresh every round; medians over the rounds. A request's latency is one call in the client.",
        "",
        "| server | requests/s | p50 ms | p99 ms | max ms | round s | server CPU µs/request | clients' CPU µs/request | refused (client guessed) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in [("portpicker's portserver.py", p), ("portlease serve", s)]:
        lines.append(f"| {name} | {r['requests_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['max_ms']:.2f} | {r['wall_s']:.3f} | {r['server_cpu_us_per_request']:.0f} | "
                     f"{r['clients_cpu_us_per_request']:.0f} | "
                     f"{r['fallbacks']} |")
    lines += [
        "",
        f"- requests/s, portlease ÷ portpicker: {ratio:.2f} × (target ≥ 2) — "
        f"{'met' if ratio >= 2 else 'NOT met'}",
        f"- p99, portlease ÷ portpicker: {s['p99_ms'] / p['p99_ms']:.2f} (target ≤ 1) — "
        f"{'met' if s['p99_ms'] <= p['p99_ms'] else 'NOT met'}",
        f"- refused requests: portlease {s['fallbacks']}, portpicker {p['fallbacks']}",
        "",
        "CPU is counted from /proc (the server) and os.times() (the clients) while the round "
        "runs. The clients' own cost is small: no server could go above cores ÷ clients' CPU per "
        f"request, {os.cpu_count() / (s['clients_cpu_us_per_request'] / 1e6):.0f} requests/s here. "
        "What bounds portlease is its serving thread: each transaction reads "
        f"`port_registry.json`, which holds up to {o['clients'] * o['requests']} leases by the end "
        "of a round (parsing it only where its bytes differ from those the transaction before "
        "left), checks the ports it hands out by binding them, and rewrites the file; it is "
        "shared by the requests that arrive while the one before runs.",
        "",
        "Per round: " + "; ".join(
            f"{name} " + ", ".join(f"{r['requests_per_s']:.0f}/s p99 {r['p99_ms']:.2f}" for r in data["rounds"][key])
            for key, name in [("portpicker", "portpicker"), ("portlease", "portlease")]),
        END,
    ]
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = "\n".join(lines)
    if START in text and END in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    (ROOT / "bench" / "serve_results.json").write_text(json.dumps(data, indent=1) + "\n")
    print("wrote BENCHMARKS.md and bench/serve_results.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--pool", default="15000-24999")
    ap.add_argument("--portlease", help="the binary [default: cargo build --release]")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--from", dest="source", help="write the report again from saved results")
    o = ap.parse_args()
    if o.source:
        write_report(json.loads(pathlib.Path(o.source).read_text()))
        return
    if os.geteuid() == 0 and not os.environ.get("PORTLEASE_BENCH_NETNS") and shutil.which("unshare"):
        os.environ["PORTLEASE_BENCH_NETNS"] = "1"
        script = "ip link set lo up && exec \"$0\" \"$@\""
        os.execvp("unshare", ["unshare", "-n", "--", "sh", "-c", script, sys.executable, *sys.argv])
    portserver = ensure_portpicker()
    binary = o.portlease
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = str(ROOT / "target" / "release" / "portlease")
    rounds = {"portpicker": [], "portlease": []}
    for i in range(o.rounds):
        order = ["portpicker", "portlease"] if i % 2 == 0 else ["portlease", "portpicker"]
        for name in order:
            address = f"@portlease-bench-{os.getpid()}-{name}-{i}"
            if name == "portpicker":
                cmd = [sys.executable, str(portserver), f"--portserver_static_pool={o.pool}",
                       f"--portserver_address={address}"]
            else:
                regdir = tempfile.mkdtemp(prefix="plserve-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
                cmd = [binary, "--dir", regdir, "serve", f"--portserver_static_pool={o.pool}",
                       f"--portserver_address={address}"]
            result = one_round(cmd, address, o.clients, o.requests, name)
            if name == "portlease":
                shutil.rmtree(regdir, ignore_errors=True)
            rounds[name].append(result)
            print(f"round {i + 1} {name}: {result['requests_per_s']:.0f} requests/s, p50 "
                  f"{result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, refused {result['fallbacks']}",
                  flush=True)
    data = {"date": datetime.date.today().isoformat(), "machine": machine(), "options": vars(o),
            "rounds": rounds, "portpicker": median_of(rounds["portpicker"]),
            "portlease": median_of(rounds["portlease"])}
    p, s = data["portpicker"], data["portlease"]
    print(f"medians: portpicker {p['requests_per_s']:.0f}/s p99 {p['p99_ms']:.2f} ms; portlease "
          f"{s['requests_per_s']:.0f}/s p99 {s['p99_ms']:.2f} ms; ratio {s['requests_per_s'] / p['requests_per_s']:.2f} ×")
    for name in ("portpicker", "portlease"):
        print(name, {k: round(v, 2) for k, v in data[name].items()})
    if o.write:
        write_report(data)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Run portlease's contention harness, the seed's stress script and the syscall floor
side by side, for 1-32 processes, on tmpfs and on the disk; write BENCHMARKS.md and
bench/chart.png.

usage: python3 bench/compare.py [--shared ../shared] [--repeat 3] [--quick] [--baseline BIN]
       python3 bench/compare.py --from bench/results.json   (report and chart again)

--baseline BIN runs another build of the contention harness (say, of an earlier commit:
`git worktree add /tmp/base REV && cargo build --release --example contention` there)
beside this one at every process count, and reports this build's throughput against it.

Needs cargo, gcc, python3 and matplotlib (python3 -m pip install matplotlib). Each
figure is the median of --repeat runs; a fresh registry directory is used for every run.
"""
import argparse, datetime, json, os, pathlib, platform, shutil, statistics, subprocess, sys, tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROCS = [1, 2, 4, 8, 16, 32]
PLACES = {"tmpfs": "/dev/shm", "disk": "/tmp"}


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def median_run(make_cmd, place, repeat):
    """Runs make_cmd(dir) `repeat` times in fresh dirs; the run with the median throughput."""
    results = []
    for _ in range(repeat):
        d = tempfile.mkdtemp(prefix="plbench-", dir=place)
        try:
            results.append(run_json(make_cmd(d)))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    results.sort(key=lambda r: r["cycles_per_s"])
    return results[len(results) // 2]


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    mem = next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    return (f"{os.cpu_count()} cores ({model}), {int(mem) // 1024 // 1024} GiB, Linux {platform.release()}, "
            f"{rustc}, Python {platform.python_version()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer cycles, for a smoke run")
    ap.add_argument("--from", dest="source", help="write the report and chart from saved results")
    ap.add_argument("--baseline", help="another build of the contention harness to run beside this one")
    o = ap.parse_args()
    if o.source:
        saved = json.loads(pathlib.Path(o.source).read_text())
        write_report(saved["rows"], saved["command"], saved["machine"], saved["date"], saved.get("repeat", 3))
        draw_chart(saved["rows"])
        return
    shared = pathlib.Path(o.shared)
    seed_stress = shared / "bench" / "seed_stress.py"
    floor_c = shared / "bench" / "floor.c"
    if not seed_stress.exists() or not floor_c.exists():
        sys.exit(f"bench/compare.py: the yardsticks are missing under {shared}/bench; pass --shared DIR")

    subprocess.run(["cargo", "build", "--release", "--example", "contention"], cwd=ROOT, check=True)
    harness = ROOT / "target" / "release" / "examples" / "contention"
    floor = ROOT / "target" / "floor"
    subprocess.run(["gcc", "-O2", "-o", str(floor), str(floor_c)], check=True)

    scale = 0.2 if o.quick else 1.0
    rows = {}
    for name, place in PLACES.items():
        disk = name == "disk"
        floor_iters = int((4000 if disk else 20000) * scale)
        rows[name] = {"floor": median_run(lambda d: [str(floor), str(floor_iters), d], place, o.repeat), "procs": []}
        for procs in PROCS:
            total = int((3000 if disk else 12000) * scale)
            cycles = max(20, total // procs)
            ours = median_run(lambda d: [str(harness), "--dir", d, "--procs", str(procs), "--cycles", str(cycles)],
                              place, o.repeat)
            seed_total = int((1500 if disk else 3000) * scale) if procs == 1 else int(640 * scale)
            seed_iters = max(10, seed_total // procs)
            seed = median_run(lambda d: ["python3", str(seed_stress), str(procs), str(seed_iters), "--dir", d],
                              place, o.repeat)
            rows[name]["procs"].append((procs, ours, seed))
            if o.baseline:
                base = median_run(lambda d: [o.baseline, "--dir", d, "--procs", str(procs), "--cycles", str(cycles)],
                                  place, o.repeat)
                rows[name].setdefault("baseline", []).append((procs, base))
                print(f"{name} {procs:>2} procs: baseline {base['cycles_per_s']:>8.0f}/s p99 {base['p99_ms']:>7.2f} ms",
                      flush=True)
            print(f"{name} {procs:>2} procs: portlease {ours['cycles_per_s']:>8.0f}/s p99 {ours['p99_ms']:>7.2f} ms"
                  f" | seed {seed['cycles_per_s']:>6.0f}/s p99 {seed['p99_ms']:>7.2f} ms", flush=True)

    command = ("python3 bench/compare.py" + (f" --repeat {o.repeat}" if o.repeat != 3 else "")
               + (" --quick" if o.quick else "") + (f" --baseline {o.baseline}" if o.baseline else ""))
    saved = {"rows": rows, "command": command, "machine": machine(), "date": datetime.date.today().isoformat(),
             "repeat": o.repeat}
    (ROOT / "bench" / "results.json").write_text(json.dumps(saved, indent=1) + "\n")
    write_report(rows, command, saved["machine"], saved["date"], o.repeat)
    draw_chart(rows)


def verdict(ok):
    return "met" if ok else "**not met**"


def write_report(rows, command, machine_text, today, repeat):
    lines = [
        "# Benchmarks",
        "",
        f"Measured {today} on {machine_text}, by `{command}` (generated; do not edit by hand;",
        "the raw figures are in `bench/results.json`).",
        f"Each figure is the median of {repeat} runs (by throughput), each in a fresh registry directory.",
        "A cycle is allocate + release of one port; latency is the time of both in one cycle.",
        "portlease: `cargo run --release --example contention -- --dir DIR --procs N --cycles K`;",
        "the seed: `python3 ../shared/bench/seed_stress.py N K --dir DIR`;",
        "the floor: `../shared/bench/floor.c` (lock, read, bind-check, write, rename, unlock; no parsing), 1 process.",
        "",
        "![throughput and p99 against process count](bench/chart.png)",
        "",
    ]
    for name, data in rows.items():
        fl = data["floor"]
        lines += [f"## {name} ({PLACES[name]})", "",
                  f"Floor, 1 process: {fl['cycles_per_s']:.0f} cycles/s ({fl['us_per_cycle']} µs per cycle).", "",
                  "| procs | portlease cycles/s | p50 ms | p99 ms | max ms | overlaps | seed cycles/s | seed p99 ms | seed max ms | throughput × seed | p99 ÷ seed |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for procs, ours, seed in data["procs"]:
            lines.append(
                f"| {procs} | {ours['cycles_per_s']:.0f} | {ours['p50_ms']:.3f} | {ours['p99_ms']:.3f} | {ours['max_ms']:.3f} | "
                f"{ours['overlaps'] + seed['overlaps']} | {seed['cycles_per_s']:.0f} | {seed['p99_ms']:.3f} | {seed['max_ms']:.3f} | "
                f"{ours['cycles_per_s'] / seed['cycles_per_s']:.1f} | {ours['p99_ms'] / seed['p99_ms']:.4f} |")
        by = {p: (o, s) for p, o, s in data["procs"]}
        o16, s16 = by[16]
        one, thirty_two = by[1][0], by[32][0]
        overlaps = sum(o["overlaps"] for _, o, _ in data["procs"])
        lines += ["", "Targets (ratios within this run):", "",
                  f"- 16 processes, throughput ≥ 20 × the seed's: {o16['cycles_per_s'] / s16['cycles_per_s']:.1f} × — "
                  f"{verdict(o16['cycles_per_s'] >= 20 * s16['cycles_per_s'])}",
                  f"- 16 processes, p99 ≤ 1/50 of the seed's: 1/{s16['p99_ms'] / o16['p99_ms']:.0f} — "
                  f"{verdict(o16['p99_ms'] * 50 <= s16['p99_ms'])}",
                  f"- 1 process, throughput ≥ 2/3 of the floor's: {one['cycles_per_s'] / fl['cycles_per_s']:.2f} — "
                  f"{verdict(one['cycles_per_s'] * 3 >= fl['cycles_per_s'] * 2)}",
                  f"- 32 processes ≥ 0.5 × 1 process: {thirty_two['cycles_per_s'] / one['cycles_per_s']:.2f} — "
                  f"{verdict(thirty_two['cycles_per_s'] * 2 >= one['cycles_per_s'])}",
                  f"- overlaps at every process count: {overlaps} — {verdict(overlaps == 0)}", ""]
        if data.get("baseline"):
            base = dict(data["baseline"])
            lines += ["Against the baseline build (`--baseline`), run beside this one at every count:", "",
                      "| procs | this build cycles/s | baseline cycles/s | ratio | this build p99 ms | baseline p99 ms | overlaps |",
                      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
            for procs, ours, _ in data["procs"]:
                b = base[procs]
                lines.append(f"| {procs} | {ours['cycles_per_s']:.0f} | {b['cycles_per_s']:.0f} | "
                             f"{ours['cycles_per_s'] / b['cycles_per_s']:.2f} | {ours['p99_ms']:.3f} | {b['p99_ms']:.3f} | "
                             f"{ours['overlaps'] + b['overlaps']} |")
            lines.append("")
        worse = [p for p, o, s in data["procs"] if o["p99_ms"] > s["p99_ms"]]
        if worse:
            lines += [f"Where portlease's p99 is above the seed's ({', '.join(map(str, worse))} processes), the "
                      "seed's lock is seldom contended yet; its max column shows what its 100 ms poll costs "
                      "once it is.", ""]
    # The Python section is bench/python_aidb.py's: kept as it is.
    old = (ROOT / "BENCHMARKS.md").read_text() if (ROOT / "BENCHMARKS.md").exists() else ""
    marker = "<!-- python-bench: begin -->"
    if marker in old:
        lines += [marker + old.split(marker, 1)[1].rstrip("\n"), ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print("wrote BENCHMARKS.md")


def draw_chart(rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing (python3 -m pip install matplotlib): no chart drawn", file=sys.stderr)
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"tmpfs": "-", "disk": "--"}
    for name, data in rows.items():
        procs = [p for p, _, _ in data["procs"]]
        for who, idx, color in (("portlease", 1, "tab:blue"), ("seed", 2, "tab:red")):
            runs = [r[idx] for r in data["procs"]]
            left.plot(procs, [r["cycles_per_s"] for r in runs], styles[name], color=color, marker="o", label=f"{who}, {name}")
            right.plot(procs, [r["p99_ms"] for r in runs], styles[name], color=color, marker="o", label=f"{who}, {name}")
        left.axhline(data["floor"]["cycles_per_s"], linestyle=styles[name], color="gray", linewidth=1,
                     label=f"floor (1 process), {name}")
    for ax, title, unit in ((left, "Throughput", "cycles/s"), (right, "p99 latency of a cycle", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(PROCS, [str(p) for p in PROCS])
        ax.set_xlabel("processes")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ROOT / "bench" / "chart.png", dpi=110)
    print("wrote bench/chart.png")


if __name__ == "__main__":
    main()

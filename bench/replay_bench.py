"""Replay benchmark: `espresso replay` against the straightforward Bytewax baseline.

    python bench/replay_bench.py                 # 1.5M events, 100k contacts, 3 weeks
    python bench/replay_bench.py --quick         # smoke run, a few seconds
    python bench/replay_bench.py --skip-baseline --espresso-cmd .venv/bin/espresso

In one run: generate the event stream (or reuse it from `bench/data/`, cached by its
parameters), then run each system in a fresh subprocess, first on a tiny stream
(~1k events, ~100 contacts) and then on the full stream, and measure wall time, CPU time
and peak resident memory of each child. See bench/README.md for what is measured.
Prints a Markdown table and writes `bench/results/replay-<UTC timestamp>.json`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Measured, count_lines, machine_info, run_measured  # noqa: E402
from generate import DEFAULTS, GEN_VERSION  # noqa: E402

BENCH = REPO / "bench"
QUICK = {"contacts": 2_000, "events": 30_000, "days": 7.0}
TINY = {"contacts": 100, "events": 1_000}


_SIZE = ("contacts", "events", "days")


def add_stream_arguments(p: argparse.ArgumentParser, sizes: dict | None = None) -> None:
    """The generated stream's options, shared by the benchmarks that read it (`sizes`: other
    defaults for contacts, events and days)."""
    d = {**DEFAULTS, **(sizes or {})}
    p.add_argument("--contacts", type=int, default=None, help=f"default {d['contacts']:,}")
    p.add_argument("--events", type=int, default=None, help=f"distinct valid events (default {d['events']:,})")
    p.add_argument("--days", type=float, default=None, help=f"default {d['days']:g}")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--start", default=DEFAULTS["start"])
    p.add_argument("--dup-rate", type=float, default=DEFAULTS["dup_rate"])
    p.add_argument("--invalid-rate", type=float, default=DEFAULTS["invalid_rate"])
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['contacts']:,} contacts, {QUICK['events']:,} events, {QUICK['days']:g} days")


def stream_params(a: argparse.Namespace, sizes: dict | None = None) -> dict:
    """The `generate.py` parameters of those options: --quick, else `sizes`/DEFAULTS, then explicit sizes."""
    size = dict(QUICK) if a.quick else {k: {**DEFAULTS, **(sizes or {})}[k] for k in _SIZE}
    for k in _SIZE:
        if getattr(a, k) is not None:
            size[k] = getattr(a, k)
    return {**size, "seed": a.seed, "start": a.start, "dup_rate": a.dup_rate, "invalid_rate": a.invalid_rate}


def dataset(data_dir: Path, params: dict, regenerate: bool = False) -> tuple[Path, dict]:
    """The JSONL stream for `params` and its metadata, generated once and cached by parameters."""
    start = params["start"].replace(":", "").replace("-", "")
    name = (f"events-c{params['contacts']}-e{params['events']}-d{params['days']:g}-s{params['seed']}-{start}"
            f"-dup{params['dup_rate']:g}-inv{params['invalid_rate']:g}-g{GEN_VERSION}.jsonl")
    path = data_dir / name
    meta_path = path.with_name(path.name + ".meta.json")
    if path.exists() and meta_path.exists() and not regenerate:
        meta = orjson.loads(meta_path.read_bytes())
        meta["cached"] = True
        return path, meta
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    # In a child process, so the harness stays small (and its speed is measured alone).
    cmd = [sys.executable, str(BENCH / "generate.py"), "--out", str(path), "--meta"]
    for k, v in params.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    m = run_measured(cmd, cwd=REPO, stderr_path=data_dir / "generate.stderr")
    if m.returncode != 0:
        raise SystemExit(f"generate failed:\n{m.stderr_tail}")
    meta = orjson.loads(meta_path.read_bytes())
    meta["generator_peak_rss"] = m.peak_rss
    meta_path.write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    print(f"  {meta['lines']:,} lines in {meta['seconds']:.1f} s "
          f"({meta['lines'] / meta['seconds']:,.0f} lines/s)", file=sys.stderr, flush=True)
    meta["cached"] = False
    return path, meta


def warm_cache(path: Path) -> None:
    """Read the file once so no system pays the first read from disk."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def wait_idle(max_s: float) -> None:
    if max_s <= 0:
        return
    limit = 0.5 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    deadline = time.time() + max_s
    while os.getloadavg()[0] > limit and time.time() < deadline:
        time.sleep(5)
    if os.getloadavg()[0] > limit:
        print(f"  still busy after {max_s:g} s (load {os.getloadavg()[0]:.2f}); measuring anyway",
              file=sys.stderr, flush=True)


def run_system(name: str, cmd_for, events: Path, until: str, out_dir: Path, label: str, env: dict,
               idle_s: float = 0) -> tuple[Measured, Path]:
    out = out_dir / f"{name}-{label}.changes.jsonl"
    dead = out_dir / f"{name}-{label}.changes.dead-letters.jsonl"
    for p in (out, dead):
        p.unlink(missing_ok=True)
    cmd = cmd_for(events, until, out)
    wait_idle(idle_s)
    print(f"  {name} ({label}): {shlex.join(cmd)}  [load {os.getloadavg()[0]:.2f}]", file=sys.stderr, flush=True)
    m = run_measured(cmd, cwd=REPO, env=env, stdout_path=out_dir / f"{name}-{label}.stdout",
                     stderr_path=out_dir / f"{name}-{label}.stderr")
    if m.returncode != 0:
        print(f"  {name} ({label}) FAILED with exit code {m.returncode}:\n{m.stderr_tail}", file=sys.stderr)
    return m, out


def change_keys(path: Path) -> set[tuple]:
    keys = set()
    with open(path, "rb") as f:
        for line in f:
            r = orjson.loads(line)
            keys.add((r["contact_id"], r["segment_id"], r["direction"], r["at"]))
    return keys


def fmt_mb(b: int | None) -> str:
    return "-" if b is None else f"{b / 1e6:,.0f}"


def markdown(rows: list[dict], meta: dict) -> str:
    head = ("| system | input lines | wall s | CPU s | events/s | events/CPU-s | peak RSS MB | tiny peak RSS MB "
            "| bytes/contact | changes | dead letters |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        if r.get("failed"):
            lines.append(f"| {r['system']} | {meta['lines']:,} | failed (exit {r['full']['returncode']}) |"
                         + " |" * 8)
            continue
        lines.append(
            f"| {r['system']} | {meta['lines']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['events_per_s']:,.0f} "
            f"| {r['events_per_cpu_s']:,.0f} | {fmt_mb(r['peak_rss'])} | {fmt_mb(r['tiny_peak_rss'])} "
            f"| {r['bytes_per_contact']:,.0f} | {r['changes']:,} | {r['dead_letters']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stream_arguments(p)
    p.add_argument("--until", help="ISO instant passed to --until (default: end of the stream + 72 h)")
    p.add_argument("--espresso-cmd", default=None,
                   help="command that runs espresso, e.g. '.venv/bin/espresso' "
                        f"(default: '{sys.executable} -m commands.cli')")
    p.add_argument("--espresso-args", default="", help="extra arguments appended to `espresso replay ...`")
    p.add_argument("--baseline-args", default="", help="extra arguments for bench/baseline_flow.py")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--skip-espresso", action="store_true")
    p.add_argument("--no-compare", action="store_true", help="do not compare the two systems' changes")
    p.add_argument("--repeat", type=int, default=1, help="full-stream runs per system; the fastest is reported")
    p.add_argument("--regenerate", action="store_true", help="regenerate the stream even if cached")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="before each measured run, wait up to SECONDS for the 1-min load average to drop "
                        "below 0.5 per core (shared machines)")
    p.add_argument("--data-dir", type=Path, default=BENCH / "data")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument("--keep-outputs", action="store_true", help="keep the changes files under DATA_DIR/out/")
    a = p.parse_args(argv)

    params = stream_params(a)
    tiny_params = {**params, **TINY}

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = a.data_dir / "out" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    a.results_dir.mkdir(parents=True, exist_ok=True)

    events, meta = dataset(a.data_dir, params, a.regenerate)
    tiny, tiny_meta = dataset(a.data_dir, tiny_params, a.regenerate)
    until = a.until or meta["until"]
    tiny_until = a.until or tiny_meta["until"]
    warm_cache(events)

    espresso_base = shlex.split(a.espresso_cmd) if a.espresso_cmd else [sys.executable, "-m", "commands.cli"]
    systems = []
    if not a.skip_espresso:
        systems.append(("espresso", lambda ev, u, out: [*espresso_base, "replay", str(ev), "--until", u,
                                                        "--out", str(out), *shlex.split(a.espresso_args)]))
    if not a.skip_baseline:
        systems.append(("baseline", lambda ev, u, out: [sys.executable, str(BENCH / "baseline_flow.py"), str(ev),
                                                        "--until", u, "--out", str(out),
                                                        *shlex.split(a.baseline_args)]))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    info = machine_info()
    rows, outputs = [], {}
    started = time.time()
    for name, cmd_for in systems:
        print(f"{name}:", file=sys.stderr, flush=True)
        tiny_m, _ = run_system(name, cmd_for, tiny, tiny_until, out_dir, "tiny", env, a.wait_idle)
        runs = []
        for i in range(max(1, a.repeat) if tiny_m.returncode == 0 else 0):
            m, out = run_system(name, cmd_for, events, until, out_dir, "full" if a.repeat == 1 else f"full{i + 1}", env,
                                a.wait_idle)
            runs.append((m, out))
            if m.returncode != 0:
                break
        if not runs:
            rows.append({"system": name, "command": tiny_m.cmd, "tiny": tiny_m.record(), "full": tiny_m.record(),
                         "all_full_runs": [], "failed": True})
            continue
        m, out = min(runs, key=lambda r: (r[0].returncode != 0, r[0].wall_s))
        row: dict = {"system": name, "command": m.cmd, "tiny": tiny_m.record(), "full": m.record(),
                     "all_full_runs": [r[0].record() for r in runs]}
        if m.returncode != 0:
            row["failed"] = True
            rows.append(row)
            continue
        lines, tiny_lines = meta["lines"], tiny_meta["lines"]
        dead = out.with_name(out.stem + ".dead-letters.jsonl")
        row.update({
            "wall_s": m.wall_s,
            "cpu_s": round(m.cpu_s, 3),
            "events_per_s": round(lines / m.wall_s, 1),
            "events_per_cpu_s": round(lines / m.cpu_s, 1) if m.cpu_s else None,
            "marginal_events_per_s": (round((lines - tiny_lines) / (m.wall_s - tiny_m.wall_s), 1)
                                      if m.wall_s > tiny_m.wall_s else None),
            "peak_rss": m.peak_rss,
            "tiny_peak_rss": tiny_m.peak_rss,
            "bytes_per_contact": round((m.peak_rss - tiny_m.peak_rss) / meta["contacts"], 1),
            "changes": count_lines(out),
            "dead_letters": count_lines(dead),
            "tiny_changes": count_lines(out_dir / f"{name}-tiny.changes.jsonl"),
        })
        rows.append(row)
        outputs[name] = out

    comparison = None
    if len(outputs) == 2 and not a.no_compare:
        ka, kb = (change_keys(outputs[n]) for n in ("espresso", "baseline"))
        comparison = {"key": ["contact_id", "segment_id", "direction", "at"], "espresso": len(ka),
                      "baseline": len(kb), "only_espresso": len(ka - kb), "only_baseline": len(kb - ka),
                      "examples_only_espresso": sorted(ka - kb)[:5], "examples_only_baseline": sorted(kb - ka)[:5]}

    info["loadavg_after"] = os.getloadavg()
    result = {
        "benchmark": "replay",
        "timestamp": stamp,
        "command_line": [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv],
        "duration_s": round(time.time() - started, 1),
        "machine": info,
        "until": until,
        "dataset": {"path": str(events), **meta},
        "tiny_dataset": {"path": str(tiny), **tiny_meta},
        "systems": rows,
        "comparison": comparison,
        "notes": {
            "events_per_s": "input lines (valid + duplicate + invalid) / wall seconds of the child process, "
                            "interpreter start-up and imports included",
            "events_per_cpu_s": "input lines / (user + sys CPU seconds of the child); less sensitive to other load",
            "bytes_per_contact": "(peak RSS on the full stream - peak RSS on the tiny stream) / distinct contacts",
            "peak_rss": "max(ru_maxrss of the command via wait4 in a small launcher, its VmHWM and the RSS sum "
                        "of its process tree polled every 50 ms)",
        },
    }
    res_path = a.results_dir / f"replay-{stamp}.json"
    res_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))

    print()
    print(f"Replay of {meta['lines']:,} lines ({meta['valid_events']:,} events, {meta['duplicate_lines']:,} duplicates, "
          f"{meta['invalid_lines']:,} invalid) for {meta['contacts']:,} contacts over {params['days']:g} days, "
          f"--until {until}")
    print(f"Machine: {info['cpu_model']}, {info['logical_cores']} logical cores, {info['ram_gib']} GiB RAM, "
          f"Python {info['python']}; load average before {info['loadavg'][0]:.2f}, after {info['loadavg_after'][0]:.2f}")
    print()
    print(markdown(rows, meta))
    if comparison:
        same = comparison["only_espresso"] == 0 and comparison["only_baseline"] == 0
        print(f"\nChanges (contact, segment, direction, at): "
              f"{'identical' if same else 'DIFFERENT'}; only espresso {comparison['only_espresso']:,}, "
              f"only baseline {comparison['only_baseline']:,}")
    if max(info["loadavg"][0], info["loadavg_after"][0]) > 0.75 * (info["usable_cores"] or 1):
        print("\nNote: the machine was busy with other work (see load average); wall-clock figures are pessimistic, "
              "events/CPU-s is the steadier figure.")
    print(f"\nResults: {res_path}")
    failed = any(r.get("failed") for r in rows)
    if not a.keep_outputs and not failed:
        for f in out_dir.iterdir():
            f.unlink()
        out_dir.rmdir()
    else:
        print(f"Outputs: {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

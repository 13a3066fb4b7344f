"""Campaign-stage benchmark: `espresso replay` with and without `--campaigns builtin`.

    python bench/campaign_bench.py                        # 1.5M events, 100k contacts, 3 runs each
    python bench/campaign_bench.py --quick --repeat 1     # smoke run, a few seconds
    python bench/campaign_bench.py --repo /tmp/base       # a baseline checkout (its .venv if it has one)
    python bench/campaign_bench.py --espresso-cmd '/tmp/base/.venv/bin/python -m commands.cli' --repo /tmp/base

In one run, on one generated stream (cached in `bench/data/` like bench/replay_bench.py's):
(a) `espresso replay EVENTS --until UNTIL --out OUT` and (b) the same with `--campaigns
builtin` (or `--campaigns FILE`), each in a fresh subprocess, alternating a, b, a, b, ...
`--repeat` times. For each, the median wall time, CPU time, peak RSS and events/s; the
throughput ratio (b)/(a) (target >= 0.50); the lines of OUT.messages.jsonl and
OUT.decisions.jsonl of (b). UNTIL is the end of the generated period + 24 h.
Prints a Markdown table and writes `bench/results/campaigns-<UTC timestamp>.json`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Measured, count_lines, machine_info, run_measured  # noqa: E402
from replay_bench import add_stream_arguments, dataset, fmt_mb, stream_params, wait_idle, warm_cache  # noqa: E402

BENCH = REPO / "bench"
DAY_MS = 86_400_000
TARGET_RATIO = 0.50
VARIANTS = ("a", "b")  # a: no campaigns, b: with campaigns


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def git_info(path: Path) -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                                  check=False).stdout.strip()
        except OSError:
            return ""
    return {"path": str(path), "commit": git("rev-parse", "HEAD") or None,
            "dirty_files": len(git("status", "--porcelain").splitlines())}


def espresso_command(espresso_cmd: str | None, repo: Path) -> list[str]:
    """The command that runs espresso: --espresso-cmd, else `python -m commands.cli` with the
    checkout's own `.venv/bin/python` if it has one, else the harness's interpreter."""
    if espresso_cmd:
        return shlex.split(espresso_cmd)
    venv_python = repo / ".venv" / "bin" / "python"
    return [str(venv_python) if venv_python.exists() else sys.executable, "-m", "commands.cli"]


def run_variant(variant: str, cmd: list[str], repo: Path, env: dict, out: Path, label: str,
                idle_s: float) -> Measured:
    for kind in ("", ".dead-letters", ".messages", ".decisions"):
        out.with_name(f"{out.stem}{kind}.jsonl").unlink(missing_ok=True)
    wait_idle(idle_s)
    print(f"  ({variant}) {label}: {shlex.join(cmd)}  [load {os.getloadavg()[0]:.2f}]", file=sys.stderr, flush=True)
    m = run_measured(cmd, cwd=repo, env=env, stdout_path=out.with_name(f"{out.stem}.stdout"),
                     stderr_path=out.with_name(f"{out.stem}.stderr"))
    if m.returncode != 0:
        print(f"  ({variant}) {label} FAILED with exit code {m.returncode}:\n{m.stderr_tail}", file=sys.stderr)
    else:
        print(f"      {m.wall_s:.2f} s wall, {m.cpu_s:.2f} s CPU, {m.peak_rss / 1e6:,.0f} MB peak RSS",
              file=sys.stderr, flush=True)
    return m


def output_counts(out: Path) -> dict:
    return {kind: count_lines(out.with_name(f"{out.stem}{suffix}.jsonl"))
            for kind, suffix in (("changes", ""), ("dead_letters", ".dead-letters"), ("messages", ".messages"),
                                 ("decisions", ".decisions"))}


def summary(runs: list[dict], lines: int) -> dict:
    """Medians over the runs of one variant (each figure separately)."""
    wall = statistics.median(r["measured"]["wall_s"] for r in runs)
    cpu = statistics.median(r["measured"]["cpu_s"] for r in runs)
    return {
        "runs": len(runs),
        "wall_s": round(wall, 3),
        "wall_s_all": [r["measured"]["wall_s"] for r in runs],
        "cpu_s": round(cpu, 3),
        "peak_rss": int(statistics.median(r["measured"]["peak_rss"] for r in runs)),
        "events_per_s": round(lines / wall, 1),
        "events_per_cpu_s": round(lines / cpu, 1) if cpu else None,
        "outputs": runs[-1]["outputs"],
        "outputs_identical_across_runs": all(r["outputs"] == runs[0]["outputs"] for r in runs),
    }


def markdown(rows: dict, labels: dict) -> str:
    lines = ["| run | wall s (median) | wall s (all runs) | CPU s | events/s | events/CPU-s | peak RSS MB "
             "| changes | messages | decisions |", "|" + "---|" * 10]
    for v in VARIANTS:
        s = rows.get(v)
        if s is None:
            continue
        o = s["outputs"]
        lines.append(
            f"| ({v}) {labels[v]} | {s['wall_s']:.2f} | {', '.join(f'{w:.2f}' for w in s['wall_s_all'])} "
            f"| {s['cpu_s']:.2f} | {s['events_per_s']:,.0f} | {s['events_per_cpu_s'] or 0:,.0f} "
            f"| {fmt_mb(s['peak_rss'])} | {o['changes']:,} | {o['messages']:,} | {o['decisions']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stream_arguments(p)
    p.add_argument("--repeat", type=int, default=3, help="runs of each of (a) and (b), alternating; medians reported")
    p.add_argument("--until", help="ISO instant passed to --until (default: end of the generated period + 24 h)")
    p.add_argument("--campaigns", default="builtin", help="--campaigns of run (b): 'builtin' or a campaigns YAML")
    p.add_argument("--repo", type=Path, default=REPO,
                   help="checkout to measure: working directory of espresso and first on its PYTHONPATH "
                        "(default: this repository)")
    p.add_argument("--espresso-cmd", default=None,
                   help="command that runs espresso, split with shlex, e.g. '/tmp/base/.venv/bin/python -m "
                        "commands.cli'; relative paths are relative to --repo (default: REPO/.venv/bin/python "
                        f"-m commands.cli if that exists, else '{sys.executable} -m commands.cli')")
    p.add_argument("--espresso-args", default="", help="extra arguments appended to both `espresso replay ...`")
    p.add_argument("--regenerate", action="store_true", help="regenerate the stream even if cached")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="before each run, wait up to SECONDS for the 1-min load average to drop below 0.5 per core")
    p.add_argument("--data-dir", type=Path, default=BENCH / "data")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument("--keep-outputs", action="store_true", help="keep the last run's outputs under DATA_DIR/out/")
    a = p.parse_args(argv)
    if a.repeat < 1:
        p.error("--repeat must be at least 1")

    params = stream_params(a)

    repo = a.repo.resolve()
    if not (repo / "commands").is_dir() and not a.espresso_cmd:
        p.error(f"--repo {a.repo}: no commands/ package there; give an espresso checkout or --espresso-cmd")
    campaigns = a.campaigns if a.campaigns == "builtin" else str(Path(a.campaigns).resolve())
    data_dir, results_dir = a.data_dir.resolve(), a.results_dir.resolve()

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = data_dir / "out" / f"campaigns-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)

    events, meta = dataset(data_dir, params, a.regenerate)
    until = a.until or iso_ms(meta["end_ms"] + DAY_MS)
    warm_cache(events)

    base = espresso_command(a.espresso_cmd, repo)
    extra = shlex.split(a.espresso_args)
    outs = {v: out_dir / f"{v}.changes.jsonl" for v in VARIANTS}
    cmds = {"a": [*base, "replay", str(events), "--until", until, "--out", str(outs["a"]), *extra],
            "b": [*base, "replay", str(events), "--until", until, "--out", str(outs["b"]), "--campaigns", campaigns,
                  *extra]}
    labels = {"a": "no campaigns", "b": f"--campaigns {a.campaigns}"}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))

    info = machine_info()
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    failed = False
    started = time.time()
    for i in range(a.repeat):
        for v in VARIANTS:
            m = run_variant(v, cmds[v], repo, env, outs[v], f"run {i + 1}/{a.repeat}", a.wait_idle)
            runs[v].append({"measured": m.record(), "outputs": output_counts(outs[v])})
            if m.returncode != 0:
                failed = True
                break
        if failed:
            break

    lines = meta["lines"]
    rows = {v: summary([r for r in runs[v] if r["measured"]["returncode"] == 0], lines)
            for v in VARIANTS if any(r["measured"]["returncode"] == 0 for r in runs[v])}
    ratio = cpu_ratio = None
    if not failed:
        ratio = round(rows["b"]["events_per_s"] / rows["a"]["events_per_s"], 3)
        cpu_ratio = round(rows["b"]["events_per_cpu_s"] / rows["a"]["events_per_cpu_s"], 3)

    info["loadavg_after"] = os.getloadavg()
    result = {
        "benchmark": "campaigns",
        "timestamp": stamp,
        "command_line": [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv],
        "duration_s": round(time.time() - started, 1),
        "machine": info,
        "espresso_repo": git_info(repo),
        "until": until,
        "campaigns": campaigns,
        "dataset": {"path": str(events), **meta},
        "commands": cmds,
        "repeat": a.repeat,
        "results": rows,
        "throughput_ratio": ratio,
        "cpu_throughput_ratio": cpu_ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": None if ratio is None else ratio >= TARGET_RATIO,
        "failed": failed,
        "runs": runs,
        "notes": {
            "order": "runs alternate a, b, a, b, ...; each in a fresh subprocess (bench/common.py run_measured)",
            "medians": "each figure is the median over the runs of that variant, taken separately",
            "events_per_s": "input lines (valid + duplicate + invalid) / median wall seconds of the child, "
                            "interpreter start-up and imports included",
            "throughput_ratio": "events/s of (b) / events/s of (a) = median wall (a) / median wall (b)",
            "cpu_throughput_ratio": "the same with CPU seconds; steadier on a busy machine",
            "until": "end of the generated period (start + days) + 24 h unless --until is given",
            "peak_rss": "as in the replay bench: max of ru_maxrss via wait4 in a small launcher, VmHWM and the "
                        "polled RSS sum of the process tree",
        },
    }
    res_path = results_dir / f"campaigns-{stamp}.json"
    res_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))

    print()
    print(f"Campaign stage: replay of {lines:,} lines ({meta['valid_events']:,} events, "
          f"{meta['duplicate_lines']:,} duplicates, {meta['invalid_lines']:,} invalid) for {meta['contacts']:,} "
          f"contacts over {params['days']:g} days, --until {until}, median of {a.repeat} run(s) each, alternating")
    print(f"espresso: {shlex.join(base)} (cwd {repo}, commit {(result['espresso_repo']['commit'] or '?')[:7]}"
          f"{' + working tree' if result['espresso_repo']['dirty_files'] else ''})")
    print(f"Machine: {info['cpu_model']}, {info['logical_cores']} logical cores, {info['ram_gib']} GiB RAM, "
          f"Python {info['python']}; load average before {info['loadavg'][0]:.2f}, after {info['loadavg_after'][0]:.2f}")
    print()
    print(markdown(rows, labels))
    if ratio is not None:
        print(f"\nThroughput ratio (b)/(a): {ratio:.2f} (target >= {TARGET_RATIO:.2f}: "
              f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}); by CPU time {cpu_ratio:.2f}")
        if not rows["b"]["outputs_identical_across_runs"] or not rows["a"]["outputs_identical_across_runs"]:
            print("WARNING: the output line counts differ between runs of the same variant")
    if max(info["loadavg"][0], info["loadavg_after"][0]) > 0.75 * (info["usable_cores"] or 1):
        print("\nNote: the machine was busy with other work (see load average); wall-clock figures are pessimistic, "
              "events/CPU-s is the steadier figure.")
    print(f"\nResults: {res_path}")
    if failed:
        print("A run failed; see its stderr above.")
    if not a.keep_outputs and not failed:
        for f in out_dir.iterdir():
            f.unlink()
        out_dir.rmdir()
    else:
        print(f"Outputs: {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

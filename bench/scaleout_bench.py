"""Scale-out (issue 16): one `espresso run` process vs two processes of one Bytewax cluster on
the same input topic. Same changes? Throughput of each process while the other runs?

    python bench/scaleout_bench.py                 # 300k events, 20k contacts, 4 partitions, 3 rounds
    python bench/scaleout_bench.py --quick         # 30k events, 1 round (a smoke test)
    KAFKA_BOOTSTRAP_SERVERS=host:9092 python bench/scaleout_bench.py   # an existing Kafka

Broker: the embedded tansu broker (`connectors.embedded_broker.EmbeddedBroker`, memory
storage, loopback) unless KAFKA_BOOTSTRAP_SERVERS is set. A generated stream
(`bench/generate.py`) is produced once, keyed by contact_id, to a fresh input topic of
`--partitions` partitions (the partition of every record is taken from its delivery report).
Then, `--rounds` times, alternating so that a change of machine load hits both alike:

  (a) one process:  espresso run --stop-at-end -w 1
  (b) two processes of one cluster, started together, as the StatefulSet runs them:
      espresso run --stop-at-end -w 1 --process-id 0|1 --addresses 127.0.0.1:P0;127.0.0.1:P1

each reading the whole input topic into fresh output and dead-letter topics. Bytewax deals
the input partitions out over the cluster's workers (each process reads its share, from its
`reading TOPIC[N]` log lines) and the shards (partition x --shards-per-partition keys) too:
a process also processes shards of partitions the other one reads, so "per process" below is
the input it read and the CPU it spent, not an exclusive share of the work.

Figures per run: wall time (start to exit, start-up and shutdown included; for (b) the
cluster's: both started -> both exited) and each process's own; CPU seconds (user + sys, from
wait4) of each process; events/s total = N / wall and = N / processing span (first -> last
`processed_at` on the output topic, start-up excluded); per process: events of the partitions
it read / its wall, and / its CPU seconds; the machine's load average (`uptime`) before and
after. The same commands on an empty topic give the fixed start-up + shutdown cost, and
marginal events/s = N / (wall - empty wall). Checks: the set of change_ids written by (b)
equals the set of (a) (exit code 1 otherwise). Ratios (b)/(a) use the median of the rounds.

Writes bench/results/scaleout-<UTC stamp>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from bench.broker_floor import produce  # noqa: E402
from bench.common import machine_info  # noqa: E402
from bench.generate import generate  # noqa: E402
from bench.kafka_bench import create_topics, espresso_cmd, read_values, start_broker  # noqa: E402
from connectors.embedded_broker import free_port  # noqa: E402
from state.timeutil import parse_ts  # noqa: E402

RESULTS = REPO / "bench" / "results"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- Kafka ------------------------------------------------------------------------------------
def produce_stream(bootstrap: str, topic: str, lines: list[bytes]) -> tuple[float, dict[int, int], dict[str, int]]:
    """Produce every line keyed by its contact_id; (seconds, {partition: records}, {contact: partition})."""
    per_part: dict[int, int] = {}
    where: dict[str, int] = {}
    failed: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            failed.append(str(err))
        else:
            per_part[msg.partition()] = per_part.get(msg.partition(), 0) + 1
            if msg.key() is not None:
                where[msg.key().decode()] = msg.partition()

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000, "acks": "all",
                  "queue.buffering.max.messages": 1_000_000})
    t0 = time.perf_counter()
    for line in lines:
        try:
            obj = orjson.loads(line)
            key = obj.get("contact_id") if isinstance(obj, dict) else None
        except orjson.JSONDecodeError:
            key = None
        produce(p, topic, line, key.encode() if isinstance(key, str) else None, on_delivery=on_delivery)
        p.poll(0)
    assert p.flush(120) == 0, "records not acknowledged"
    assert not failed, failed[:3]
    return time.perf_counter() - t0, dict(sorted(per_part.items())), where


# -- processes ----------------------------------------------------------------------------------
def run_cmd(bootstrap: str, topics: tuple[str, str, str], *extra: str) -> list[str]:
    return espresso_cmd(bootstrap, topics, "--stop-at-end", "--metrics-port", "-1", "-w", "1", *extra)


def run_together(cmds: list[list[str]], logs: list[Path], timeout: float = 1800) -> dict:
    """Start every command at once, wait for all; wall and CPU (wait4 rusage) of each."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for k in ("KAFKA_BOOTSTRAP_SERVERS", "BYTEWAX_PROCESS_ID", "BYTEWAX_ADDRESSES", "BYTEWAX_POD_NAME",
              "BYTEWAX_STATEFULSET_NAME", "BYTEWAX_HOSTFILE_PATH", "BYTEWAX_WORKERS_PER_PROCESS"):
        env.pop(k, None)
    load_before = loadavg()
    files = [open(log, "wb") for log in logs]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
             for cmd, f in zip(cmds, files)]
    pending = {p.pid: i for i, p in enumerate(procs)}
    out: list[dict | None] = [None] * len(procs)
    deadline = time.monotonic() + timeout
    try:
        while pending:
            for pid, i in list(pending.items()):
                wpid, status, ru = os.wait4(pid, os.WNOHANG)
                if wpid == 0:
                    continue
                del pending[pid]
                out[i] = {"wall_s": round(time.perf_counter() - t0, 3), "user_s": round(ru.ru_utime, 3),
                          "sys_s": round(ru.ru_stime, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
                          "peak_rss_mib": round(ru.ru_maxrss / 1024, 1),
                          "returncode": os.waitstatus_to_exitcode(status)}
                procs[i].returncode = out[i]["returncode"]  # reaped here, not by Popen
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out after {timeout}s; logs: {', '.join(map(str, logs))}")
            time.sleep(0.02)
    finally:
        for pid in pending:  # only on a timeout or an interrupt: our own children
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
        for f in files:
            f.close()
    wall = time.perf_counter() - t0
    for i, o in enumerate(out):
        if o["returncode"] != 0:
            raise SystemExit(f"{' '.join(cmds[i])} exited with {o['returncode']}; log: {logs[i]}\n"
                             f"{logs[i].read_text(errors='replace')[-3000:]}")
    return {"wall_s": round(wall, 3), "procs": out, "load_before": load_before, "load_after": loadavg()}


def partitions_read(log: Path, topic: str) -> list[int]:
    """Input partitions a process read, from its `reading TOPIC[N] from ...` lines."""
    parts = set()
    needle = f"reading {topic}["
    for line in log.read_text(errors="replace").splitlines():
        i = line.find(needle)
        if i >= 0:
            parts.add(int(line[i + len(needle):].split("]", 1)[0]))
    return sorted(parts)


# -- one configuration --------------------------------------------------------------------------
def addresses(n: int) -> str:
    return ";".join(f"127.0.0.1:{free_port()}" for _ in range(n))


def commands(bootstrap: str, topics: tuple[str, str, str], procs: int, extra: list[str]) -> list[list[str]]:
    if procs == 1:
        return [run_cmd(bootstrap, topics, *extra)]
    addr = addresses(procs)
    return [run_cmd(bootstrap, topics, "--process-id", str(i), "--addresses", addr, *extra) for i in range(procs)]


def fresh_outputs(bootstrap: str, tag: str, partitions: int) -> tuple[str, str]:
    stamp = uuid.uuid4().hex[:6]
    out = (f"scaleout-{tag}-{stamp}-changes", f"scaleout-{tag}-{stamp}-dlq")
    create_topics(bootstrap, {out[0]: partitions, out[1]: 1})
    return out


def measure(bootstrap: str, src: str, per_part: dict[int, int], where: dict[str, int], n: int, procs: int,
            partitions: int, workdir: Path, tag: str, extra: list[str]) -> dict:
    outs = fresh_outputs(bootstrap, tag, partitions)
    topics = (src, *outs)
    logs = [workdir / f"{tag}-p{i}.log" for i in range(procs)]
    print(f"  {tag}: {procs} process(es), load {loadavg()[0]:.2f} ...", flush=True)
    m = run_together(commands(bootstrap, topics, procs, extra), logs)
    values = read_values(bootstrap, outs[0])
    dead = read_values(bootstrap, outs[1])
    recs = [orjson.loads(v) for v in values]
    ids = [r["change_id"] for r in recs]
    stamps = [parse_ts(r["processed_at"]) for r in recs]
    span = (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else 0.0
    cpu = sum(p["cpu_s"] for p in m["procs"])
    for i, p in enumerate(m["procs"]):
        p["partitions"] = partitions_read(logs[i], src)
        p["events_read"] = sum(per_part.get(k, 0) for k in p["partitions"])
        p["events_per_s"] = round(p["events_read"] / p["wall_s"]) if p["wall_s"] else None
        p["events_per_cpu_s"] = round(p["events_read"] / p["cpu_s"]) if p["cpu_s"] else None
        # First -> last processed_at of the changes of the contacts of the partitions it read
        # (their shards may run in either process: the pace of its input through the cluster).
        own = set(p["partitions"])
        mine = [t for r, t in zip(recs, stamps) if where.get(r["contact_id"]) in own]
        p_span = (max(mine) - min(mine)) / 1000 if len(mine) > 1 else 0.0
        p["processing_span_s"] = round(p_span, 3)
        p["events_per_s_processing"] = round(p["events_read"] / p_span) if p_span > 0 else None
    return {"tag": tag, "processes": procs, **m, "cpu_s": round(cpu, 3), "changes": len(ids),
            "distinct_change_ids": len(set(ids)), "dead_letters": len(dead), "processing_span_s": round(span, 3),
            "events_per_s_wall": round(n / m["wall_s"]),
            "events_per_s_processing": round(n / span) if span > 0 else None,
            "events_per_cpu_s": round(n / cpu) if cpu else None,
            "_ids": set(ids)}


def empty_wall(bootstrap: str, partitions: int, procs: int, workdir: Path, tag: str, extra: list[str]) -> dict:
    """The same command(s) on an empty topic: the start-up and shutdown cost."""
    stamp = uuid.uuid4().hex[:6]
    topics = (f"scaleout-empty-{stamp}-events", f"scaleout-empty-{stamp}-changes", f"scaleout-empty-{stamp}-dlq")
    create_topics(bootstrap, {topics[0]: partitions, topics[1]: partitions, topics[2]: 1})
    logs = [workdir / f"{tag}-empty-p{i}.log" for i in range(procs)]
    return run_together(commands(bootstrap, topics, procs, extra), logs)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def ratio(b: float, a: float) -> float | None:
    ok = all(x == x for x in (a, b)) and a
    return round(b / a, 3) if ok else None


def fmt(x, spec: str = ",.0f") -> str:
    return "n/a" if x is None or x != x else format(x, spec)


# -- (c) growing a running deployment: 1 process -> 2, resuming from the snapshots -----------------
def ids_of(bootstrap: str, topic: str, partitions: int) -> list[str]:
    return [orjson.loads(v)["change_id"] for v in read_values(bootstrap, topic)]


def move_partition(src: Path, dst: Path, k: int) -> list[str]:
    """Move recovery partition k (part-K.sqlite3 and its -wal/-shm) from src to dst."""
    dst.mkdir(parents=True, exist_ok=True)
    moved = []
    for f in sorted(src.glob(f"part-{k}.sqlite3*")):
        f.rename(dst / f.name)
        moved.append(f.name)
    return moved


def rescale(bootstrap: str, lines: list[bytes], args, workdir: Path, extra: list[str]) -> dict:
    """The first half of the stream into one process with recovery (R = --rescale-partitions
    recovery partitions, default 2); then the second half, resumed (c0) by one process, as
    before, and (c1) by two processes of one cluster, process 1 holding the odd-numbered
    recovery partitions (none when R = 1), as the StatefulSet's init container deals them out:
    same input partitions, same shards, same recovery partitions, nothing reset. (c1) must
    write the changes (c0) writes."""
    import shutil

    half = len(lines) // 2
    stamp = uuid.uuid4().hex[:6]
    src = f"scaleout-rescale-{stamp}-events"
    create_topics(bootstrap, {src: args.partitions})
    produce_stream(bootstrap, src, lines[:half])
    rec = ["--epoch-interval", args.epoch_interval]
    first_dir = workdir / "rescale-first"
    out1 = fresh_outputs(bootstrap, "rescale-first", args.partitions)
    nparts = args.rescale_partitions
    print(f"  rescale: first half ({half} records), 1 process, {nparts} recovery partition(s) ...", flush=True)
    first = run_together([run_cmd(bootstrap, (src, *out1), "--recovery-dir", str(first_dir),
                                  "--recovery-partitions", str(nparts), *rec, *extra)],
                         [workdir / "rescale-first.log"])
    first_ids = ids_of(bootstrap, out1[0], args.partitions)
    one_dir, two_dirs = workdir / "rescale-c0", [workdir / "rescale-c1-p0", workdir / "rescale-c1-p1"]
    shutil.copytree(first_dir, one_dir)
    shutil.copytree(first_dir, two_dirs[0])
    two_dirs[1].mkdir(parents=True, exist_ok=True)
    moved = [f for k in range(1, nparts, 2) for f in move_partition(two_dirs[0], two_dirs[1], k)]
    layout = {"p0": sorted(f.name for f in two_dirs[0].glob("part-*")), "p1 (moved from p0)": moved}
    produce_stream(bootstrap, src, lines[half:])
    out: dict = {"records_first": half, "records_second": len(lines) - half, "epoch_interval": args.epoch_interval,
                 "recovery_partitions": nparts, "first": first, "layout_c1": layout}
    runs = {}
    for tag, procs in (("c0", 1), ("c1", 2)):
        outs = fresh_outputs(bootstrap, f"rescale-{tag}", args.partitions)
        if procs == 1:
            cmds = [run_cmd(bootstrap, (src, *outs), "--recovery-dir", str(one_dir), *rec, *extra)]
        else:
            addr = addresses(2)
            cmds = [run_cmd(bootstrap, (src, *outs), "--process-id", str(i), "--addresses", addr,
                            "--recovery-dir", str(two_dirs[i]), *rec, *extra) for i in range(2)]
        logs = [workdir / f"rescale-{tag}-p{i}.log" for i in range(procs)]
        print(f"  rescale: second half resumed by {procs} process(es) ...", flush=True)
        m = run_together(cmds, logs)
        for i, pr in enumerate(m["procs"]):
            pr["partitions"] = partitions_read(logs[i], src)
        ids = ids_of(bootstrap, outs[0], args.partitions)
        runs[tag] = {"processes": procs, **m, "cpu_s": round(sum(x["cpu_s"] for x in m["procs"]), 3),
                     "changes": len(ids), "_ids": set(ids)}
    c0, c1 = runs["c0"].pop("_ids"), runs["c1"].pop("_ids")
    both0, both1 = set(first_ids) | c0, set(first_ids) | c1
    out.update(runs)
    out["first_changes"] = len(first_ids)
    out["same_change_ids_c1_as_c0"] = both1 == both0
    out["c1_missing_vs_c0"] = len(both0 - both1)
    out["c1_extra_vs_c0"] = len(both1 - both0)
    out["second_half_rewritten_from_first"] = {"c0": len(c0 & set(first_ids)), "c1": len(c1 & set(first_ids))}
    out["_union"] = both1
    return out


# -- main -----------------------------------------------------------------------------------------
def bench(bootstrap: str, args, workdir: Path) -> dict:
    extra = args.espresso_args.split()
    t0 = time.perf_counter()
    lines = [ln.rstrip(b"\n") for ln in generate(contacts=args.contacts, events=args.events, days=args.days,
                                                 seed=args.seed)]
    gen_s = time.perf_counter() - t0
    n = len(lines)
    stamp = uuid.uuid4().hex[:6]
    src = f"scaleout-{stamp}-events"
    create_topics(bootstrap, {src: args.partitions})
    print(f"producing {n} records ({args.contacts} contacts) to {src} ({args.partitions} partitions)...", flush=True)
    produce_s, per_part, where = produce_stream(bootstrap, src, lines)
    print(f"  per partition: {per_part}", flush=True)

    rounds = []
    reference: set[str] | None = None
    mismatches = []
    for r in range(args.rounds):
        order = (1, 2) if r % 2 == 0 else (2, 1)
        got = {}
        for procs in order:
            tag = f"r{r}-{'a' if procs == 1 else 'b'}"
            e = empty_wall(bootstrap, args.partitions, procs, workdir, tag, extra)
            res = measure(bootstrap, src, per_part, where, n, procs, args.partitions, workdir, tag, extra)
            res["empty_topic_wall_s"] = e["wall_s"]
            res["empty_topic_cpu_s"] = round(sum(p["cpu_s"] for p in e["procs"]), 3)
            fixed = res["wall_s"] - e["wall_s"]
            res["events_per_s_marginal"] = round(n / fixed) if fixed > 0.5 else None
            got[procs] = res
        for res in got.values():
            ids = res.pop("_ids")
            if reference is None:
                reference = ids
            elif ids != reference:
                mismatches.append({"run": res["tag"], "missing": len(reference - ids), "extra": len(ids - reference)})
            res["same_change_ids_as_reference"] = ids == reference
        rounds.append({"a": got[1], "b": got[2]})

    a = [r["a"] for r in rounds]
    b = [r["b"] for r in rounds]
    summary = {
        "a_wall_s": med([x["wall_s"] for x in a]), "b_wall_s": med([x["wall_s"] for x in b]),
        "a_cpu_s": med([x["cpu_s"] for x in a]), "b_cpu_s": med([x["cpu_s"] for x in b]),
        "a_events_per_s_wall": med([x["events_per_s_wall"] for x in a]),
        "b_events_per_s_wall": med([x["events_per_s_wall"] for x in b]),
        "a_events_per_s_processing": med([x["events_per_s_processing"] or 0 for x in a]),
        "b_events_per_s_processing": med([x["events_per_s_processing"] or 0 for x in b]),
        "a_empty_wall_s": med([x["empty_topic_wall_s"] for x in a]),
        "b_empty_wall_s": med([x["empty_topic_wall_s"] for x in b]),
        "a_events_per_s_marginal": med([x["events_per_s_marginal"] for x in a if x["events_per_s_marginal"]]),
        "b_events_per_s_marginal": med([x["events_per_s_marginal"] for x in b if x["events_per_s_marginal"]]),
        "b_per_process_events_per_s_wall": [med([x["procs"][i]["events_per_s"] for x in b]) for i in range(2)],
        "b_per_process_events_per_s_processing": [
            med([x["procs"][i]["events_per_s_processing"] or 0 for x in b]) for i in range(2)],
        "b_per_process_cpu_s": [med([x["procs"][i]["cpu_s"] for x in b]) for i in range(2)],
    }
    summary["ratios_b_over_a"] = {k: ratio(summary[f"b_{k}"], summary[f"a_{k}"]) for k in (
        "wall_s", "cpu_s", "empty_wall_s", "events_per_s_wall", "events_per_s_processing", "events_per_s_marginal")}
    # Each process of (b) against the single process of (a): the pace of its own input.
    summary["ratios_b_over_a"]["per_process_events_per_s_processing"] = [
        ratio(x, summary["a_events_per_s_processing"]) for x in summary["b_per_process_events_per_s_processing"]]
    summary["same_change_ids"] = not mismatches
    resc = None
    if not args.skip_rescale:
        resc = rescale(bootstrap, lines, args, workdir, extra)
        union = resc.pop("_union")
        resc["same_change_ids_as_a"] = union == reference
        resc["missing_vs_a"] = len(reference - union)
        resc["extra_vs_a"] = len(union - reference)
    return {"rescale": resc, "records": n, "contacts": args.contacts, "days": args.days, "seed": args.seed,
            "partitions": args.partitions, "generate_s": round(gen_s, 2), "produce_s": round(produce_s, 2),
            "records_per_partition": per_part, "espresso_args": extra, "rounds": rounds,
            "mismatches": mismatches, "summary": summary}


def table(res: dict) -> str:
    s = res["summary"]
    rows = ["| run | processes | wall s | CPU s (per process) | events/s (wall) | events/s (processing) "
            "| per process: partitions, events read, events/s (its wall), events/s (its processing span), events/CPU-s "
            "| load 1 min before -> after | same change ids |",
            "|---|---|---|---|---|---|---|---|---|"]
    for rnd in res["rounds"]:
        for key in ("a", "b"):
            x = rnd[key]
            per = "; ".join(f"p{i}: {p['partitions']}, {p['events_read']:,}, {p['events_per_s']:,}, "
                            f"{p['events_per_s_processing'] or 0:,}, {p['events_per_cpu_s']:,}"
                            for i, p in enumerate(x["procs"]))
            cpus = " + ".join(f"{p['cpu_s']:.1f}" for p in x["procs"])
            rows.append(f"| {x['tag']} | {x['processes']} | {x['wall_s']:.1f} | {x['cpu_s']:.1f} ({cpus}) | "
                        f"{x['events_per_s_wall']:,} | {x['events_per_s_processing'] or 0:,} | {per} | "
                        f"{x['load_before'][0]:.2f} -> {x['load_after'][0]:.2f} | "
                        f"{'yes' if x['same_change_ids_as_reference'] else 'NO'} ({x['distinct_change_ids']:,}) |")
    r = s["ratios_b_over_a"]
    rows += ["", "| median of rounds | (a) 1 process | (b) 2 processes | (b)/(a) |", "|---|---|---|---|",
             f"| wall s | {fmt(s['a_wall_s'], '.2f')} | {fmt(s['b_wall_s'], '.2f')} | {fmt(r['wall_s'], '.2f')} |",
             f"| CPU s (all processes) | {fmt(s['a_cpu_s'], '.2f')} | {fmt(s['b_cpu_s'], '.2f')} "
             f"({' + '.join(fmt(c, '.2f') for c in s['b_per_process_cpu_s'])}) | {fmt(r['cpu_s'], '.2f')} |",
             f"| events/s (wall) | {fmt(s['a_events_per_s_wall'])} | {fmt(s['b_events_per_s_wall'])} | "
             f"{fmt(r['events_per_s_wall'], '.2f')} |",
             f"| events/s (processing span) | {fmt(s['a_events_per_s_processing'])} | "
             f"{fmt(s['b_events_per_s_processing'])} | {fmt(r['events_per_s_processing'], '.2f')} |",
             f"| per process, events/s of its input (processing span) | {fmt(s['a_events_per_s_processing'])} | "
             f"{' / '.join(fmt(x) for x in s['b_per_process_events_per_s_processing'])} | "
             f"{' / '.join(fmt(x, '.2f') for x in r['per_process_events_per_s_processing'])} |",
             f"| per process, events/s of its input (its wall) | {fmt(s['a_events_per_s_wall'])} | "
             f"{' / '.join(fmt(x) for x in s['b_per_process_events_per_s_wall'])} | |",
             f"| empty topic wall s (start-up + shutdown) | {fmt(s['a_empty_wall_s'], '.2f')} | "
             f"{fmt(s['b_empty_wall_s'], '.2f')} | {fmt(r['empty_wall_s'], '.2f')} |",
             f"| events/s (marginal: N / (wall - empty wall)) | {fmt(s['a_events_per_s_marginal'])} | "
             f"{fmt(s['b_events_per_s_marginal'])} | {fmt(r['events_per_s_marginal'], '.2f')} |",
             f"| same change ids | | | {'yes' if s['same_change_ids'] else 'NO'} |"]
    c = res.get("rescale")
    if c:
        c1cpu = " + ".join(f"{p['cpu_s']:.1f}" for p in c["c1"]["procs"])
        rows += ["", f"(c) growing from 1 process to 2 on the same snapshots: first {c['records_first']:,} records "
                 f"by 1 process with {c['recovery_partitions']} recovery partition(s) ({c['first']['wall_s']:.1f} s), then "
                 f"{c['records_second']:,} more, resumed by:", "",
                 "| resume | processes (partitions read) | wall s | CPU s | changes written | same change ids |",
                 "|---|---|---|---|---|---|",
                 f"| (c0) 1 process, all recovery partitions | 1 ({c['c0']['procs'][0]['partitions']}) | "
                 f"{c['c0']['wall_s']:.1f} | {c['c0']['cpu_s']:.1f} | {c['c0']['changes']:,} | reference |",
                 f"| (c1) 2 processes, recovery partitions {c['layout_c1']['p0']} / "
                 f"{c['layout_c1']['p1 (moved from p0)'] or 'none'} | 2 "
                 f"({'; '.join(str(p['partitions']) for p in c['c1']['procs'])}) | {c['c1']['wall_s']:.1f} | "
                 f"{c['c1']['cpu_s']:.1f} ({c1cpu}) | "
                 f"{c['c1']['changes']:,} | {'yes' if c['same_change_ids_c1_as_c0'] else 'NO'} "
                 f"(missing {c['c1_missing_vs_c0']}, extra {c['c1_extra_vs_c0']}) |",
                 f"| first + (c1) vs (a), the whole stream at once | | | | | "
                 f"{'yes' if c['same_change_ids_as_a'] else 'NO'} (missing {c['missing_vs_a']}, extra {c['extra_vs_a']}) |"]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--contacts", type=int, default=20_000)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="(a) and (b) runs each, alternating (default 3)")
    ap.add_argument("--quick", action="store_true", help="30k events, 3k contacts, 1 round")
    ap.add_argument("--skip-rescale", action="store_true", help="skip (c): 1 process -> 2 on the same snapshots")
    ap.add_argument("--rescale-partitions", type=int, default=2,
                    help="recovery partitions of (c) (default 2: one per process; 1: process 1 holds none)")
    ap.add_argument("--epoch-interval", default="1s", help="--epoch-interval of the (c) runs (default 1s)")
    ap.add_argument("--espresso-args", default="", help="extra arguments of every `espresso run` (one string)")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.contacts, args.rounds = 30_000, 3_000, 1

    # A SIGTERM ends the bench through its `finally`s: children and broker are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    bootstrap, broker_name, broker = start_broker(workdir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result: dict = {"benchmark": "scaleout", "timestamp": stamp, "command_line": [sys.executable, *sys.argv],
                    "broker": broker_name, "machine": machine_info(), "uptime_before": uptime(), "logs": str(workdir)}
    t0 = time.time()
    try:
        result["scaleout"] = bench(bootstrap, args, workdir)
    finally:
        if broker is not None:
            broker.stop()
    result["uptime_after"] = uptime()
    result["elapsed_s"] = round(time.time() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"scaleout-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    m, r = result["machine"], result["scaleout"]
    print(f"\nScale-out bench on {m['cpu_model']} ({m['usable_cores']} cores), Python {m['python']}; "
          f"broker: {result['broker']}")
    print(f"{r['records']:,} records, {r['contacts']:,} contacts, {r['partitions']} partitions "
          f"{r['records_per_partition']}; uptime before: {result['uptime_before']}; after: {result['uptime_after']}\n")
    print(table(r))
    print(f"\nwrote {path.relative_to(REPO)}; logs in {workdir}")
    ok = r["summary"]["same_change_ids"] and (not r["rescale"] or r["rescale"]["same_change_ids_c1_as_c0"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

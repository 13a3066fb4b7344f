"""`espresso report` as a user runs it: a real process, from another working directory, with
relative paths; table, JSON and HTML; bad lines counted on stderr; errors as one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from state.report import build_report

from .gen import campaign

BAD_MESSAGE_LINES = b'{oops\n\n[1, 2]\n'


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ESPRESSO_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


def _run(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "commands.cli", "report", *argv], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=120)


def _jsonl(records) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory):
    """A replay's three files in runs/, and the records they hold."""
    root = tmp_path_factory.mktemp("report")
    m, d, c = campaign(seed=11, rates={"A": 0.05, "B": 0.10}, sends=2000, holdout=400, holdout_rate=0.04)
    m2, d2, c2 = campaign(seed=12, rates={None: 0.08}, sends=400, campaign_id="checkout-series",
                          steps=("kept", "incentive"), holdout=60, holdout_rate=0.04)
    (root / "runs").mkdir()
    (root / "runs" / "out.messages.jsonl").write_bytes(_jsonl(m + m2) + BAD_MESSAGE_LINES)
    (root / "runs" / "out.decisions.jsonl").write_bytes(_jsonl(d + d2))
    (root / "runs" / "out.conversions.jsonl").write_bytes(_jsonl(c + c2))
    (root / "elsewhere").mkdir()
    return root, (m + m2, d + d2, c + c2)


@pytest.fixture(scope="module")
def runs(replay_dir):
    """Every case in its own process, at once (each pays the interpreter's and scipy's start-up)."""
    root, _ = replay_dir
    cwd = root / "elsewhere"
    cases = {
        "table": ("--from-replay", "../runs/out.jsonl"),
        "json": ("--from-replay", "../runs/out.jsonl", "--format", "json"),
        "html": ("--from-replay", "../runs/out.jsonl", "--html", "page.html", "--min-sends", "50"),
        "explicit": ("--messages", "../runs/out.messages.jsonl", "--decisions", "../runs/out.decisions.jsonl",
                     "--conversions", "../runs/out.conversions.jsonl", "--format", "json"),
        "missing-replay": ("--from-replay", "../runs/other.jsonl"),
        "missing-file": ("--from-replay", "../runs/out.jsonl", "--conversions", "nothere.jsonl"),
        "no-input": (),
        "files-and-kafka": ("--from-replay", "../runs/out.jsonl", "--bootstrap-servers", "127.0.0.1:1"),
        "one-file-only": ("--messages", "../runs/out.messages.jsonl"),
        "bad-format": ("--from-replay", "../runs/out.jsonl", "--format", "csv"),
        "html-dir-missing": ("--from-replay", "../runs/out.jsonl", "--html", "no/such/dir/page.html"),
        "kafka-unreachable": ("--bootstrap-servers", "127.0.0.1:1"),  # nothing listens there
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(_run, cwd, *argv) for name, argv in cases.items()}
        return {name: f.result() for name, f in futures.items()}, cwd


def test_table(runs):
    res = runs[0]["table"]
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "resend  (email)" in out and "checkout-series  (email)" in out
    assert "winner B" in out
    assert "step kept" in out and "step incentive" in out
    assert "lift over holdout" in out
    # the malformed lines of the messages file, counted, never a traceback
    assert "espresso report: 1 record skipped: ../runs/out.messages.jsonl: not JSON (first: line 4801)" in res.stderr
    assert "1 record skipped: ../runs/out.messages.jsonl: not a JSON object (first: line 4803)" in res.stderr
    assert "Traceback" not in res.stderr


def test_json_has_the_figures_of_the_aggregation(runs, replay_dir):
    res = runs[0]["json"]
    assert res.returncode == 0, res.stderr
    got = orjson.loads(res.stdout)
    want = build_report(*replay_dir[1]).record()
    assert got["campaigns"] == want["campaigns"]
    assert got["inputs"]["messages"]["skipped"] == 2 and got["inputs"]["messages"]["records"] == 4802
    assert got["campaigns"][1]["ab_test"]["winner"] == "B"
    explicit = orjson.loads(runs[0]["explicit"].stdout)
    assert explicit["campaigns"] == got["campaigns"]


def test_html_page(runs):
    res = runs[0]["html"]
    assert res.returncode == 0, res.stderr
    page = (runs[1] / "page.html").read_text()
    assert "wrote" in res.stderr and "page.html" in res.stderr
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("<svg") >= 4  # rates and lifts of both campaigns, and by step
    assert "winner B" in page and "checkout-series" in page
    for needle in ("<script", "<link", "src=", "url(", "@import", "https://"):
        assert needle not in page
    assert page.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http://") == 0


@pytest.mark.parametrize("name,says", [  # not "case": tests/commands reads that name
    ("missing-replay", ("other.messages.jsonl", "does not exist", "--messages FILE")),
    ("missing-file", ("--conversions", "no such file", "nothere.jsonl")),
    ("no-input", ("no input", "--from-replay OUT", "KAFKA_BOOTSTRAP_SERVERS")),
    ("files-and-kafka", ("choose one source",)),
    ("one-file-only", ("no decisions input", "--decisions FILE")),
    ("bad-format", ("--format", "'csv'", "table or json")),
    ("html-dir-missing", ("--html", "does not exist")),
    ("kafka-unreachable", ("cannot reach Kafka at 127.0.0.1:1", "--bootstrap-servers")),
])
def test_errors_are_one_line_and_exit_2(runs, name, says):
    res = runs[0][name]
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("espresso report: "), res.stderr
    for s in says:
        assert s in lines[0]
    assert res.stdout == ""

"""Every subcommand's errors as a user meets them: a real `espresso` process per case.

The contract (commands/cli.py, state/errors.py): a problem the user can fix is ONE line on
stderr and exit code 2; a failure while running is one line and exit code 1; never a Python
traceback, never a Rust panic. Each case gives bad flags, bad environment values, missing,
unreadable or misplaced files, and checks the exit code, that stderr is one line (argparse
adds its usage block before it) naming the flag or variable and the value, and that nothing
leaks. The cases run concurrently in one fixture (each ~0.7 s of interpreter start-up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNTIL = "2026-11-10T00:00:00Z"
REPLAY = ("replay", "events.jsonl", "--until", UNTIL)
RUN = ("run", "--bootstrap-servers", "127.0.0.1:1", "--metrics-port", "-1")  # fails before connecting
DELIVER = ("deliver", "--bootstrap-servers", "127.0.0.1:1")
REDIS = {"REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens: only reached by the members runtime case
#: Bad values of variables that belong to `run`/`deliver`/`members`: `replay` never reads them.
OTHERS_BAD_VARIABLES = {"ESPRESSO_PARTITIONS": "x", "ESPRESSO_METRICS_PORT": "http",
                        "ESPRESSO_ALLOWED_LATENESS": "soon", "BYTEWAX_WORKERS_PER_PROCESS": "0",
                        "KAFKA_SECURITY_PROTOCOL": "bogus", "REDIS_URL": "http://x", "ESPRESSO_SEGMENTS": "adir"}

EVENTS = b"""\
{"event_id":"e1","contact_id":"c1","type":"consent_changed","ts":"2026-11-01T10:00:00Z","properties":{"channel":"email","status":"subscribed"}}
{"event_id":"e2","contact_id":"c1","type":"email_open","ts":"2026-11-01T11:00:00Z"}
{oops
{"event_id":"e3","contact_id":"c2","type":"consent_changed","ts":"2026-11-01T10:00:00Z","properties":{"channel":"email","status":"subscribed"}}
{"event_id":"e4","contact_id":"c2","type":"email_click","ts":"2026-11-02T11:00:00Z"}
{"event_id":"e5","contact_id":"c2","type":"order_placed","ts":"2026-11-02T12:00:00Z"}
"""


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    code: int  # 2: the user's to fix; 1: failed while running; 0: must work
    says: tuple[str, ...] = ()  # substrings of stderr: the flag/variable, the value, the problem
    env: dict[str, str] = field(default_factory=dict)
    usage: bool = False  # argparse's usage block may precede the one line
    needs: str | None = None  # "permissions": chmod must deny this user; or a path that must exist

    def __str__(self) -> str:
        return self.id


def C(id: str, argv: tuple[str, ...], code: int = 2, *says: str, **kw) -> Case:  # noqa: N802 - a table row
    return Case(id, argv, code, says, **kw)


CASES = [
    # -- replay: flags -----------------------------------------------------------------
    C("replay-unknown-flag", (*REPLAY, "--out", "o.jsonl", "--bogus"), 2,
      "espresso replay: error: unrecognized arguments: --bogus", usage=True),
    C("replay-missing-events", ("replay", "--until", UNTIL, "--out", "o.jsonl"), 2, "EVENTS.jsonl", usage=True),
    C("replay-flag-without-value", (*REPLAY, "--out"), 2, "--out", "expected one argument", usage=True),
    C("replay-missing-until", ("replay", "events.jsonl", "--out", "o.jsonl"), 2, "--until: required"),
    C("replay-missing-out", REPLAY, 2, "--out: required"),
    C("replay-bad-until", ("replay", "events.jsonl", "--until", "tomorrow", "--out", "o.jsonl"), 2,
      "--until", "'tomorrow'", "ISO-8601"),
    C("replay-bad-max-clock-skew", (*REPLAY, "--out", "o.jsonl", "--max-clock-skew", "soon"), 2,
      "--max-clock-skew", "'soon'", "not a duration"),
    C("replay-zero-shards", (*REPLAY, "--out", "o.jsonl", "--shards", "0"), 2, "--shards", "'0'", "1 or more"),
    C("replay-dedup-horizon-not-a-number", (*REPLAY, "--out", "o.jsonl", "--dedup-horizon", "x"), 2,
      "--dedup-horizon", "'x'", "not a whole number"),
    # -- replay: files -----------------------------------------------------------------
    C("replay-events-missing", ("replay", "missing.jsonl", "--until", UNTIL, "--out", "o.jsonl"), 2,
      "events", "no such file", "missing.jsonl"),
    C("replay-events-is-a-directory", ("replay", "adir", "--until", UNTIL, "--out", "o.jsonl"), 2,
      "events", "is a directory", "adir"),
    C("replay-events-under-a-file", ("replay", "events.jsonl/x", "--until", UNTIL, "--out", "o.jsonl"), 2,
      "no such file", "events.jsonl/x"),
    C("replay-events-unreadable", ("replay", "unreadable.jsonl", "--until", UNTIL, "--out", "o.jsonl"), 2,
      "events", "not readable", "unreadable.jsonl", needs="permissions"),
    C("replay-out-is-a-directory", (*REPLAY, "--out", "adir"), 2, "--out", "is a directory", "adir"),
    C("replay-out-directory-missing", (*REPLAY, "--out", "nodir/o.jsonl"), 2, "--out", "nodir", "does not exist"),
    C("replay-out-not-writable", (*REPLAY, "--out", "readonly/o.jsonl"), 2, "--out", "not writable",
      needs="permissions"),
    C("replay-out-overwrites-events", (*REPLAY, "--out", "events.jsonl"), 2, "--out", "events.jsonl",
      "would overwrite the events file"),
    C("replay-dead-letters-is-out", (*REPLAY, "--out", "o.jsonl", "--dead-letters", "o.jsonl"), 2,
      "--dead-letters", "o.jsonl", "is also --out"),
    C("replay-dead-letters-is-a-directory", (*REPLAY, "--out", "o.jsonl", "--dead-letters", "adir"), 2,
      "--dead-letters", "is a directory", "adir"),
    C("replay-default-dead-letters-is-a-directory", (*REPLAY, "--out", "dl.jsonl"), 2,
      "--out", "dl.dead-letters.jsonl", "is a directory", "--dead-letters FILE"),
    C("replay-segments-missing", (*REPLAY, "--out", "o.jsonl", "--segments", "missing.yaml"), 2,
      "--segments", "no such file", "missing.yaml"),
    C("replay-segments-is-a-directory", (*REPLAY, "--out", "o.jsonl", "--segments", "adir"), 2,
      "--segments", "is a directory", "adir"),
    C("replay-segments-invalid-yaml", (*REPLAY, "--out", "o.jsonl", "--segments", "bad-syntax.yaml"), 2,
      "bad-syntax.yaml", "line 2", "not valid YAML"),
    C("replay-segments-invalid-definition", (*REPLAY, "--out", "o.jsonl", "--segments", "bad-definition.yaml"), 2,
      "bad-definition.yaml", "segments[0].when", "'foo'"),
    C("replay-segments-not-utf8", (*REPLAY, "--out", "o.jsonl", "--segments", "not-utf8.yaml"), 2,
      "--segments", "not UTF-8", "not-utf8.yaml"),
    C("replay-campaigns-is-a-directory", (*REPLAY, "--out", "o.jsonl", "--campaigns", "adir"), 2,
      "--campaigns", "is a directory", "adir"),
    C("replay-out-disk-full", (*REPLAY, "--out", "/dev/full"), 1, "/dev/full", "No space left on device",
      needs="/dev/full"),
    C("replay-events-read-error", ("replay", "/proc/self/mem", "--until", UNTIL, "--out", "o-mem.jsonl"), 1,
      "reading /proc/self/mem", "Input/output error", needs="/proc/self/mem"),
    # -- replay: variables of other subcommands are never read -----------------------------
    C("replay-ignores-other-subcommands-variables", (*REPLAY, "--out", "o-ignored.jsonl"), 0,
      "4 changes", env=OTHERS_BAD_VARIABLES),
    # -- run -----------------------------------------------------------------------------
    C("run-unknown-flag", (*RUN, "--bogus"), 2, "espresso run: error: unrecognized arguments: --bogus", usage=True),
    C("run-no-brokers", ("run",), 2, "--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", "espresso demo"),
    C("run-metrics-port-http", RUN[:3], 2, "ESPRESSO_METRICS_PORT", "'http'", "not a whole number",
      env={"ESPRESSO_METRICS_PORT": "http"}),
    C("run-allowed-lateness-soon", RUN, 2, "ESPRESSO_ALLOWED_LATENESS", "'soon'", "not a duration",
      env={"ESPRESSO_ALLOWED_LATENESS": "soon"}),
    C("run-zero-workers", RUN, 2, "BYTEWAX_WORKERS_PER_PROCESS", "'0'", "1 or more",
      env={"BYTEWAX_WORKERS_PER_PROCESS": "0"}),
    C("run-partitions-not-a-number", RUN, 2, "ESPRESSO_PARTITIONS", "'x'", env={"ESPRESSO_PARTITIONS": "x"}),
    C("run-bogus-security-protocol", RUN, 2, "KAFKA_SECURITY_PROTOCOL", "'bogus'",
      env={"KAFKA_SECURITY_PROTOCOL": "bogus"}),
    C("run-bad-producer-settings", RUN, 2, "KAFKA_PRODUCER_SETTINGS", "'foo'", env={"KAFKA_PRODUCER_SETTINGS": "foo"}),
    C("run-bad-log-level", RUN, 2, "ESPRESSO_LOG_LEVEL", "'loud'", env={"ESPRESSO_LOG_LEVEL": "loud"}),
    C("run-segments-is-a-directory", RUN, 2, "ESPRESSO_SEGMENTS", "is a directory", "'adir'",
      env={"ESPRESSO_SEGMENTS": "adir"}),
    C("run-segments-missing", (*RUN, "--segments", "missing.yaml"), 2, "--segments", "no such file", "missing.yaml"),
    C("run-segments-invalid-yaml", (*RUN, "--segments", "bad-syntax.yaml"), 2, "bad-syntax.yaml", "not valid YAML"),
    C("run-campaigns-is-a-directory", (*RUN, "--campaigns", "adir"), 2, "--campaigns", "is a directory"),
    C("run-recovery-dir-is-a-file", (*RUN, "--recovery-dir", "events.jsonl"), 2, "--recovery-dir",
      "not a directory", "events.jsonl"),
    C("run-process-id-without-addresses", RUN, 2, "BYTEWAX_PROCESS_ID", "--addresses",
      env={"BYTEWAX_PROCESS_ID": "1"}),
    C("run-ignores-deliver-variables", ("run",), 2, "no Kafka brokers",
      env={"ESPRESSO_DELIVER_BATCH_SIZE": "x", "ESPRESSO_DELIVER_CLAIM_LEASE": "soon", "REDIS_URL": "http://x"}),
    # -- deliver -------------------------------------------------------------------------
    C("deliver-unknown-flag", (*DELIVER, "--bogus"), 2, "espresso deliver: error: unrecognized arguments: --bogus",
      usage=True),
    C("deliver-redis-url-http", DELIVER, 2, "REDIS_URL", "'http://x'", "redis://", env={"REDIS_URL": "http://x"}),
    C("deliver-no-redis", DELIVER, 2, "--redis-url", "REDIS_URL"),
    C("deliver-metrics-port-http", DELIVER, 2, "ESPRESSO_METRICS_PORT", "'http'",
      env={**REDIS, "ESPRESSO_METRICS_PORT": "http"}),
    C("deliver-bogus-security-protocol", DELIVER, 2, "KAFKA_SECURITY_PROTOCOL", "'bogus'",
      env={**REDIS, "KAFKA_SECURITY_PROTOCOL": "bogus"}),
    C("deliver-claim-lease-soon", DELIVER, 2, "ESPRESSO_DELIVER_CLAIM_LEASE", "'soon'",
      env={**REDIS, "ESPRESSO_DELIVER_CLAIM_LEASE": "soon"}),
    C("deliver-no-channel", DELIVER, 2, "ESPRESSO_WEBHOOK_URL", "ESPRESSO_SMTP_HOST", env=REDIS),
    C("deliver-webhook-url-ftp", DELIVER, 2, "ESPRESSO_WEBHOOK_URL", "'ftp://x'",
      env={**REDIS, "ESPRESSO_WEBHOOK_URL": "ftp://x"}),
    C("deliver-webhook-timeout-soon", DELIVER, 2, "ESPRESSO_WEBHOOK_TIMEOUT", "'soon'",
      env={**REDIS, "ESPRESSO_WEBHOOK_URL": "http://127.0.0.1:1/x", "ESPRESSO_WEBHOOK_TIMEOUT": "soon"}),
    C("deliver-smtp-without-from", DELIVER, 2, "ESPRESSO_SMTP_FROM", env={**REDIS, "ESPRESSO_SMTP_HOST": "mail"}),
    C("deliver-ignores-run-variables", DELIVER, 2, "REDIS_URL", "'http://x'",
      env={"REDIS_URL": "http://x", "ESPRESSO_PARTITIONS": "x", "ESPRESSO_ALLOWED_LATENESS": "soon"}),
    # -- members -------------------------------------------------------------------------
    C("members-missing-segment", ("members",), 2, "SEGMENT", usage=True),
    C("members-unknown-flag", ("members", "seg", "--bogus"), 2,
      "espresso members: error: unrecognized arguments: --bogus", usage=True),
    C("members-count-and-contact", ("members", "seg", "--count", "--contact", "c1"), 2, "not allowed", usage=True),
    C("members-no-redis", ("members", "seg"), 2, "--redis-url", "REDIS_URL"),
    C("members-redis-url-http", ("members", "seg"), 2, "REDIS_URL", "'http://x'", env={"REDIS_URL": "http://x"}),
    C("members-apply-without-brokers", ("members", "seg", "--apply-changes-topic", "t"), 2,
      "--apply-changes-topic", "--bootstrap-servers", env=REDIS),
    C("members-bogus-security-protocol",
      ("members", "seg", "--apply-changes-topic", "t", "--bootstrap-servers", "127.0.0.1:1"), 2,
      "KAFKA_SECURITY_PROTOCOL", "'bogus'", env={**REDIS, "KAFKA_SECURITY_PROTOCOL": "bogus"}),
    C("members-redis-unreachable", ("members", "seg", "--count"), 1, "Redis", "REDIS_URL", env=REDIS),
    # -- demo ----------------------------------------------------------------------------
    C("demo-unknown-flag", ("demo", "--bogus"), 2, "espresso demo: error: unrecognized arguments: --bogus",
      usage=True),
    C("demo-window-soon", ("demo", "--window", "soon"), 2, "--window", "'soon'"),
    C("demo-zero-rate", ("demo", "--rate", "0"), 2, "--rate"),
    C("demo-rate-not-a-number", ("demo", "--rate", "x"), 2, "--rate", "'x'", usage=True),
    C("demo-metrics-port-not-a-number", ("demo", "--metrics-port", "http"), 2, "--metrics-port", "'http'",
      usage=True),
    # -- no or unknown subcommand --------------------------------------------------------
    C("no-subcommand", (), 2, "required", usage=True),
    C("unknown-subcommand", ("bogus",), 2, "invalid choice: 'bogus'", usage=True),
]


def _environ(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without espresso's, Kafka's, Bytewax's and Redis' variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ESPRESSO_", "KAFKA_", "BYTEWAX_", "REDIS_")) and k != "RUST_BACKTRACE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**env, **extra}


def espresso(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "commands.cli", *argv], cwd=cwd, env=_environ(env or {}),
                          capture_output=True, text=True, timeout=90)


def _workspace(d: Path) -> Path:
    (d / "events.jsonl").write_bytes(EVENTS)
    (d / "unreadable.jsonl").write_bytes(EVENTS)
    (d / "bad-syntax.yaml").write_text("segments: [\n")
    (d / "bad-definition.yaml").write_text("segments:\n  - id: x\n    when: {foo: 1}\n")
    (d / "not-utf8.yaml").write_bytes(b"\xff\xfesegments: []\n")
    (d / "adir").mkdir()
    (d / "dl.dead-letters.jsonl").mkdir()
    (d / "readonly").mkdir()
    (d / "unreadable.jsonl").chmod(0)
    (d / "readonly").chmod(0o555)
    return d


def _permissions_deny(d: Path) -> bool:
    """False as root (or with CAP_DAC_OVERRIDE): chmod 000 does not stop this user reading."""
    try:
        (d / "unreadable.jsonl").open("rb").close()
    except PermissionError:
        return True
    return False


def _skip_reason(case: Case, d: Path) -> str | None:
    if case.needs == "permissions" and not _permissions_deny(d):
        return ("permissions do not deny this user (running as root): an unreadable or unwritable file cannot "
                "be made; replay-out-disk-full and replay-events-read-error cover I/O errors instead")
    if case.needs and case.needs != "permissions" and not os.path.exists(case.needs):
        return f"{case.needs} does not exist on this system"
    return None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    d = _workspace(tmp_path_factory.mktemp("cli-errors"))
    yield d
    (d / "unreadable.jsonl").chmod(0o644)
    (d / "readonly").chmod(0o755)


@pytest.fixture(scope="module")
def results(request, workspace):
    """Every selected case, run concurrently once: {case id: CompletedProcess}."""
    wanted = {item.callspec.params["case"].id for item in request.session.items
              if hasattr(item, "callspec") and "case" in item.callspec.params}
    todo = [c for c in CASES if c.id in wanted and not _skip_reason(c, workspace)]
    with ThreadPoolExecutor(max_workers=max(2, min(8, 2 * (os.cpu_count() or 1)))) as pool:
        done = pool.map(lambda c: espresso(*c.argv, cwd=workspace, env=c.env), todo)
        return {c.id: proc for c, proc in zip(todo, done)}


def _message_lines(stderr: str, usage: bool) -> list[str]:
    """stderr without argparse's usage block (`usage: ...` and its indented continuation lines),
    which only a case marked `usage` may show."""
    lines = stderr.splitlines()
    if lines and lines[0].startswith("usage: espresso"):
        assert usage, f"unexpected usage block:\n{stderr}"
        lines = lines[1:]
        while lines and lines[0].startswith(" "):
            lines = lines[1:]
    return lines


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_error(case: Case, results, workspace):
    """Exit code 2 for what the user can fix, 1 for a failure while running: one line on stderr
    naming the flag or variable and the value; never a traceback or a panic."""
    reason = _skip_reason(case, workspace)
    if reason:
        pytest.skip(reason)
    proc = results[case.id]
    shown = f"exit {proc.returncode}\nstderr:\n{proc.stderr}\nstdout:\n{proc.stdout}"
    for leak in ("Traceback", "panicked", "stack backtrace"):
        assert leak not in proc.stderr and leak not in proc.stdout, shown
    assert proc.returncode == case.code, shown
    lines = _message_lines(proc.stderr, case.usage)
    if case.code:
        assert len(lines) == 1, shown  # ONE line (the brief allows up to 3; espresso needs one)
        assert lines[0].startswith("espresso"), shown
    else:
        assert len(lines) <= 3, shown
    for text in case.says:
        assert text in proc.stderr, f"{text!r} not in stderr\n{shown}"


def test_replay_from_another_directory_with_relative_paths(tmp_path):
    """`cd data && espresso replay events.jsonl --until ... --out changes.jsonl` works and writes
    byte for byte what absolute paths from elsewhere write, with the parse-ahead helper (it runs in
    the project directory) and without it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.jsonl").write_bytes(EVENTS)
    shutil.copy(ROOT / "examples" / "segments-seed-001.yaml", tmp_path / "segments.yaml")
    two_cores = len(os.sched_getaffinity(0)) >= 2
    helper = () if two_cores else ("--parse-ahead",)  # the default on two cores; forced on one

    rel = espresso("replay", "events.jsonl", "--until", UNTIL, "--out", "changes.jsonl",
                   "--segments", "../segments.yaml", *helper, cwd=data)
    assert rel.returncode == 0, rel.stderr
    assert f"-> {data / 'changes.jsonl'}" in rel.stderr  # reported as the absolute path it wrote

    absolute = tmp_path / "absolute"
    absolute.mkdir()
    abs_ = espresso("replay", str(data / "events.jsonl"), "--until", UNTIL, "--out", str(absolute / "changes.jsonl"),
                    "--segments", str(tmp_path / "segments.yaml"), *helper, cwd=ROOT)
    assert abs_.returncode == 0, abs_.stderr

    inline = tmp_path / "inline"
    inline.mkdir()
    no_helper = espresso("replay", "data/events.jsonl", "--until", UNTIL, "--out", "inline/changes.jsonl",
                         "--segments", "segments.yaml", "--no-parse-ahead", cwd=tmp_path)
    assert no_helper.returncode == 0, no_helper.stderr

    changes = (data / "changes.jsonl").read_bytes()
    dead = (data / "changes.dead-letters.jsonl").read_bytes()
    assert changes and dead.count(b"\n") == 1  # the `{oops` line
    for d in (absolute, inline):
        assert (d / "changes.jsonl").read_bytes() == changes
        assert (d / "changes.dead-letters.jsonl").read_bytes() == dead
    for proc in (rel, abs_, no_helper):
        assert "Traceback" not in proc.stderr and "panicked" not in proc.stderr

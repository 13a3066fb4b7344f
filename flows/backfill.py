"""`espresso backfill`: build, in a stopped deployment's recovery directory, the facts that new
segment definitions need and the kept state lacks, from history (an archive or the topic).

    recovery dir ──▶ every shard snapshot ──┐
                                            ├─▶ FactFiller per snapshot (state/backfill.py) ──▶ same rows, rewritten
    history ──▶ events routed to shards ────┘       + the definitions record, with the facts now kept

Afterwards `espresso run` with the new definitions switches them in like any other definition
change (state/migrate.py): the new segments' memberships at the switch instant, cause
`definition_changed`, then what `espresso replay` with the new definitions writes.

History is either JSONL archives of contact events (`--history`), or the input topic itself
(`--from-topic`), read up to the offsets the snapshots stored. A contact the history knows and
the state does not is placed in the partition its key's partitioner gives (recognised from the
contacts the state holds, connectors/partitioners.py).
"""

from __future__ import annotations

import itertools
import logging
import pickle
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import orjson

from connectors.partitioners import PARTITIONERS, detect_partitioner
from state.blobs import pack, unpack, unpack_state
from state.backfill import UNBOUNDED, FactFiller, lookback_ms, missing_facts, scratch_program
from state.errors import ConfigError
from state.events import Invalid, parse_event
from state.intake import DeadLetter, shard_of
from state.migrate import plan_change
from state.program import Program
from state.shard import ShardDelta, apply_delta, unpack_ids
from state.timeutil import format_ms

from .logic import SNAPSHOT_V2, SNAPSHOT_V3
from .run import record_definitions

__all__ = ["ArchiveHistory", "TopicHistory", "BackfillResult", "backfill", "read_input_offsets"]

log = logging.getLogger("espresso.backfill")

_BATCH = 4096


@dataclass
class _Snap:
    """One stored snapshot of one shard (a key may have several, one per epoch kept), made
    whole: a v3 snapshot's changes applied to the base it names."""

    part: Path
    key: str
    epoch: int
    payload: list  # the ShardLogic resume tuple (flows/logic.py `ShardLogic.snapshot`)
    state: Any
    base_id: str | None = None  # the base it was made whole from (v3)

    @property
    def partition(self) -> int:
        return int(self.key.split(".")[0])

    @property
    def frontier(self) -> int:
        return self.payload[3][0] if self.payload[0] == SNAPSHOT_V3 else self.payload[2][0]

    def filled(self, state: Any) -> tuple:
        """The payload with `state` whole in it (a v3 snapshot without a base)."""
        p = self.payload
        if p[0] == SNAPSHOT_V3:
            return (SNAPSHOT_V3, None, state, *p[3:])
        return (SNAPSHOT_V2, state, *p[2:])


@dataclass
class BackfillResult:
    facts: list[str] = field(default_factory=list)
    snapshots: int = 0
    events: int = 0  # history events read
    applied: int = 0  # applied to the new facts
    added: int = 0  # contacts only the history knew
    unplaced: int = 0  # events of unknown contacts no partitioner could place
    elsewhere: int = 0  # events of shards whose snapshots are not in this directory
    after_cutoff: int = 0
    invalid: int = 0
    dead_letters: Path | None = None
    partitioner: str | None = None
    rebuilt: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.facts:
            return "nothing to backfill: the state already keeps every fact the definitions read"
        return (f"{len(self.facts)} fact(s) built for {self.snapshots} shard snapshot(s) from {self.events} history "
                f"events ({self.applied} applied, {self.after_cutoff} after what the input had read, left to it; "
                f"{self.added} contacts added from the history alone"
                + (f"; {self.unplaced} events of unknown contacts not placed" if self.unplaced else "")
                + (f"; {self.elsewhere} events of shards held by other recovery partitions" if self.elsewhere else "")
                + (f"; {self.invalid} invalid lines -> {self.dead_letters}" if self.invalid else "")
                + f"); segments to switch in: {', '.join(self.rebuilt) or 'none'}")


# -- the recovery directory -------------------------------------------------------------
def _parts(recovery_dir: Path) -> list[Path]:
    parts = sorted(recovery_dir.glob("part-*.sqlite3"))
    if not parts:
        raise ConfigError(f"--recovery-dir {recovery_dir}: no recovery partitions (part-*.sqlite3) here; give the "
                          "directory `espresso run --recovery-dir` writes to")
    return parts


def _connect(part: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(f"file:{part}?mode=rw", uri=True, timeout=5)
        con.execute("SELECT 1 FROM snaps LIMIT 1")
        return con
    except sqlite3.Error as exc:
        raise ConfigError(f"--recovery-dir: cannot open {part}: {exc}; is it a Bytewax recovery partition, "
                          "and is `espresso run` stopped?") from None


def _load(blob: bytes) -> Any:
    value = pickle.loads(blob)  # Bytewax's pickle of what the step returned
    return unpack(value) if isinstance(value, bytes) else value


def _rows(recovery_dir: Path, step_id: str) -> list[tuple[Path, str, int, bytes]]:
    out = []
    for part in _parts(recovery_dir):
        con = _connect(part)
        try:
            out.extend((part, key, epoch, blob) for key, epoch, blob in _rows_of(con, step_id))
        finally:
            con.close()
    return out


def _rows_of(con: sqlite3.Connection, step_id: str) -> list[tuple[str, int, bytes]]:
    return con.execute("SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id = ? "
                       "AND ser_change IS NOT NULL", (step_id,)).fetchall()


def _read_snaps(recovery_dir: Path, flow_id: str) -> list[_Snap]:
    """Every resumable shard snapshot, made whole. A v3 snapshot whose base is gone is one
    Bytewax will not resume from (a newer one was committed): left as it is."""
    bases = {}
    for _, _, _, blob in _rows(recovery_dir, f"{flow_id}.bases"):
        item = _load(blob)
        bases[item.base_id] = item.blob
    out = []
    for part, key, epoch, blob in _rows(recovery_dir, f"{flow_id}.segments"):
        payload = _load(blob)
        if not isinstance(payload, tuple) or not payload or payload[0] not in (SNAPSHOT_V2, SNAPSHOT_V3):
            raise ConfigError(f"--recovery-dir {recovery_dir}: the snapshot of shard {key} was made by an older "
                              "version of espresso; run `espresso run` once with the definitions it was made "
                              "with (it rewrites the snapshots), stop it, then backfill")
        if payload[0] == SNAPSHOT_V2:
            out.append(_Snap(part, key, epoch, list(payload), payload[1]))
        elif payload[1] is None:
            out.append(_Snap(part, key, epoch, list(payload), payload[2]))
        elif payload[1] in bases:
            delta: ShardDelta = payload[2]
            out.append(_Snap(part, key, epoch, list(payload), apply_delta(unpack_state(bases[payload[1]]), delta),
                             payload[1]))
    return out


def read_input_offsets(recovery_dir: Path, flow_id: str = "espresso") -> dict[int, int]:
    """{input partition: next offset} of the newest snapshot of each input partition."""
    offsets: dict[int, tuple[int, int]] = {}
    for part in _parts(recovery_dir):
        con = _connect(part)
        try:
            rows = con.execute("SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id = ? "
                               "AND ser_change IS NOT NULL", (f"{flow_id}.input",)).fetchall()
        finally:
            con.close()
        for key, epoch, blob in rows:
            offset = _load(blob)
            p = int(key)
            if isinstance(offset, int) and (p not in offsets or epoch > offsets[p][0]):
                offsets[p] = (epoch, offset)
    return {p: off for p, (_, off) in offsets.items()}


def _write(recovery_dir: Path, snaps: list[_Snap], flow_id: str) -> None:
    """Rewrite the rows whole, one transaction per recovery partition; the bases they were
    made whole from are deleted (nothing names them any more)."""
    by_part: dict[Path, list[_Snap]] = defaultdict(list)
    for s in snaps:
        by_part[s.part].append(s)
    for part, rows in by_part.items():
        con = _connect(part)
        try:
            with con:
                con.executemany(
                    "UPDATE snaps SET ser_change = ? WHERE step_id = ? AND state_key = ? AND snap_epoch = ?",
                    [(pickle.dumps(pack(s.filled(s.state))),
                      f"{flow_id}.segments", s.key, s.epoch) for s in rows])
        finally:
            con.close()
    used = {s.base_id for s in snaps if s.base_id is not None}
    for part in _parts(recovery_dir):
        con = _connect(part)
        try:
            stale = [(key, epoch) for key, epoch, blob in _rows_of(con, f"{flow_id}.bases")
                     if _load(blob).base_id in used]
            with con:
                con.executemany("DELETE FROM snaps WHERE step_id = ? AND state_key = ? AND snap_epoch = ?",
                                [(f"{flow_id}.bases", key, epoch) for key, epoch in stale])
        finally:
            con.close()



# -- history ----------------------------------------------------------------------------
class ArchiveHistory:
    """JSONL files of contact events (the input topic's format), read in the order given;
    invalid lines go to `dead_letters` with their reason, file and line."""

    def __init__(self, paths: list[Path], dead_letters: Path) -> None:
        self.paths, self.dead_letters = paths, dead_letters
        self.invalid = 0
        self.first_ts: dict[int | None, int] = {}
        self.from_beginning: dict[int | None, bool] = {None: True}  # an archive is taken as the whole history
        self.trusted = True  # a start later than a window's lookback is only warned about

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.paths)

    def prepare(self) -> None:
        """Nothing to learn before reading: an archive is taken as the whole history."""

    def events(self) -> Iterator[list[tuple[int | None, Any]]]:
        with open(self.dead_letters, "wb") as dead:
            for path in self.paths:
                with open(path, "rb") as f:
                    batch: list = []
                    for line_no, raw in enumerate(f, 1):
                        raw = raw.rstrip(b"\r\n")
                        if not raw.strip():
                            continue
                        ev = parse_event(raw)
                        if type(ev) is Invalid:
                            self.invalid += 1
                            letter = DeadLetter(ev.reason, ev.detail, {"file": str(path), "line": line_no}, raw)
                            dead.write(orjson.dumps(letter.record()) + b"\n")
                            continue
                        if ev.ts < self.first_ts.get(None, ev.ts + 1):
                            self.first_ts[None] = ev.ts
                        batch.append((None, ev))
                        if len(batch) >= _BATCH:
                            yield batch
                            batch = []
                    if batch:
                        yield batch


class TopicHistory:
    """The input topic, each partition from its first retained record up to `offsets` (the
    records the snapshots' state has read, exactly)."""

    def __init__(self, kafka: Any, topic: str, offsets: dict[int, int]) -> None:
        self.kafka, self.topic, self.offsets = kafka, topic, offsets
        self.invalid = 0
        self.dead_letters = None
        self.first_ts: dict[int | None, int] = {}
        self.from_beginning: dict[int | None, bool] = {}
        self.trusted = False

    def describe(self) -> str:
        return f"topic {self.topic!r} up to the snapshots' offsets"

    def prepare(self) -> None:
        """Which partitions still hold their beginning (retention deletes it)."""
        from connectors.topic_reader import first_offsets

        for p, low in first_offsets(self.kafka, self.topic, list(self.offsets)).items():
            self.from_beginning[p] = low <= 0

    def events(self) -> Iterator[list[tuple[int | None, Any]]]:
        from connectors.topic_reader import read_partitions

        for records in read_partitions(self.kafka, self.topic, "espresso-backfill", until=self.offsets):
            batch = []
            for p, _, value in records:
                ev = parse_event(value or b"")
                if type(ev) is Invalid:
                    self.invalid += 1  # the run wrote it to the dead-letter topic when it read it
                else:
                    self.first_ts.setdefault(p, ev.ts)
                    batch.append((p, ev))
            yield batch


# -- the backfill -----------------------------------------------------------------------
def backfill(recovery_dir: Path, program: Program, history: Any, input_partitions: int | None = None,
             lateness_ms: int = 60_000, flow_id: str = "espresso") -> BackfillResult:
    """Build the facts `program` reads that the snapshots in `recovery_dir` lack, from `history`,
    and rewrite the snapshots and the definitions record. Checks everything before writing."""
    snaps = _read_snaps(recovery_dir, flow_id)
    if not snaps:
        raise ConfigError(f"--recovery-dir {recovery_dir}: no snapshot of the segment state yet; nothing to "
                          "backfill (a first start builds every segment from the input topic)")
    first = snaps[0].state
    result = BackfillResult()
    if first.facts is None:
        raise ConfigError(f"--recovery-dir {recovery_dir}: the snapshots were made by a version that did not record "
                          "their facts; they cannot be backfilled (start from an empty recovery directory)")
    missing = missing_facts(first.facts, program)
    plan = plan_change(list(first.segments), {**first.facts, **missing}, first.reasons or {}, program)
    if plan.refused:
        raise ConfigError("even with history these definitions cannot switch in: "
                          + "; ".join(f"segment {sid!r}: {why}" for sid, why in plan.refused))
    result.rebuilt = list(plan.rebuilt)
    if not missing:
        _write_definitions(recovery_dir, first)
        return result
    result.facts = sorted(missing)
    readers = [s for s in program.segments if s.id in plan.rebuilt] or list(program.segments)
    lookback = lookback_ms(readers, missing)
    shards = max(int(s.key.split(".")[1]) for s in snaps) + 1
    partitions = input_partitions or max(s.partition for s in snaps) + 1
    held: dict[str, int] = {}
    for s in snaps:
        for cid in unpack_ids(s.state.cids):
            held[cid] = s.partition
    name = detect_partitioner(dict(itertools.islice(held.items(), 20_000)), partitions)
    result.partitioner = name
    place = PARTITIONERS[name] if name else None
    scratch = scratch_program(program, missing)  # only the segments that read the missing facts
    own = [FactFiller(s.state, program, s.frontier, adopt=lambda cid: True, scratch=scratch) for s in snaps]
    fillers: dict[str, list[FactFiller]] = defaultdict(list)
    for s, filler in zip(snaps, own):
        fillers[s.key].append(filler)
    history.prepare()
    if lookback == UNBOUNDED:  # known before reading: refused without reading it all
        _check_whole(history, plan.rebuilt)
    log.info("backfill: %d shard snapshot(s), %d contacts held, %d input partitions x %d shards; facts to build: %s; "
             "history: %s; lookback %s", len(snaps), len(held), partitions, shards, ", ".join(result.facts),
             history.describe(), "the whole history" if lookback == UNBOUNDED else f"{lookback} ms")
    for batch in history.events():
        routed: dict[str, list] = defaultdict(list)
        for partition, ev in batch:
            p = partition if partition is not None else held.get(ev.contact_id)
            if p is None:
                if place is None:
                    result.unplaced += 1
                    continue
                p = place(ev.contact_id.encode(), partitions)
            routed[f"{p}.{shard_of(ev.contact_id, shards)}"].append(ev)
        result.events += len(batch)
        for key, events in routed.items():
            if key not in fillers:  # a shard no snapshot here holds (another process's recovery partitions)
                result.elsewhere += len(events)
            for filler in fillers.get(key, ()):
                filler.feed(events)
    if lookback != UNBOUNDED:
        _check_reach(history, lookback, lateness_ms, min(s.frontier for s in snaps), plan.rebuilt)
    newest = {}
    for s in snaps:  # counts from the newest snapshot of each shard (older ones are filled alike)
        if s.key not in newest or s.epoch > newest[s.key].epoch:
            newest[s.key] = s
    for s, filler in zip(snaps, own):
        filled, report = filler.result()
        s.state = filled
        if newest[s.key] is s:
            result.applied += report.applied
            result.added += report.added
            result.after_cutoff += report.after_cutoff
    result.snapshots = len(snaps)
    result.invalid = history.invalid
    result.dead_letters = history.dead_letters
    _write(recovery_dir, snaps, flow_id)
    _write_definitions(recovery_dir, snaps[0].state)
    return result


def _check_whole(history: Any, segments: list[str]) -> None:
    """Refuse a history that lost its beginning for segments that need all of it."""
    short = [p for p, whole in history.from_beginning.items() if not whole]
    if short:
        raise ConfigError(
            f"segments {', '.join(segments)} need the whole history (a lifetime aggregate, a consent, an "
            f"`inactive`), and {history.describe()} no longer holds its beginning on partition(s) "
            f"{', '.join(map(str, short))} (retention deleted it); give the archive with --history FILE")


def _check_reach(history: Any, lookback: int, lateness_ms: int, cutoff: int, segments: list[str]) -> None:
    """Refuse, before anything is written, a history that does not reach back a window's lookback."""
    need = cutoff - lookback - lateness_ms
    for p, first in history.first_ts.items():
        if first <= need or (p is not None and history.from_beginning.get(p, False)):
            continue
        where = "" if p is None else f" partition {p}"
        msg = (f"segments {', '.join(segments)} need events since {format_ms(max(need, 0))}, and {history.describe()}"
               f"{where} starts at {format_ms(first)}")
        if history.trusted:
            log.warning("%s; if the history begins there, nothing is missing", msg)
            continue
        raise ConfigError(f"{msg}; give an archive that reaches back that far with --history")


def _write_definitions(recovery_dir: Path, state: Any) -> None:
    """The definitions record `espresso run` checks: the snapshots' definitions, with the facts now kept."""
    record_definitions(recovery_dir, state.fingerprint, state.segments, state.facts, state.reasons or {})


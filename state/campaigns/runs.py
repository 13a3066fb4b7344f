"""Open runs of one shard's contacts: columns indexed by slot, per-contact chains, one timer heap.

Why columns: a shop with a birthday campaign holds a pending instant for most of its
contacts for a year, and a post-purchase sequence one per recent order. A Python object
per run costs 150-300 bytes; here a run is a slot in typed arrays (56 bytes with its
contact and payload pointers) and its timer: 4 bytes in an hour bucket while it is far
away, a heap entry (one int packing instant and slot) once its hour is near. Slots are
reused through a free list; a timer entry is checked against its slot when it comes
due, so ending or moving a run never searches for it.
"""

from __future__ import annotations

import heapq
from array import array
from typing import Iterator

from ..timeutil import NEVER

__all__ = ["RunStore", "DATE_STEP", "FREE", "PARKED"]

#: `step` of a slot that holds a contact's next date-trigger instant rather than a run.
DATE_STEP = 0xFFFF
#: `due` of a free slot.
FREE = NEVER
#: `due` of a kept slot with no instant (a date slot whose field became invalid keeps the
#: last year it fired): no timer, never due.
PARKED = 1 << 62
_SLOT = 0xFFFFFFFF
#: Width of a timer bucket: runs due in an hour that has not begun wait as 4-byte slot numbers.
BUCKET_MS = 3_600_000


class RunStore:
    """Slots: `due` (next instant), `start` (trigger instant), `camp` (campaign index), `step` (next step index, or DATE_STEP),
    `rid` (run id, signed 64-bit), `key` (the run-key hash, else the hash of the single
    trigger value exits match on; segment runs: the change's seq; date slots: the last year
    fired), `cid` (contact id), `obj` (None, or what a run must carry: the change id of a
    late segment run, the trigger's match values when they are several, its items). `heads[contact] -> first slot`, `nxt[slot] -> next slot of the contact`."""

    def __init__(self) -> None:
        self.due = array("q")
        self.start = array("q")
        self.camp = array("H")
        self.step = array("H")
        self.nxt = array("i")
        self.rid = array("q")
        self.key = array("q")
        self.cid: list = []
        self.obj: list = []
        self.heads: dict[str, int] = {}
        self.heap: list[int] = []  # (due << 32 | slot) of runs due in hours up to `near`
        self.near = -1  # the latest hour whose bucket has been moved into `heap`
        self.buckets: dict[int, array] = {}  # hour -> slots due in it (may be stale)
        self.hours: list[int] = []  # heap of the hours in `buckets`
        self.far = 0  # entries in `buckets`, stale ones included
        self.free = -1  # head of the free list (through `nxt`)
        self.open = 0  # slots in use

    # -- slots --------------------------------------------------------------------
    def new(self, cid: str, camp: int, step: int, start: int, due: int, rid: int, key: int = 0,
            obj: object = None) -> int:
        """A slot for `cid`, chained first among its runs and scheduled at `due`."""
        s = self.free
        head = self.heads.get(cid, -1)
        if s >= 0:
            self.free = self.nxt[s]
            self.due[s], self.start[s] = due, start
            self.camp[s], self.step[s], self.nxt[s] = camp, step, head
            self.rid[s], self.key[s] = rid, key
            self.cid[s], self.obj[s] = cid, obj
        else:
            s = len(self.due)
            self.due.append(due)
            self.start.append(start)
            self.camp.append(camp)
            self.step.append(step)
            self.nxt.append(head)
            self.rid.append(rid)
            self.key.append(key)
            self.cid.append(cid)
            self.obj.append(obj)
        self.heads[cid] = s
        self.open += 1
        self._timer(s, due)
        return s

    def move(self, s: int, due: int) -> None:
        """Reschedule slot `s` (its old timer entry becomes stale)."""
        self.due[s] = due
        if len(self.heap) + self.far > 2 * self.open + 4096:
            self._compact()
        self._timer(s, due)

    def _timer(self, s: int, due: int) -> None:
        if due >= PARKED:
            return
        hour = due // BUCKET_MS
        if hour <= self.near:
            heapq.heappush(self.heap, (due << 32) | s)
            return
        b = self.buckets.get(hour)
        if b is None:
            b = self.buckets[hour] = array("I")
            heapq.heappush(self.hours, hour)
        b.append(s)
        self.far += 1

    def _compact(self) -> None:
        """Drop stale timer entries (a moved or ended run leaves its old entry behind)."""
        self.heap, self.buckets, self.hours, self.far = [], {}, [], 0
        due = self.due
        for s in range(len(due)):
            if due[s] != FREE:
                self._timer(s, due[s])

    def end(self, s: int) -> None:
        """Free slot `s`: unchain it from its contact."""
        cid = self.cid[s]
        head = self.heads.get(cid, -1)
        nxt = self.nxt
        if head == s:
            if nxt[s] < 0:
                del self.heads[cid]
            else:
                self.heads[cid] = nxt[s]
        else:
            p = head
            while p >= 0 and nxt[p] != s:
                p = nxt[p]
            if p >= 0:
                nxt[p] = nxt[s]
        self.due[s] = FREE
        self.cid[s] = self.obj[s] = None
        nxt[s] = self.free
        self.free = s
        self.open -= 1

    def of(self, cid: str) -> Iterator[int]:
        """Slots of a contact (safe to end the slot just yielded)."""
        s = self.heads.get(cid, -1)
        nxt = self.nxt
        while s >= 0:
            n = nxt[s]
            yield s
            s = n

    def has(self, cid: str) -> bool:
        return cid in self.heads

    # -- timers -------------------------------------------------------------------
    def next_due(self) -> int | None:
        """The earliest instant a run is due (moves the earliest hour's bucket to the heap)."""
        heap, due, hours = self.heap, self.due, self.hours
        while True:
            while heap:
                e = heap[0]
                if due[e & _SLOT] == e >> 32:
                    break
                heapq.heappop(heap)
            if hours and (not heap or hours[0] * BUCKET_MS <= heap[0] >> 32):
                self._pull()
                continue
            return heap[0] >> 32 if heap else None

    def pop_due(self, before: int) -> int:
        """Pop the next live timer due strictly before `before`: its slot, or -1."""
        heap, due, bound = self.heap, self.due, before << 32
        pop = heapq.heappop
        while True:
            while heap and heap[0] < bound:
                e = pop(heap)
                s = e & _SLOT
                if due[s] == e >> 32:
                    return s
            if not self.hours or self.hours[0] * BUCKET_MS >= before:
                return -1
            self._pull()

    def _pull(self) -> None:
        """Move the earliest hour's bucket into the heap."""
        hour = heapq.heappop(self.hours)
        slots = self.buckets.pop(hour)
        self.far -= len(slots)
        if hour > self.near:
            self.near = hour
        heap, due = self.heap, self.due
        for s in slots:
            d = due[s]
            if d != FREE and d // BUCKET_MS == hour:
                heapq.heappush(heap, (d << 32) | s)

    # -- snapshots ----------------------------------------------------------------
    def __getstate__(self) -> tuple:
        live = [s for s in range(len(self.due)) if self.due[s] != FREE]
        cols = tuple(array(a.typecode, (a[s] for s in live))
                     for a in (self.due, self.start, self.camp, self.step, self.rid, self.key))
        return (1, cols, [self.cid[s] for s in live], [self.obj[s] for s in live])

    def __setstate__(self, state: tuple) -> None:
        self.__init__()  # type: ignore[misc]
        _, cols, cids, objs = state
        due, start, camp, step, rid, key = cols
        for i, cid in enumerate(cids):
            self.new(cid, camp[i], step[i], start[i], due[i], rid[i], key[i], objs[i])

    def bytes_used(self) -> tuple[int, int]:
        """(bytes of the store: columns, chains, heap entries; bytes of what runs carry for
        their templates: the trigger's items, deep), for benchmarks and docs."""
        import sys

        n = sum(sys.getsizeof(a) for a in
                (self.due, self.start, self.camp, self.step, self.nxt, self.rid, self.key))
        n += sys.getsizeof(self.cid) + sys.getsizeof(self.obj) + sys.getsizeof(self.heads) + sys.getsizeof(self.heap)
        n += sum(sys.getsizeof(e) for e in self.heap)
        n += sys.getsizeof(self.buckets) + sys.getsizeof(self.hours) + sum(sys.getsizeof(b) for b in self.buckets.values())
        n += sum(sys.getsizeof(v) for v in self.heads.values() if v > 256)
        return n, sum(_deep(o) for o in self.obj if o is not None)


def _deep(o: object) -> int:
    import sys

    n = sys.getsizeof(o)
    if isinstance(o, dict):
        return n + sum(_deep(k) + _deep(v) for k, v in o.items())
    if isinstance(o, (list, tuple, set, frozenset)):
        return n + sum(_deep(x) for x in o)
    return n

"""Open runs of one shard's contacts: columns indexed by slot, per-contact chains, one timer heap.

Why columns: a shop with a birthday campaign holds a pending instant for most of its
contacts for a year, and a post-purchase sequence one per recent order. A Python object
per run costs 150-300 bytes; here a run is a slot in typed arrays (~70 bytes) plus its
heap entry (one int packing the instant and the slot). Slots are reused through a free
list; a heap entry is checked against its slot when it comes due, so ending or moving a
run never searches the heap.
"""

from __future__ import annotations

import heapq
from array import array
from typing import Iterator

from ..timeutil import NEVER

__all__ = ["RunStore", "DATE_STEP", "FREE"]

#: `step` of a slot that holds a contact's next date-trigger instant rather than a run.
DATE_STEP = 0xFFFF
#: `due` of a free slot.
FREE = NEVER
_SLOT = 0xFFFFFFFF


class RunStore:
    """Slots: `due` (next instant), `first` (when the current step was first due), `start`
    (trigger instant), `camp` (campaign index), `step` (next step index, or DATE_STEP),
    `rid` (run id, signed 64-bit), `key` (run-key hash; date slots: last year fired), `mk`
    (hash of the single trigger value exits match on), `cid` (contact id), `obj` (None, or
    what a run must carry: a one-message campaign's change id, the trigger's match values
    or items). `heads[contact] -> first slot`, `nxt[slot] -> next slot of the contact`."""

    def __init__(self) -> None:
        self.due = array("q")
        self.first = array("q")
        self.start = array("q")
        self.camp = array("H")
        self.step = array("H")
        self.nxt = array("i")
        self.rid = array("q")
        self.key = array("q")
        self.mk = array("q")
        self.cid: list = []
        self.obj: list = []
        self.heads: dict[str, int] = {}
        self.heap: list[int] = []
        self.free = -1  # head of the free list (through `nxt`)
        self.open = 0  # slots in use

    # -- slots --------------------------------------------------------------------
    def new(self, cid: str, camp: int, step: int, start: int, due: int, rid: int, key: int = 0, mk: int = 0,
            obj: object = None) -> int:
        """A slot for `cid`, chained first among its runs and scheduled at `due`."""
        s = self.free
        head = self.heads.get(cid, -1)
        if s >= 0:
            self.free = self.nxt[s]
            self.due[s], self.first[s], self.start[s] = due, due, start
            self.camp[s], self.step[s], self.nxt[s] = camp, step, head
            self.rid[s], self.key[s], self.mk[s] = rid, key, mk
            self.cid[s], self.obj[s] = cid, obj
        else:
            s = len(self.due)
            self.due.append(due)
            self.first.append(due)
            self.start.append(start)
            self.camp.append(camp)
            self.step.append(step)
            self.nxt.append(head)
            self.rid.append(rid)
            self.key.append(key)
            self.mk.append(mk)
            self.cid.append(cid)
            self.obj.append(obj)
        self.heads[cid] = s
        self.open += 1
        heapq.heappush(self.heap, (due << 32) | s)
        return s

    def move(self, s: int, due: int, first: bool = False) -> None:
        """Reschedule slot `s` (its old heap entry becomes stale)."""
        self.due[s] = due
        if first:
            self.first[s] = due
        heapq.heappush(self.heap, (due << 32) | s)

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
        heap, due = self.heap, self.due
        while heap:
            e = heap[0]
            s, t = e & _SLOT, e >> 32
            if due[s] == t:
                return t
            heapq.heappop(heap)
        return None

    def pop_due(self, before: int) -> int:
        """Pop the next live heap entry due strictly before `before`: its slot, or -1."""
        heap, due, bound = self.heap, self.due, before << 32
        pop = heapq.heappop
        while heap and heap[0] < bound:
            e = pop(heap)
            s = e & _SLOT
            if due[s] == e >> 32:
                return s
        return -1

    # -- snapshots ----------------------------------------------------------------
    def __getstate__(self) -> tuple:
        live = [s for s in range(len(self.due)) if self.due[s] != FREE]
        cols = tuple(array(a.typecode, (a[s] for s in live))
                     for a in (self.due, self.first, self.start, self.camp, self.step, self.rid, self.key, self.mk))
        return (1, cols, [self.cid[s] for s in live], [self.obj[s] for s in live])

    def __setstate__(self, state: tuple) -> None:
        self.__init__()  # type: ignore[misc]
        _, cols, cids, objs = state
        due, first, start, camp, step, rid, key, mk = cols
        for i, cid in enumerate(cids):
            s = self.new(cid, camp[i], step[i], start[i], due[i], rid[i], key[i], mk[i], objs[i])
            self.first[s] = first[i]

    def bytes_used(self) -> int:
        """Memory of the store itself (arrays, lists, chains, heap), for benchmarks."""
        import sys

        n = sum(a.buffer_info()[1] * a.itemsize for a in
                (self.due, self.first, self.start, self.camp, self.step, self.nxt, self.rid, self.key, self.mk))
        n += sys.getsizeof(self.cid) + sys.getsizeof(self.obj) + sys.getsizeof(self.heads) + sys.getsizeof(self.heap)
        n += sum(sys.getsizeof(e) for e in self.heap)
        n += sum(sys.getsizeof(v) for v in self.heads.values() if v > 256)
        n += sum(sys.getsizeof(o) for o in self.obj if o is not None)  # shallow: items lists are the events'
        return n

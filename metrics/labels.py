"""Label vocabularies: every label value a metric can take comes from a bounded set.

The fixed sets restate docs/interfaces.md (reason codes, outcomes) and SPEC.md (event types);
`tests/metrics/test_labels.py` checks they still match the code that produces them.
Configured ids (segments, campaigns) are accepted when declared, and a few undeclared ones
first-come; anything beyond falls into `other`, so no input can grow a metric without bound.
A contact id is never a label.
"""

from __future__ import annotations

import threading
from typing import Iterable

from state.campaigns.records import OUTCOMES as DECISION_OUTCOMES
from state.events import REASONS

__all__ = [
    "OTHER", "NONE", "EVENT_TYPES", "INVALID_REASONS", "DIRECTIONS", "OUTCOMES", "CHANNELS", "KAFKA_OPS",
    "CONVERSION_GROUPS", "TOUCH_IGNORED_REASONS", "BoundedLabel",
]

OTHER = "other"
#: The variant of a campaign without A/B test, the step of a one-message campaign, the
#: variant of a holdout conversion: the empty value (in PromQL, the label is absent).
NONE = ""

#: Event types the built-in segments and campaigns use (SPEC.md); others count as `other`
#: unless the flow declares them (types used by custom segments).
EVENT_TYPES = (
    "email_open", "email_click", "sms_click", "push_open", "app_open", "order_placed",
    "checkout_started", "consent_changed", "profile_updated",
)
#: Dead-letter reason codes (docs/interfaces.md).
INVALID_REASONS = REASONS
DIRECTIONS = ("enter", "exit")
#: Decision outcomes of the retargeting sender (docs/interfaces.md).
OUTCOMES = DECISION_OUTCOMES
CHANNELS = ("email", "sms", "push", "webhook")
KAFKA_OPS = ("consume", "produce")
#: Conversion records' `group` (docs/interfaces.md).
CONVERSION_GROUPS = ("message", "sent", "holdout")
#: Touches the engine ignored: naming no message released to that contact (`unknown`), or a
#: privacy proxy's open (`machine`, `properties.machine_open: true`).
TOUCH_IGNORED_REASONS = ("unknown", "machine")


class BoundedLabel:
    """Maps raw values onto at most `len(known) + extra` label values plus `other`.

    Known values always pass; an unknown value passes if it was seen before or while fewer
    than `extra` unknown values have been admitted; every later one becomes `other`.
    Thread-safe: Bytewax worker threads of one process share an instance.
    """

    __slots__ = ("name", "_allowed", "_extra_left", "_lock")

    def __init__(self, name: str, known: Iterable[str] = (), extra: int = 0) -> None:
        if extra < 0:
            raise ValueError(f'"extra" must be >= 0: {extra}')
        self.name = name
        self._allowed: dict[str, str] = {OTHER: OTHER}
        self._extra_left = extra
        self._lock = threading.Lock()
        self.declare(known)

    def declare(self, values: Iterable[str]) -> None:
        """Make `values` known (they never fall into `other` and use none of `extra`)."""
        with self._lock:
            for v in values:
                v = str(v)
                self._allowed[v] = v

    def __call__(self, value: object) -> str:
        v = value if isinstance(value, str) else str(value)
        hit = self._allowed.get(v)
        if hit is not None:
            return hit
        with self._lock:
            hit = self._allowed.get(v)
            if hit is not None:
                return hit
            if self._extra_left > 0 and v:
                self._extra_left -= 1
                self._allowed[v] = v
                return v
        return OTHER

    def values(self) -> tuple[str, ...]:
        """Label values admitted so far (declared, admitted extras and `other`)."""
        return tuple(self._allowed)

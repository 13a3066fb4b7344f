"""Names of the built-in definition files, importable without loading any of them (the CLI
checks `--campaigns builtin:NAME` before it loads the campaign engine)."""

from __future__ import annotations

__all__ = ["BUILTIN_CAMPAIGN_FILES", "is_builtin_name"]

#: Built-in campaign files by name: `--campaigns builtin` loads them all, `builtin:NAME` one.
BUILTIN_CAMPAIGN_FILES = {"espresso": "builtin/campaigns-espresso.yaml", "shop": "builtin/campaigns-shop.yaml"}


def is_builtin_name(value: object) -> bool:
    """`builtin`, or `builtin:NAME` of a built-in campaign file."""
    if not isinstance(value, str):
        return False
    return value == "builtin" or (value.startswith("builtin:") and value[8:] in BUILTIN_CAMPAIGN_FILES)

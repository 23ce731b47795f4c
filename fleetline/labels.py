"""How a label is spelled in text, wherever people type one (the agent's --label, the
CLI's --label, the agents listing's `label` parameter, the console's label field):
`key=value`, the key not empty, the value anything (an `=` in it included)."""

from __future__ import annotations


def split_label(pair: str) -> tuple[str, str]:
    """("key", "value") from "key=value"; ValueError when it is not one."""
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise ValueError(pair)
    return key, value

"""Cutting UTF-8 on whole characters, for the agent (its output stream's chunks) and dispatch
(a stream's cap) alike. Standard library only: the agent's distribution carries it."""

from __future__ import annotations


def head(data: bytes, budget: int) -> bytes:
    """The longest start of `data` (valid UTF-8) within `budget` bytes: whole characters."""
    if len(data) <= budget:
        return data
    end = max(0, budget)
    while end > 0 and (data[end] & 0xC0) == 0x80:  # data[end] continues a character
        end -= 1
    return data[:end]

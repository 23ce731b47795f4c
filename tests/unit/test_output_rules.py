"""Where a chunk of output goes: pure decisions over bytes, including every way a chunk
can arrive (again, early, late, overlapping, past the cap, split inside a character)."""

from __future__ import annotations

import random

from fleetline.utf8 import head
from services.dispatch.output.rules import APPEND, CONFLICT, SAME, assemble, place, readable_from

CAP = 100


def _apply(stream: bytearray, truncated: bool, offset: int, data: bytes, cap: int = CAP):
    overlap = bytes(stream[offset:min(len(stream), offset + len(data))]) if offset < len(stream) else b""
    p = place(len(stream), truncated, offset, data, overlap, cap)
    if p.kind == APPEND:
        assert p.at == len(stream)
        stream += p.data
    return p


def test_chunks_in_order_append():
    s = bytearray()
    assert _apply(s, False, 0, b"hello ").kind == APPEND
    assert _apply(s, False, 6, b"world").kind == APPEND
    assert bytes(s) == b"hello world"


def test_the_same_chunk_again_changes_nothing():
    s = bytearray(b"hello world")
    assert _apply(s, False, 0, b"hello ").kind == SAME
    assert _apply(s, False, 6, b"world").kind == SAME
    assert bytes(s) == b"hello world"


def test_a_gap_is_a_conflict_and_changes_nothing():
    s = bytearray(b"hello")
    assert _apply(s, False, 6, b"world").kind == CONFLICT
    assert bytes(s) == b"hello"


def test_an_overlap_that_disagrees_is_a_conflict():
    s = bytearray(b"hello")
    assert _apply(s, False, 3, b"XXworld").kind == CONFLICT
    assert bytes(s) == b"hello"


def test_an_overlap_that_agrees_appends_only_the_new_part():
    s = bytearray(b"hello")
    p = _apply(s, False, 3, b"lo world")
    assert (p.kind, p.at, p.data) == (APPEND, 5, b" world")
    assert bytes(s) == b"hello world"


def test_past_the_cap_the_stream_is_cut_on_a_character_and_marked():
    s = bytearray(b"a" * 98)
    p = _apply(s, False, 98, "xé€".encode())  # 1 + 2 + 3 bytes; room for 2
    assert p.truncated and p.data == b"x"  # é would not fit whole
    assert _apply(s, True, 99, b"more").truncated  # every later chunk: truncated, nothing stored
    assert bytes(s) == b"a" * 98 + b"x"


def test_the_cap_reached_exactly_is_not_yet_truncated():
    s = bytearray(b"a" * 90)
    assert not _apply(s, False, 90, b"b" * 10).truncated
    assert _apply(s, False, 100, b"c").truncated


def test_the_cut_never_splits_a_character():
    data = "a€b€€".encode()
    for budget in range(len(data) + 1):
        kept = head(data, budget)
        kept.decode("utf-8")  # whole characters
        assert len(kept) <= budget and data.startswith(kept)
        rest = data[len(kept):].decode("utf-8")
        assert not rest or len(kept) + len(rest[0].encode()) > budget  # the longest such start


def test_assemble_and_readable_from():
    chunks = [(0, "abc"), (3, "dé"), (6, "f")]
    assert assemble(chunks, 0, 7) == "abcdéf".encode()
    assert assemble(chunks, 2, 5) == "cdé".encode()[:3]
    assert readable_from("é".encode()[1:] + b"x") == 1
    assert readable_from(b"x") == 0


def test_any_sequence_of_replays_and_reorders_yields_a_prefix_of_the_stream():
    rng = random.Random(7)
    for _ in range(300):
        whole = "".join(rng.choice("ab€é\n") for _ in range(rng.randrange(1, 60))).encode()
        bounds = sorted({0, len(whole), *(rng.randrange(len(whole) + 1) for _ in range(4))})
        pieces = [(a, whole[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
        pieces = [(a, d) for a, d in pieces if d.decode("utf-8", "ignore").encode() == d]  # whole characters
        sent = pieces + [rng.choice(pieces) for _ in range(len(pieces))] if pieces else []
        rng.shuffle(sent)
        s = bytearray()
        for offset, data in sent:
            _apply(s, False, offset, data, cap=1000)
        assert whole.startswith(bytes(s))

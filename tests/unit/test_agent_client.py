"""The agent's reading of server answers: malformed or oversized ones are refused before
they reach command handling."""

import httpx
import pytest

from agent.client import MAX_ANSWER_BYTES, _read_capped, poll_answer_problem

GOOD = {"commands": [{"id": "c1", "type": "ping", "params": {}, "run_timeout_s": 60}], "poll_interval_s": 5}


def test_a_well_formed_answer_passes():
    assert poll_answer_problem(GOOD) is None
    assert poll_answer_problem({"commands": [], "poll_interval_s": 300}) is None


@pytest.mark.parametrize("body", [
    {"commands": [{"type": "ping"}], "poll_interval_s": 5},
    {"commands": [{"id": "", "type": "ping"}], "poll_interval_s": 5},
    {"commands": [{"id": 7, "type": "ping"}], "poll_interval_s": 5},
    {"commands": [{"id": "c", "type": None}], "poll_interval_s": 5},
    {"commands": [{"id": "c", "type": "ping", "params": []}], "poll_interval_s": 5},
    {"commands": [{"id": "c", "type": "ping", "run_timeout_s": "1h"}], "poll_interval_s": 5},
    {"commands": ["c"], "poll_interval_s": 5},
    {"commands": {"id": "c"}, "poll_interval_s": 5},
    {"commands": [], "poll_interval_s": "soon"},
    {"commands": [], "poll_interval_s": True},
    {"commands": [], "poll_interval_s": -1},
    {"commands": []},
])
def test_malformed_answers_are_named(body):
    assert poll_answer_problem(body)


def test_answers_over_the_cap_are_not_read_to_the_end():
    assert _read_capped(httpx.Response(200, content=b"x" * 100)) == b"x" * 100
    assert _read_capped(httpx.Response(200, content=b"x" * (MAX_ANSWER_BYTES + 1))) is None

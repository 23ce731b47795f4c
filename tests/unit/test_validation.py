"""Request parsing refuses what PostgreSQL or the contract would refuse, naming the field."""

import uuid
from datetime import datetime, timezone

import pytest
from starlette.requests import Request

from services.common.errors import ApiError
from services.common.paging import FIRST_PAGE, decode_cursor, encode_cursor, next_cursor
from services.common.validation import (
    Int,
    JsonObject,
    Str,
    StrMap,
    check_text,
    nullable,
    parse_json_object,
    parse_timestamp,
    parse_uuid,
    query_int,
    take,
)


def refused(fn, *args, field=None):
    with pytest.raises(ApiError) as err:
        fn(*args)
    assert err.value.status == 400 and err.value.code == "invalid_request"
    if field:
        assert err.value.field == field
    return err.value


def request(query: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": query.encode(),
                    "headers": []})


@pytest.mark.parametrize("raw", ["", "[]", "1", "nope", "{", '{"a": NaN}', '{"a": Infinity}',
                                 '{"a": -Infinity}'])
def test_bodies_that_are_not_one_json_object_are_refused(raw):
    refused(parse_json_object, raw.encode())


def test_invalid_utf8_is_refused():
    refused(parse_json_object, b'{"a": "\xff"}')


@pytest.mark.parametrize("value", ["a\x00b", "\ud800", {"k": ["x\x00"]}, {"\x00": 1}])
def test_text_postgresql_cannot_store_is_refused_with_its_field(value):
    refused(check_text, value, "params", field="params")


def test_strings_ints_and_objects_are_checked_against_their_bounds():
    assert Str(1, 3)("abc", "f") == "abc"
    refused(Str(1, 3), "abcd", "f", field="f")
    refused(Str(1, 3), 5, "f")
    refused(Str(1, 9, pattern=r"[a-z]+"), "A", "f")
    assert Int(0, 5)(5, "n") == 5
    for bad in (6, -1, True, 1.0, "1", None):
        refused(Int(0, 5), bad, "n", field="n")
    refused(JsonObject(10), {"k": "x" * 20}, "params")
    refused(StrMap(), {"k": 1}, "labels")


def test_take_uses_defaults_for_missing_and_null_and_requires_the_rest():
    assert take({}, "n", Int(0, 5), 3) == 3
    assert take({"n": None}, "n", Int(0, 5), 3) == 3
    refused(take, {}, "n", Int(0, 5), field="n")
    assert take({"k": None}, "k", nullable(Str()), None) is None


@pytest.mark.parametrize("raw", ["²", "٣", "５", "+5", "0x10", "1e3", " 5", "5 ", "", "9999999999"])
def test_numeric_query_parameters_must_be_ascii_digits(raw):
    refused(query_int, request(f"limit={raw}"), "limit", 1, 100, 10)


def test_query_ints_in_range_are_read_and_absent_ones_default():
    assert query_int(request("limit=7"), "limit", 1, 100, 10) == 7
    assert query_int(request(""), "limit", 1, 100, 10) == 10
    refused(query_int, request("limit=0"), "limit", 1, 100, 10)


def test_timestamps_become_utc_and_need_a_zone():
    assert parse_timestamp("2026-11-27T10:41:00+02:00", "t") == datetime(2026, 11, 27, 8, 41, tzinfo=timezone.utc)
    assert parse_timestamp("2026-11-27T10:41:00Z", "t").tzinfo == timezone.utc
    for bad in ("2026-11-27T10:41:00", "yesterday", 5, "2026-13-01T00:00:00Z"):
        refused(parse_timestamp, bad, "t", field="t")


def test_uuids_are_canonicalised():
    u = uuid.uuid4()
    assert parse_uuid(str(u).upper(), "id") == str(u)
    refused(parse_uuid, "not-a-uuid", "id", field="id")


def test_a_cursor_round_trips_and_the_first_page_sorts_after_everything():
    at, rid = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc), uuid.uuid4()
    assert decode_cursor(encode_cursor(at, rid)) == (at, rid)
    assert decode_cursor(None) == FIRST_PAGE and decode_cursor("") == FIRST_PAGE


@pytest.mark.parametrize("cursor", ["%%%", "bm90IGEgY3Vyc29y", "MjAyNi0wMS0wMnxub3QtYS11dWlk"])
def test_cursors_this_api_never_returned_are_refused(cursor):
    refused(decode_cursor, cursor, field="before")


def test_next_cursor_only_when_there_is_more():
    rows = [{"created_at": datetime(2026, 1, d, tzinfo=timezone.utc), "id": uuid.uuid4()} for d in (3, 2, 1)]
    assert next_cursor(rows, 3) is None
    assert decode_cursor(next_cursor(rows, 2)) == (rows[1]["created_at"], rows[1]["id"])

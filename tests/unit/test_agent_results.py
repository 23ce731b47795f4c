"""Whatever a command prints, the result the agent sends is one the server accepts: UTF-8
text without NUL, at most 64 KiB, ending with what the command printed last."""

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.results import CUT_MARK, MAX_OUTPUT_BYTES, clean_text, fit_output


def acceptable(out: str, limit: int = MAX_OUTPUT_BYTES) -> bool:
    encoded = out.encode("utf-8")  # raises on a lone surrogate
    return "\x00" not in out and len(encoded) <= limit


@settings(max_examples=300)
@given(st.binary(max_size=200_000), st.text(max_size=200))
def test_any_bytes_become_an_acceptable_output_that_keeps_its_end(data, note):
    out = fit_output(data, note)
    assert acceptable(out)
    cleaned, suffix = clean_text(data), clean_text(note)
    if cleaned and suffix:
        suffix = "\n" + suffix
    assert out.endswith(suffix)
    body = out[: len(out) - len(suffix)]
    if body.startswith(CUT_MARK) and not cleaned.startswith(CUT_MARK):
        body = body[len(CUT_MARK):]
        assert len(body.encode()) >= MAX_OUTPUT_BYTES - len(CUT_MARK) - len(suffix.encode()) - 3
    assert cleaned.endswith(body)


@given(st.text(max_size=5000), st.integers(min_value=0, max_value=4000))
def test_small_budgets_hold_too(text, limit):
    assert acceptable(fit_output(text, "note", limit=limit), limit)


def test_a_long_output_is_cut_at_its_beginning_and_says_so():
    data = b"".join(b"line %06d\n" % i for i in range(20000))
    out = fit_output(data, "[timeout: killed after 5 s]")
    assert out.startswith(CUT_MARK) and out.endswith("line 019999\n\n[timeout: killed after 5 s]")
    assert len(out.encode()) <= MAX_OUTPUT_BYTES


def test_nul_and_invalid_utf8_are_replaced_not_dropped():
    assert fit_output(b"a\x00b\xffc") == "a\ufffdb\ufffdc"
    assert fit_output("lone \udc80 surrogate") == "lone ? surrogate"


def test_a_short_output_is_untouched():
    assert fit_output("hello") == "hello" and fit_output("", "note") == "note"

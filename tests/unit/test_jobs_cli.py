"""`fleetline jobs`: what it sends, when it stops waiting, and how progress reads."""

import io
from types import SimpleNamespace

import pytest

from fleetline.cli import jobs as jobs_cli
from fleetline.cli.admin_client import CliError
from fleetline.statuses import TARGET_STATUSES as STATUSES


def job(status="running", approvals=(), required=0, **counts):
    full = {**dict.fromkeys(STATUSES, 0), **counts}
    return {"id": "j1", "status": status, "target_count": sum(full.values()), "counts": full,
            "approvals": list(approvals), "approvals_required": required}


def args(**kw):
    base = dict(label=[], agent=[], all_active=False, max_in_flight=None, max_failures=None,
                idempotency_key=None, dry_run=False)
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("given,selector", [
    (dict(label=["env=prod", "role=web"]), {"labels": {"env": "prod", "role": "web"}}),
    (dict(label=["note=a=b"]), {"labels": {"note": "a=b"}}),
    (dict(agent=["a1", "a2"]), {"agent_ids": ["a1", "a2"]}),
    (dict(all_active=True), {"all_active": True}),
])
def test_the_selector_comes_from_exactly_one_targeting_flag(given, selector):
    assert jobs_cli.selector(args(**given)) == selector


@pytest.mark.parametrize("given", [dict(), dict(label=["a=b"], all_active=True), dict(label=["novalue"]),
                                   dict(label=["=x"])])
def test_no_or_several_targeting_flags_or_a_bad_label_are_refused(given):
    with pytest.raises(CliError):
        jobs_cli.selector(args(**given))


@pytest.mark.parametrize("text,sent", [(None, None), ("10", 10), ("25%", "25%"), ("ten", "ten")])
def test_the_window_is_sent_as_a_number_or_as_given(text, sent):
    assert jobs_cli.window(text) == sent


def test_waiting_ends_only_when_the_job_stopped_and_every_target_is_final():
    assert not jobs_cli.finished(job("running", succeeded=2))
    assert not jobs_cli.finished(job("halted", failed=2, running=1, skipped=3))
    assert jobs_cli.finished(job("halted", failed=2, succeeded=1, skipped=3))
    assert jobs_cli.finished(job("completed", succeeded=3))


def test_only_a_job_where_every_target_succeeded_exits_zero():
    assert jobs_cli.all_succeeded(job("completed", succeeded=3))
    assert not jobs_cli.all_succeeded(job("completed", succeeded=2, cancelled=1))


def test_a_job_awaiting_approval_says_so_and_is_not_finished_until_decided():
    waiting = job("awaiting_approval", required=2, approvals=[{"operator": {"name": "ann"}}], awaiting_approval=3)
    assert jobs_cli.progress(waiting) == "awaiting approval: 1 of 2 (ann); 3 targets"
    assert not jobs_cli.finished(waiting)
    assert jobs_cli.finished(job("denied", denied=3))
    assert not jobs_cli.all_succeeded(job("denied", denied=3))


def test_progress_fills_with_the_final_share_and_names_the_counts():
    line = jobs_cli.progress(job("running", succeeded=5, running=2, waiting=3), width=10)
    assert line == "[#####.....] 5/10 running  waiting=3 running=2 succeeded=5"


def test_follow_prints_a_line_per_change_when_not_a_terminal():
    answers = iter([job("running", waiting=1, running=1), job("running", waiting=1, running=1),
                    job("running", running=1, succeeded=1), job("completed", succeeded=2)])
    out = io.StringIO()
    last = jobs_cli.follow(lambda: next(answers), timeout=5, out=out, interval=0)
    assert last["status"] == "completed"
    assert len(out.getvalue().splitlines()) == 3  # the repeated state is not printed twice

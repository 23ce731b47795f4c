"""The launcher's restart policy: backoff from 1 s doubling to 30 s; the fifth death of one
child within 60 s is a crash loop."""

from fleetline.cli.restarts import LOOP_RESTARTS, MAX_DELAY_S, Restarts


def test_backoff_doubles_from_one_second_to_the_cap():
    r = Restarts()
    delays = []
    for t in range(0, 400, 100):  # deaths far apart: never a loop, the delay stays short
        r.died(float(t))
        delays.append(r.delay_s())
        assert not r.crash_loop()
    assert delays == [1.0, 1.0, 1.0, 1.0]
    r = Restarts()
    r.died(0.0)
    r.died(1.0)
    r.died(3.0)
    assert r.delay_s() == 4.0
    r.deaths = [0.0] * 4
    assert r.delay_s() == 8.0 and min(MAX_DELAY_S, 2 ** 9) == MAX_DELAY_S


def test_the_fifth_death_within_a_minute_is_a_crash_loop():
    r = Restarts()
    for t in (0.0, 1.0, 3.0, 7.0):
        r.died(t)
        assert not r.crash_loop()
    r.died(15.0)
    assert r.crash_loop() and len(r.deaths) == LOOP_RESTARTS


def test_deaths_older_than_the_window_are_forgotten():
    r = Restarts()
    for t in (0.0, 1.0, 3.0, 7.0):
        r.died(t)
    r.died(61.5)  # the first two are out of the window by now
    assert not r.crash_loop() and r.deaths == [3.0, 7.0, 61.5]

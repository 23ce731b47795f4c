"""Parked polls (services/dispatch/wakeups/parking.py, waiters.py), in one event loop: what ends a park, and
that an ended park leaves nothing behind."""

from __future__ import annotations

import asyncio

from services.dispatch.wakeups.waiters import DEADLINE, DEPARTED, WOKEN, Waiters


class Client:
    """An ASGI `receive` for a GET whose body was read: it waits until the client leaves."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.request_read = False

    async def receive(self) -> dict:
        if not self.request_read:
            self.request_read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 5))


def test_a_wake_ends_every_park_of_that_agent_and_no_other():
    async def scenario():
        waiters, loop = Waiters(), asyncio.get_running_loop()
        far = loop.time() + 60
        parks = [asyncio.create_task(waiters.park(agent, far, Client().receive)) for agent in ("a", "a", "b")]
        await asyncio.sleep(0)
        assert waiters.held() == 3
        waiters.wake("a")
        done, pending = await asyncio.wait(parks, timeout=1)
        assert [t.result() for t in parks[:2]] == [WOKEN, WOKEN] and pending == {parks[2]}
        assert waiters.keys() == ["b"]
        parks[2].cancel()
        await asyncio.gather(parks[2], return_exceptions=True)
        assert waiters.held() == 0 and waiters.keys() == []

    run(scenario())


def test_the_deadline_ends_a_park_and_a_wake_after_it_changes_nothing():
    async def scenario():
        waiters, loop = Waiters(), asyncio.get_running_loop()
        t0 = loop.time()
        assert await waiters.park("a", t0 + 0.05, Client().receive) == DEADLINE
        assert loop.time() - t0 >= 0.05
        waiters.wake("a")  # nobody parked: nothing to do, nothing raised
        assert waiters.held() == 0

    run(scenario())


def test_a_client_that_leaves_ends_its_park_as_departed():
    async def scenario():
        waiters, loop = Waiters(), asyncio.get_running_loop()
        client = Client()
        park = asyncio.create_task(waiters.park("a", loop.time() + 60, client.receive))
        await asyncio.sleep(0)
        client.gone.set()
        assert await park == DEPARTED and waiters.held() == 0

    run(scenario())


def test_a_recheck_ends_the_park_as_woken_before_the_deadline():
    async def scenario():
        waiters, loop = Waiters(), asyncio.get_running_loop()
        t0 = loop.time()
        assert await waiters.park("a", t0 + 60, Client().receive, recheck_s=0.05) == WOKEN
        assert loop.time() - t0 < 1

    run(scenario())


def test_a_lease_coming_due_wakes_its_agent():
    async def scenario():
        waiters, loop = Waiters(), asyncio.get_running_loop()
        park = asyncio.create_task(waiters.park("a", loop.time() + 60, Client().receive))
        await asyncio.sleep(0)
        t0 = loop.time()
        waiters.lease_due_in("a", 0.05)
        assert await park == WOKEN and 0.05 <= loop.time() - t0 < 1

    run(scenario())


def test_cancelling_a_parked_task_is_a_cancellation_not_a_wake():
    async def scenario():
        waiters, loop = Waiters(), asyncio.get_running_loop()
        park = asyncio.create_task(waiters.park("a", loop.time() + 60, Client().receive))
        await asyncio.sleep(0)
        park.cancel()  # a server shutting down
        results = await asyncio.gather(park, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError) and waiters.held() == 0

    run(scenario())


def test_a_wake_while_the_poll_looks_before_it_waits_is_kept_not_lost():
    """A command queued while the poll's first claim runs (too late for its snapshot): the
    wake-up comes before the poll waits, and must end that wait at once."""
    async def scenario():
        waiters, loop = Waiters(), asyncio.get_running_loop()
        with waiters.ticket("a") as ticket:
            assert waiters.keys() == ["a"] and waiters.held() == 0  # looking, not waiting
            waiters.wake("a")  # meanwhile
            t0 = loop.time()
            assert await ticket.wait(loop.time() + 60, Client().receive) == WOKEN
            assert loop.time() - t0 < 0.5
            # Kept once: the next wait is a wait again.
            assert await ticket.wait(loop.time() + 0.05, Client().receive) == DEADLINE
        assert waiters.keys() == []

    run(scenario())


def test_output_followers_park_the_same_way_and_a_holder_is_capped():
    from services.dispatch.output.chunks import Page
    from services.dispatch.output.followers import Followers, TooManyHeld

    async def scenario():
        followers = Followers(per_holder=1)
        pages = [Page(0, "", 0, False, False), Page(0, "new", 3, False, False)]

        async def read_page():
            return pages.pop(0)

        follow = asyncio.create_task(followers.follow("c1", 60, Client().receive, read_page, holder="op"))
        while followers.held() == 0:
            await asyncio.sleep(0)
        try:
            await followers.follow("c2", 60, Client().receive, read_page, holder="op")
            raise AssertionError("a second waiting read of the same holder was let in")
        except TooManyHeld:
            pass
        followers.wake("c1")  # what the listener does on fleetline_output
        assert (await follow).data == "new" and followers.held() == 0

    run(scenario())

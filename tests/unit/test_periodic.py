"""A background step that fails is logged once with its traceback, and the loop goes on."""

import asyncio
import io

from fleetline import ethos
from services.common.periodic import Periodic


async def test_a_failing_step_is_logged_with_its_traceback_and_the_loop_goes_on():
    out = io.StringIO()
    ethos.configure("INFO", out)
    calls = []

    async def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug in a reaper step")

    loop = Periodic("reaper", 0.01, step)
    loop.start()
    try:
        async with asyncio.timeout(5):
            while len(calls) < 3:
                await asyncio.sleep(0.01)
    finally:
        await loop.stop()
        ethos.configure("INFO")
    (line,) = [line for line in out.getvalue().splitlines() if "step_failed" in line]
    assert line.startswith("[ERROR] [dispatch] [reaper] step_failed ")
    assert 'traceback="Traceback (most recent call last):\\n' in line and "KeyError: 'a bug in a reaper step'" in line

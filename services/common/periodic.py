"""A background step run every `interval_s` in the service's event loop until stopped, or at
once when something this process did makes it due (`kick`)."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from fleetline.ethos import Log


class Periodic:
    def __init__(self, name: str, interval_s: float, step: Callable[[], Awaitable[object]],
                 first_after_s: float = 0.0, component: str = "dispatch"):
        self.interval_s, self.step, self.first_after_s = interval_s, step, first_after_s
        self.log = Log(component, name)
        self._task: asyncio.Task | None = None
        self._kicked = asyncio.Event()

    def kick(self) -> None:
        """Run the step now rather than at the end of the interval."""
        self._kicked.set()

    async def _run(self) -> None:
        await asyncio.sleep(self.first_after_s)
        while True:
            try:
                await self.step()
            except Exception as exc:  # logged once here; the next interval tries again
                self.log.error("step_failed", error=exc, exc_info=exc)
            try:
                await asyncio.wait_for(self._kicked.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
            self._kicked.clear()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

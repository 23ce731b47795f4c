"""When `fleetline up` restarts a child that died, and when it gives up: pure decisions.

Backoff: 1 s after the first death, doubling to 30 s. A child that keeps dying is a crash
loop: its 5th restart within 60 s stops everything (exit 1, one ERROR line), because a
fleet that flaps hides the fault from the operator."""

from __future__ import annotations

from dataclasses import dataclass, field

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
LOOP_RESTARTS = 5
LOOP_WINDOW_S = 60.0


@dataclass
class Restarts:
    """One child's recent deaths, as monotonic times."""

    deaths: list[float] = field(default_factory=list)

    def died(self, now: float) -> None:
        self.deaths.append(now)
        self.deaths = [t for t in self.deaths if now - t <= LOOP_WINDOW_S]

    def crash_loop(self) -> bool:
        """True when restarting once more would be the 5th restart within the window."""
        return len(self.deaths) >= LOOP_RESTARTS

    def delay_s(self) -> float:
        """How long to wait before the next start: 1, 2, 4, ... 30 s with recent deaths."""
        recent = max(1, len(self.deaths))
        return min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** (recent - 1))

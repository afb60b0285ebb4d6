"""Circuit breaker per endpoint: closed -> open after N consecutive
failures -> half-open after a cooldown (one probe at a time) -> closed on a
successful probe, open again on a failed one."""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __init__(
        self,
        failures: int = 5,
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = max(1, failures)
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.state = self.CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.probing = False

    def refuses(self) -> bool:
        """True while traffic must not be sent (open, or a probe is out)."""
        if self.state == self.CLOSED:
            return False
        if self.state == self.OPEN:
            return self.clock() - self.opened_at < self.cooldown_s
        return self.probing

    def allow(self) -> bool:
        """Take permission for one attempt (the probe when half-open)."""
        if self.state == self.CLOSED:
            return True
        if self.state == self.OPEN:
            if self.clock() - self.opened_at < self.cooldown_s:
                return False
            self.state = self.HALF_OPEN
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.state = self.CLOSED
        self.consecutive = 0
        self.probing = False

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == self.HALF_OPEN or self.consecutive >= self.threshold:
            self.state = self.OPEN
            self.opened_at = self.clock()
        self.probing = False

    def release(self) -> None:
        """An attempt ended without a verdict (cancelled): free the probe."""
        self.probing = False

"""How fast the pool may talk to the relay: rate limits, and pauses and give-ups when the relay goes away."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailer.delivery.smtp import DeliveryError, SMTPSetupError
from mailer.settings import Settings

Notice = Callable[[str], None]
"""Called with a short line about the send's state, e.g. "relay unreachable, retrying in 4 s"."""
UNREACHABLE_ROUNDS = 3
UNREACHABLE_SECONDS = 20.0
"""However the attempts fall, a relay never reached in this run is given up this long after the first failure."""
"""Connection attempts (one per pause, whatever the pool size) before a relay never reached in this run is given up."""


class RateLimiter:
    """Token buckets shared by the whole pool: per second and per hour (0 = no limit)."""

    def __init__(self, per_second: float, per_hour: int) -> None:
        self._buckets = [
            (rate, capacity)
            for rate, capacity in ((per_second, max(1.0, per_second)), (per_hour / 3600, per_hour))
            if rate > 0
        ]
        self._tokens = [capacity for _, capacity in self._buckets]
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self._buckets:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                elapsed, self._stamp = now - self._stamp, now
                self._tokens = [
                    min(capacity, tokens + rate * elapsed)
                    for (rate, capacity), tokens in zip(self._buckets, self._tokens, strict=True)
                ]
                if all(tokens >= 1 for tokens in self._tokens):
                    self._tokens = [tokens - 1 for tokens in self._tokens]
                    return
                wait = max(
                    (1 - tokens) / rate
                    for (rate, _), tokens in zip(self._buckets, self._tokens, strict=True)
                    if tokens < 1
                )
                await asyncio.sleep(wait)


@dataclass
class RelayContact:
    """When the pool may next talk to the relay, and when it last did: shared by every worker."""

    settings: Settings
    limiter: RateLimiter
    notice: Notice | None = None
    pause_until: float = 0.0
    last_contact: float = field(default_factory=time.monotonic)
    answered: bool = False
    unreachable_rounds: int = 0
    first_failure: float | None = None

    @property
    def server(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port_effective}"

    def backoff(self, attempts: int) -> float:
        base = self.settings.retry_base_delay * 2 ** (attempts - 1)
        return float(min(300.0, base * (0.5 + random.random())))

    def lost(self, error: DeliveryError, tries: int) -> None:
        """A dropped or refused connection: pause the whole pool, or give up.

        A relay that has not answered once in this run is given up after UNREACHABLE_ROUNDS
        attempts with short pauses (a wrong host or port should not take `give_up_after`);
        one that has answered, after `give_up_after` seconds without contact.
        """
        moment = time.monotonic()
        new_pause = moment >= self.pause_until
        if not self.answered:
            # One round per pause: failures of other workers during a pause neither count nor move it,
            # so every worker wakes at the same moment and the rounds add up, whatever the pool size.
            if self.first_failure is None:
                self.first_failure = moment
            if new_pause:
                self.unreachable_rounds += 1
            if self.unreachable_rounds >= UNREACHABLE_ROUNDS or moment - self.first_failure > UNREACHABLE_SECONDS:
                raise SMTPSetupError(
                    f"cannot reach the SMTP relay {self.server} ({error.reply}) after {self.unreachable_rounds} "
                    "attempts; nothing was sent: check smtp_host and smtp_port, and that the relay is running"
                ) from None
            if new_pause:
                self.pause_until = moment + min(2.0, self.backoff(self.unreachable_rounds))
            return
        if moment - self.last_contact > self.settings.give_up_after:
            raise SMTPSetupError(
                f"no contact with the SMTP server {self.server} for {self.settings.give_up_after:.0f} s ({error.reply}); "
                "the ledger keeps what is left: run the same command again later (give_up_after sets the wait)"
            ) from None
        wait = self.backoff(min(tries, 6))
        if new_pause and self.notice and error.code in (None, 421):
            self.notice(f"relay unreachable, retrying in {max(1, round(wait))} s")
        self.pause_until = max(self.pause_until, moment + wait)

    def reached(self) -> None:
        self.answered = True
        self.last_contact = time.monotonic()

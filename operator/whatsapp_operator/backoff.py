"""Exponential backoff with full jitter, capped: the delay schedule for every retry loop."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# One generator for all delays: jitter needs no independent streams, and seeding a new Random
# (os.urandom) for every status write showed up in the profile.
_JITTER = random.Random()


@dataclass
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    attempts: int = 0
    _random: random.Random = field(default=_JITTER, repr=False)

    def next_delay(self) -> float:
        """Delay before the next attempt: uniform in [ceiling/2, ceiling], ceiling grows to `maximum`."""
        ceiling = min(self.maximum, self.initial * (self.factor**self.attempts))
        self.attempts += 1
        return self._random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0

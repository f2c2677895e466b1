"""Latency models: how long a response waits or is processed, per service tier.

A model is written ``fixed:S``, ``uniform:LO,HI`` or ``lognormal:MEDIAN,SIGMA`` (seconds,
before ``time_scale`` is applied). Draws are deterministic: the caller passes a
``random.Random`` seeded from the emulator seed and the response's creation index, so the
same sequence of creates yields the same latencies.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

Kind = Literal["fixed", "uniform", "lognormal"]


@dataclass(frozen=True)
class LatencyModel:
    """A distribution of durations in unscaled seconds."""

    kind: Kind
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> LatencyModel:
        """Parse ``fixed:S``, ``uniform:LO,HI`` or ``lognormal:MEDIAN,SIGMA``.

        A bare number means ``fixed:<number>``. Raises ``ValueError`` on anything else.
        """
        text = text.strip()
        kind, sep, args = text.partition(":")
        if not sep:
            return cls("fixed", _nonneg(float(kind), text))
        nums = [float(x) for x in args.split(",") if x.strip()]
        if kind == "fixed" and len(nums) == 1:
            return cls("fixed", _nonneg(nums[0], text))
        if kind == "uniform" and len(nums) == 2:
            lo, hi = _nonneg(nums[0], text), _nonneg(nums[1], text)
            if hi < lo:
                raise ValueError(f"latency {text!r}: HI must be >= LO")
            return cls("uniform", lo, hi)
        if kind == "lognormal" and len(nums) == 2:
            return cls("lognormal", _nonneg(nums[0], text), _nonneg(nums[1], text))
        raise ValueError(
            f"latency {text!r}: expected fixed:S, uniform:LO,HI or lognormal:MEDIAN,SIGMA"
        )

    def draw(self, rng: random.Random) -> float:
        """One duration in unscaled seconds (never negative)."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.a <= 0:
            return 0.0
        return math.exp(math.log(self.a) + self.b * rng.gauss(0.0, 1.0))

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.a:g}"
        return f"{self.kind}:{self.a:g},{self.b:g}"


def _nonneg(value: float, text: str) -> float:
    if value < 0 or math.isnan(value):
        raise ValueError(f"latency {text!r}: durations must be >= 0")
    return value

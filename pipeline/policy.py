"""When to poll and when to retry: pure functions of counts, times and settings.

:class:`PollPolicy` spaces the polls of one job; with a :class:`LatencyEstimate` learned
from finished jobs of the same model and tier it polls where completions are likely,
geometrically (each wait a fixed share of the time already waited), so the detection
delay stays a small share of the job's latency with few polls. With ``webhooks`` on (the
provider says when a response ends) polling is only the safety net for a lost webhook:
one poll at a high quantile of the learned latency, then a slow backoff. :class:`RetryPolicy` is
capped exponential backoff that honours ``Retry-After``. Every number is a setting.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()
_RANDOM = random.Random()


@dataclass(frozen=True, slots=True)
class LatencyEstimate:
    """A lognormal fit of recent job latencies (seconds) for one model and tier."""

    median: float
    sigma: float
    samples: int

    def quantile(self, q: float) -> float:
        return self.median * math.exp(_NORMAL.inv_cdf(q) * self.sigma)

    @classmethod
    def fit(
        cls, latencies: list[float], waiting: list[float] | None = None
    ) -> LatencyEstimate | None:
        """Fit ``latencies`` of finished jobs, and ``waiting``: how long jobs of the same
        sample still at the provider have waited so far (their latency is longer).

        Leaving the waiting jobs out would bias the fit short whenever a batch is in
        flight (its quick jobs finish first), so they enter as right-censored values:
        the maximum-likelihood lognormal, found by expectation-maximisation on the logs.
        ``samples`` counts finished jobs only.
        """
        values = [math.log(x) for x in latencies if x > 0]
        if len(values) < 2:
            return None
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        censored = [math.log(x) for x in waiting or () if x > 0]
        if censored:
            mean, var = _censored_normal(values, censored, mean, max(var, 1e-4))
        return cls(median=math.exp(mean), sigma=math.sqrt(var), samples=len(values))


def _censored_normal(
    observed: list[float], censored: list[float], mean: float, var: float
) -> tuple[float, float]:
    """EM for a normal sample where ``censored`` values are lower bounds; returns
    (mean, variance) from the starting point ``mean, var`` (the observed values' fit)."""
    n = len(observed) + len(censored)
    sum1 = sum(observed)
    sum2 = sum(v * v for v in observed)
    for _ in range(200):
        sd = math.sqrt(var)
        e1, e2 = sum1, sum2
        for c in censored:
            a = (c - mean) / sd
            tail = 1.0 - _NORMAL.cdf(a)
            # Inverse Mills ratio: the mean of a standard normal beyond ``a``, less ``a``.
            mills = _NORMAL.pdf(a) / tail if tail > 1e-12 else a
            e1 += mean + sd * mills
            e2 += mean * mean + var + sd * (c + mean) * mills
        new_mean = e1 / n
        new_var = max(e2 / n - new_mean * new_mean, 1e-4)
        done = abs(new_mean - mean) < 1e-6 and abs(new_var - var) < 1e-6
        mean, var = new_mean, new_var
        if done:
            break
    return mean, var


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """Spacing of status polls for one job.

    Without an estimate: ``first_delay``, then each wait ``multiplier`` times the last,
    capped at ``max_delay``, plus up to ``jitter`` (a fraction) at random. With an
    estimate from at least ``min_samples`` jobs: the first poll at the ``first_quantile``
    of the learned latency, then polls at ``ratio`` times the elapsed time, so a result is
    seen at most ``ratio - 1`` of its latency late (about half that on the median).

    With ``webhooks`` (the provider sends one when a response ends, and that webhook sends
    the poll), these polls only catch a webhook that was lost: the first at the
    ``webhook_quantile`` of the learned latency (``webhook_first_delay`` without an
    estimate), then each at ``webhook_ratio`` times the elapsed time, capped at
    ``webhook_max_delay``. A lost webhook costs delay, never the job.
    """

    first_delay: float = 10.0
    multiplier: float = 1.5
    max_delay: float = 60.0
    min_delay: float = 1.0
    jitter: float = 0.2
    ratio: float = 1.15
    first_quantile: float = 0.15
    min_samples: int = 20
    time_scale: float = 1.0
    webhooks: bool = False
    webhook_quantile: float = 0.99
    webhook_first_delay: float = 300.0
    webhook_ratio: float = 2.0
    webhook_max_delay: float = 1800.0

    def next_delay(
        self,
        *,
        polls_done: int,
        elapsed: float,
        estimate: LatencyEstimate | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait before the next poll of a job submitted ``elapsed`` s ago."""
        rng = rng or _RANDOM
        scale = self.time_scale
        if self.webhooks:
            return self._safety_net_delay(polls_done, elapsed, estimate, rng)
        if estimate is not None and estimate.samples >= self.min_samples:
            first = estimate.quantile(self.first_quantile)
            # Timestamps come from the database: a little spread is noise, not a signal.
            target = first if elapsed < first else elapsed * self.ratio
            delay = target - elapsed
            delay *= 1 + rng.uniform(0, min(self.jitter, (self.ratio - 1) / 4))
            return min(max(delay, self.min_delay * scale), self.max_delay * scale)
        base = self.first_delay * self.multiplier ** min(polls_done, 64)
        delay = min(base * scale, self.max_delay * scale)
        return delay * (1 + rng.uniform(0, self.jitter))

    def _safety_net_delay(
        self,
        polls_done: int,
        elapsed: float,
        estimate: LatencyEstimate | None,
        rng: random.Random,
    ) -> float:
        scale = self.time_scale
        if estimate is not None and estimate.samples >= self.min_samples:
            first = estimate.quantile(self.webhook_quantile)
            target = first if elapsed < first else elapsed * self.webhook_ratio
            delay = target - elapsed
        else:
            growth = self.webhook_ratio ** min(polls_done, 64)
            delay = self.webhook_first_delay * growth * scale
        delay *= 1 + rng.uniform(0, self.jitter)
        return min(max(delay, self.min_delay * scale), self.webhook_max_delay * scale)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff for transient errors; ``Retry-After`` sets a floor."""

    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.2
    max_retry_after: float = 600.0
    time_scale: float = 1.0

    def delay(
        self, failures: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (counting from 0)."""
        rng = rng or _RANDOM
        growth: float = 2.0 ** min(failures, 32)
        backoff = min(self.base_delay * growth, self.max_delay) * self.time_scale
        backoff *= 1 + rng.uniform(0, self.jitter)
        if retry_after is not None:
            # The provider's own number is honoured as is (it is not ours to scale).
            backoff = max(backoff, min(float(retry_after), self.max_retry_after))
        return backoff

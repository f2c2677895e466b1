"""The poll schedule and the retry backoff."""

from __future__ import annotations

import math
import random

from flexpipe.policy import LatencyEstimate, PollPolicy, RetryPolicy


def test_fixed_schedule_grows_and_caps() -> None:
    policy = PollPolicy(first_delay=2, multiplier=2, max_delay=10, jitter=0)
    delays = [policy.next_delay(polls_done=n, elapsed=0) for n in range(6)]
    assert delays == [2, 4, 8, 10, 10, 10]


def test_jitter_stays_within_its_share() -> None:
    policy = PollPolicy(first_delay=10, jitter=0.2)
    rng = random.Random(1)
    delays = [policy.next_delay(polls_done=0, elapsed=0, rng=rng) for _ in range(500)]
    assert min(delays) >= 10
    assert max(delays) <= 12
    assert len(set(delays)) > 400  # really jittered


def test_time_scale_scales_every_delay() -> None:
    policy = PollPolicy(first_delay=10, max_delay=60, jitter=0, time_scale=0.01)
    assert math.isclose(policy.next_delay(polls_done=0, elapsed=0), 0.1)
    assert math.isclose(policy.next_delay(polls_done=20, elapsed=0), 0.6)


def test_learned_schedule_polls_first_at_the_low_quantile_then_geometrically() -> None:
    estimate = LatencyEstimate(median=60, sigma=0.6, samples=100)
    policy = PollPolicy(jitter=0, ratio=1.2, first_quantile=0.1, max_delay=600)
    first = policy.next_delay(polls_done=0, elapsed=0, estimate=estimate)
    assert math.isclose(first, estimate.quantile(0.1))
    assert 25 < first < 30
    later = policy.next_delay(polls_done=3, elapsed=50, estimate=estimate)
    assert math.isclose(later, 10.0)  # 20% of the time already waited


def test_learned_schedule_meets_its_own_promise() -> None:
    """With the default knobs, lognormal(60 s, 0.6) jobs: median polls <= 6, delay <= 10%."""
    rng = random.Random(7)
    estimate = LatencyEstimate(median=60, sigma=0.6, samples=500)
    policy = PollPolicy(max_delay=600)
    polls, shares = [], []
    for _ in range(2000):
        latency = rng.lognormvariate(math.log(60), 0.6)
        elapsed, count = 0.0, 0
        while True:
            elapsed += policy.next_delay(
                polls_done=count, elapsed=elapsed, estimate=estimate, rng=rng
            )
            count += 1
            if elapsed >= latency:
                break
        polls.append(count)
        shares.append((elapsed - latency) / latency)
    polls.sort()
    shares.sort()
    assert polls[len(polls) // 2] <= 6
    assert shares[len(shares) // 2] <= 0.10


def test_too_few_samples_fall_back_to_the_fixed_schedule() -> None:
    estimate = LatencyEstimate(median=60, sigma=0.6, samples=3)
    policy = PollPolicy(first_delay=5, jitter=0, min_samples=20)
    assert policy.next_delay(polls_done=0, elapsed=0, estimate=estimate) == 5


def test_fit() -> None:
    rng = random.Random(3)
    samples = [rng.lognormvariate(math.log(60), 0.6) for _ in range(4000)]
    fit = LatencyEstimate.fit(samples)
    assert fit is not None
    assert 55 < fit.median < 65
    assert 0.55 < fit.sigma < 0.65
    assert LatencyEstimate.fit([1.0]) is None


def test_retry_backoff_doubles_caps_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=8, jitter=0)
    assert [policy.delay(n) for n in range(6)] == [1, 2, 4, 8, 8, 8]
    assert policy.delay(0, retry_after=5) == 5
    assert policy.delay(4, retry_after=2) == 8  # backoff already longer
    assert RetryPolicy(max_retry_after=30, jitter=0).delay(0, retry_after=3600) == 30


def test_retry_time_scale_does_not_shrink_the_providers_retry_after() -> None:
    policy = RetryPolicy(base_delay=1, jitter=0, time_scale=0.01)
    assert policy.delay(0) == 0.01
    assert policy.delay(0, retry_after=2) == 2


def test_a_fit_with_jobs_still_waiting_is_not_biased_short() -> None:
    """A batch in flight: its quick jobs have finished, its slow ones are still waiting.
    Fitting the finished ones alone learns a latency far too short; counting the waiting
    ones as censored values recovers the true distribution."""
    import math
    import random

    rng = random.Random(11)
    finished, waiting = [], []
    for _ in range(400):
        latency = 60 * math.exp(rng.gauss(0, 0.6))
        elapsed = rng.uniform(0, 120)  # submitted evenly over the last two minutes
        if latency <= elapsed:
            finished.append(latency)
        else:
            waiting.append(elapsed)
    naive = LatencyEstimate.fit(finished)
    fair = LatencyEstimate.fit(finished, waiting)
    assert naive is not None and fair is not None
    assert naive.median < 45  # the censored-short bias this fit exists to avoid
    assert abs(fair.median - 60) / 60 < 0.12
    assert abs(fair.sigma - 0.6) < 0.12
    assert fair.samples == len(finished)


def test_a_fit_without_waiting_jobs_is_the_plain_lognormal_fit() -> None:
    import math

    values = [30.0, 60.0, 90.0, 45.0]
    fit = LatencyEstimate.fit(values, [])
    logs = [math.log(v) for v in values]
    assert fit is not None and math.isclose(fit.median, math.exp(sum(logs) / 4))
    assert LatencyEstimate.fit([5.0], [100.0, 200.0]) is None  # one finished job: no fit

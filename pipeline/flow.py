"""The flow of one job: submit it, poll it, store its outcome.

Each step is a plain function of a job id that reads the job from the store, makes at
most one provider call, writes the result with one guarded update, and returns a
:class:`Next` that tells the caller (a Celery task) what to schedule. Steps never raise
for provider trouble: retryable errors become ``Next.retry``, permanent ones a stored
``failed`` outcome. Running a step twice is harmless.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.exceptions import Unresolvable

from flexpipe import errors
from flexpipe.client import FlexClient, ProviderResponse
from flexpipe.limits import Limiter, NoLimits
from flexpipe.models import Job
from flexpipe.policy import LatencyEstimate, PollPolicy, RetryPolicy
from flexpipe.spool import Spool
from flexpipe.states import IN_FLIGHT, JobStatus, from_provider
from flexpipe.store import TRANSIENT_DB_ERRORS, Finished, Outcome, Store

log = logging.getLogger("flexpipe.flow")

Kind = Literal["poll", "retry", "submit", "done", "stop"]

#: Error code of structured output that does not match the request's schema.
INVALID_OUTPUT = "invalid_output"
#: Error code of a schema whose references cannot be resolved (remote ones never are).
INVALID_SCHEMA = "invalid_schema"
#: Error code of a job that hit the same unexpected error (a bug, not a provider answer)
#: ``max_unexpected_errors`` times in a row.
INTERNAL_ERROR = "internal_error"
#: Schemas resolve references against this registry only: JSON Schema's own metaschemas,
#: and nothing it could fetch (``Registry()`` retrieves nothing, so no ``$ref`` reaches
#: the network or the file system, even in a schema stored before enqueue refused them).
_NO_RETRIEVAL: Registry[Any] = Registry()


@dataclass(frozen=True, slots=True)
class Next:
    """What to do after a step.

    ``poll``: send a poll for fencing number ``seq`` in ``delay`` s, unless ``parked``
    (then the poll waits in SQL and the sweeper sends it when due). ``retry``: run the
    same step again in ``delay`` s. ``done``: the job is terminal; send ``callback`` if
    set (this step's store won), as message ``callback_id(job_id, attempt)``. ``submit``:
    the job is pending again (a new attempt); send a submit now. ``stop``: nothing to do
    (duplicate, stale or unknown).
    """

    kind: Kind
    delay: float = 0.0
    seq: int = 0
    parked: bool = False
    failures: int = 0
    callback: dict[str, Any] | None = None
    #: The attempt that ended (``done``): with the job id it names the callback's message.
    attempt: int = 0
    #: Set when this step finished the last job of a bulk: send ``bulk_callback(bulk_id)``.
    bulk_id: str | None = None
    bulk_callback: dict[str, Any] | None = None
    reason: str = ""


@dataclass
class FlowSettings:
    """The knobs of the flow (all from ``flexpipe.config.settings``)."""

    poll: PollPolicy = field(default_factory=PollPolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Polls further away than this (s) wait in SQL instead of in a worker's memory.
    park_after: float = 30.0
    #: How long a submit may take before another submit of the same job may try (s).
    submit_lease: float = 120.0
    #: The same for blocking-mode jobs, which hold the connection until done (s).
    blocking_lease: float = 960.0
    #: How many 404s in a row a poll tolerates (read lag) before the response is lost.
    max_not_found: int = 5
    #: When the provider forgot a response (e.g. it restarted): "fail" the job, or
    #: "resubmit" it as a new attempt (a second provider request, billed again).
    lost_response: Literal["fail", "resubmit"] = "fail"
    #: Attempts a job may make in all (resubmits of lost responses count).
    max_attempts: int = 3
    #: New attempts a job gets when its structured output does not match its schema
    #: (within ``max_attempts``); after that it fails as ``invalid_output``.
    invalid_output_retries: int = 1
    #: With ``escalate=True``, a flex job past its deadline is retried once on this tier,
    #: with this many seconds more.
    escalate_to: str = "priority"
    escalate_deadline: float = 900.0
    #: How often learned latency estimates are re-read from SQL (s).
    estimate_refresh: float = 30.0
    #: Set False to poll on the fixed schedule only.
    learn_latency: bool = True
    #: The provider sends webhooks when responses end (the receiver sends their polls):
    #: a submit then looks for an event that arrived before it recorded the response id.
    webhooks: bool = False
    #: Unexpected errors in a row (an exception no known error covers, a soft time limit)
    #: after which a job fails with that error instead of being tried again.
    max_unexpected_errors: int = 3


class Flow:
    """The steps of the pipeline, bound to one store and one provider client."""

    def __init__(
        self,
        store: Store,
        client: FlexClient,
        settings: FlowSettings | None = None,
        *,
        limiter: Limiter | None = None,
        rng: random.Random | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.store = store
        #: Where response ids wait for their commit (see :mod:`flexpipe.spool`).
        self.spool = spool or Spool(None)
        self.client = client
        self.limiter: Limiter = limiter or NoLimits()
        self.settings = settings or FlowSettings()
        self._rng = rng or random.Random()
        self._estimates = _EstimateCache(
            store, self.settings.estimate_refresh, self.settings.poll.min_samples
        )

    # -- submit ----------------------------------------------------------------------------

    def submit(self, job_id: str, failures: int = 0) -> Next:
        """Send a pending job to the provider, once.

        An unexpected error (a bug, a soft time limit) becomes a retry that counts as a
        failure; after ``max_unexpected_errors`` in a row the job fails with it.
        """
        try:
            return self._submit(job_id, failures)
        except TRANSIENT_DB_ERRORS:
            raise
        except Exception as exc:
            return self._unexpected(job_id, None, failures, exc)

    def _submit(self, job_id: str, failures: int) -> Next:
        job = self.store.claim_submit(
            job_id, self.settings.submit_lease, self.settings.blocking_lease
        )
        if job is None:
            existing = self.store.get_job(job_id)
            if existing is None:
                log.warning("submit: unknown job %s, ignoring", job_id)
                return Next("stop", reason="unknown job")
            if existing.status is JobStatus.PENDING:
                # Leased by an earlier run of this submit that got a response id but could
                # not commit it (the database was away): record it now, don't wait.
                spooled = self.spool.find(existing.id, existing.attempt)
                if spooled is not None:
                    return self._recover(existing, spooled)
            return Next("stop", reason=f"job is {existing.status.value}, not pending")
        return self.send(job, failures)

    def claim_many(self, job_ids: list[str]) -> list[Job]:
        """Take the submit leases of many pending jobs at once (one statement); each job
        taken is then sent with :meth:`send`. Jobs not taken are pending under another
        submit's lease, or not pending any more: nothing to do for them."""
        order = {job_id: i for i, job_id in enumerate(job_ids)}
        claimed = self.store.claim_submits(
            job_ids, self.settings.submit_lease, self.settings.blocking_lease
        )
        return sorted(claimed, key=lambda job: order[job.id])

    def send(self, job: Job, failures: int = 0, *, claimed_at: datetime | None = None) -> Next:
        """Send a job whose submit lease this process holds: one create, recorded at once.

        A lease taken at ``claimed_at`` (with others, by :meth:`claim_many`) that is half
        gone is not used: another submit may take the job once it runs out, and two
        creates must never race. The job stays pending; the sweeper resends it.
        """
        now = self.store.now()
        if claimed_at is not None and now - claimed_at > timedelta(
            seconds=self.settings.submit_lease / 2
        ):
            return Next("stop", reason="submit lease ran short; left to the sweeper")
        spooled = self.spool.find(job.id, job.attempt)
        if spooled is not None:
            return self._recover(job, spooled)
        if _past(job.deadline_at, now):
            return self.expire(job.id)  # expired, or escalated if the job asked for it
        wait = self.limiter.acquire(job.id, job.request.model)
        if wait > 0:
            # Over a shared limit: wait as pending in SQL, not in this worker's memory.
            self.store.defer_submit(job.id, wait)
            return Next("stop", delay=wait, reason="rate limited")
        try:
            response = self.client.create(job.id, job.request, attempt=job.attempt)
        except errors.RetryableProviderError as exc:
            self.limiter.release(job.id)
            self.store.release_submit(job.id)
            delay = self.settings.retry.delay(failures, exc.retry_after, self._rng)
            log.info("submit %s: %s; retrying in %.2fs", job.id, exc.message, delay)
            return Next("retry", delay=delay, failures=failures + 1, reason=exc.code)
        except errors.ProviderError as exc:
            return self._finish_failed(job, JobStatus.FAILED, exc.code, exc.message)

        self._keep(job, response.id)
        status = from_provider(response.status, truncated=response.truncated)
        if status.terminal:
            self.store.record_submitted(
                job.id,
                attempt=job.attempt,
                response_id=response.id,
                status=JobStatus.SUBMITTED,
                tier=job.request.service_tier,
                next_poll_in=0,
                parked=False,
            )
            self.spool.recorded(job.id, job.attempt)
            return self._store(job, response)
        delay = self._poll_delay(job, polls_done=0, elapsed=0.0)
        parked = delay > self.settings.park_after
        seq = self.store.record_submitted(
            job.id,
            attempt=job.attempt,
            response_id=response.id,
            status=status,
            tier=job.request.service_tier,
            next_poll_in=delay,
            parked=parked,
        )
        self.spool.recorded(job.id, job.attempt)
        if seq is None:
            return Next("stop", reason="job changed while submitting")
        if self.settings.webhooks:
            # The provider may have finished, and its webhook come, before our commit.
            early = self.store.claim_early_webhook(job.id, response.id)
            if early is not None:
                return Next("poll", delay=0.0, seq=early, reason="webhook came first")
        return Next("poll", delay=delay, seq=seq, parked=parked)

    def _keep(self, job: Job, response_id: str) -> None:
        """Put the response id where it outlives this process before committing it."""
        try:
            self.spool.add(job.id, job.attempt, response_id)
        except OSError:
            log.exception("job %s: response id %s not spooled", job.id, response_id)

    def _recover(self, job: Job, response_id: str) -> Next:
        """Record a response id the provider gave an earlier run of this submit, and poll
        it now: the job is at the provider already, so it is never created again."""
        log.warning(
            "job %s: recording response %s kept from an earlier submit (the database was "
            "away when the provider answered)", job.id, response_id,
        )
        seq = self.store.record_submitted(
            job.id,
            attempt=job.attempt,
            response_id=response_id,
            status=JobStatus.SUBMITTED,
            tier=job.request.service_tier,
            next_poll_in=0,
            parked=False,
        )
        self.spool.recorded(job.id, job.attempt)
        if seq is None:
            return Next("stop", reason="job changed while submitting")
        return Next("poll", delay=0.0, seq=seq, reason="recovered response id")

    def recover_spooled(self) -> list[tuple[str, Next]]:
        """Record every spooled response id whose job is still pending on that attempt
        (a worker calls this when it starts); ``(job_id, next step)`` for each."""
        steps: list[tuple[str, Next]] = []
        for job_id, attempt, response_id in self.spool.pending():
            job = self.store.get_job(job_id)
            if job is None or job.status is not JobStatus.PENDING or job.attempt != attempt:
                self.spool.recorded(job_id, attempt)
                continue
            steps.append((job_id, self._recover(job, response_id)))
        return steps

    # -- poll ------------------------------------------------------------------------------

    def poll(self, job_id: str, seq: int, failures: int = 0) -> Next:
        """Read the provider's status once; store the outcome if it is terminal.

        Unexpected errors are counted as in :meth:`submit`.
        """
        try:
            return self._poll(job_id, seq, failures)
        except TRANSIENT_DB_ERRORS:
            raise
        except Exception as exc:
            return self._unexpected(job_id, seq, failures, exc)

    def _unexpected(self, job_id: str, seq: int | None, failures: int, exc: Exception) -> Next:
        """A step raised what no known error covers: try again later (a submit, or the
        poll chain ``seq``), or, the ``max_unexpected_errors``-th time in a row, fail the
        job with the error as its reason, so a poison job never loops."""
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        log.error("job %s: unexpected error (%d in a row): %s", job_id, failures + 1, reason,
                  exc_info=exc)
        job = self.store.get_job(job_id)
        if job is None or job.terminal:
            return Next("stop", reason="unexpected error")
        self.limiter.release(job.id)
        if failures + 1 >= self.settings.max_unexpected_errors:
            message = f"failed {failures + 1} times with an unexpected error: {reason}"
            return self._finish_failed(job, JobStatus.FAILED, INTERNAL_ERROR, message)
        delay = self.settings.retry.delay(failures, None, self._rng)
        if seq is None:
            self.store.release_submit(job.id)
            return Next("retry", delay=delay, failures=failures + 1, reason=INTERNAL_ERROR)
        parked = delay > self.settings.park_after
        new_seq = self.store.schedule_poll(
            job.id, seq, status=job.status, delay=delay, parked=parked, polled=False
        )
        if new_seq is None:
            return Next("stop", reason="stale poll chain")
        return Next(
            "poll", delay=delay, seq=new_seq, parked=parked, failures=failures + 1,
            reason=INTERNAL_ERROR,
        )

    def _poll(self, job_id: str, seq: int, failures: int) -> Next:
        job = self.store.get_job(job_id)
        if job is None:
            log.warning("poll: unknown job %s, ignoring", job_id)
            return Next("stop", reason="unknown job")
        if job.terminal:
            return Next("stop", reason=f"job is already {job.status.value}")
        if job.poll_seq != seq:
            return Next("stop", reason="stale poll chain")
        if job.response_id is None:
            return Next("stop", reason="job has no response id")
        now = self.store.now()
        if _past(job.deadline_at, now):
            return self.expire(job.id)
        try:
            response = self.client.retrieve(job.response_id)
        except errors.ResponseNotFound as exc:
            if failures + 1 >= self.settings.max_not_found:
                message = (
                    f"the provider does not know response {job.response_id} "
                    f"({failures + 1} reads in a row answered 404): {exc.message}"
                )
                return self._lost(job, exc.code, message)
            return self._retry_poll(job, seq, failures, exc)
        except errors.ResponseGone as exc:
            message = (
                "the provider no longer has this read-once (zero data retention) result: "
                f"it was read before it could be stored ({exc.message})"
            )
            return self._finish_failed(job, JobStatus.FAILED, exc.code, message)
        except errors.RetryableProviderError as exc:
            return self._retry_poll(job, seq, failures, exc)
        except errors.ProviderError as exc:
            return self._finish_failed(job, JobStatus.FAILED, exc.code, exc.message)

        if response.terminal:
            return self._store(job, response, counted_poll=True)
        status = from_provider(response.status)
        elapsed = (now - (job.submitted_at or now)).total_seconds()
        delay = self._poll_delay(job, polls_done=job.poll_count + 1, elapsed=elapsed)
        parked = delay > self.settings.park_after
        new_seq = self.store.schedule_poll(job.id, seq, status=status, delay=delay, parked=parked)
        if new_seq is None:
            return Next("stop", reason="stale poll chain")
        return Next("poll", delay=delay, seq=new_seq, parked=parked)

    def _lost(self, job: Job, code: str, message: str) -> Next:
        """The provider forgot the response: fail, or resubmit as the policy says."""
        if (
            self.settings.lost_response == "resubmit"
            and job.attempt < self.settings.max_attempts
        ):
            attempt = self.store.restart(
                job.id, reason=message, only_from=IN_FLIGHT, expected_attempt=job.attempt
            )
            if attempt is None:
                return Next("stop", reason="job changed meanwhile")
            log.warning("job %s: %s; resubmitting as attempt %d", job.id, message, attempt)
            return Next("submit", reason=code)
        return self._finish_failed(job, JobStatus.FAILED, code, message)

    def _retry_poll(
        self, job: Job, seq: int, failures: int, exc: errors.RetryableProviderError
    ) -> Next:
        delay = self.settings.retry.delay(failures, exc.retry_after, self._rng)
        parked = delay > self.settings.park_after
        new_seq = self.store.schedule_poll(
            job.id, seq, status=job.status, delay=delay, parked=parked, polled=False
        )
        if new_seq is None:
            return Next("stop", reason="stale poll chain")
        log.info("poll %s: %s; next try in %.2fs", job.id, exc.message, delay)
        return Next(
            "poll",
            delay=delay,
            seq=new_seq,
            parked=parked,
            failures=failures + 1,
            reason=exc.code,
        )

    def _poll_delay(self, job: Job, *, polls_done: int, elapsed: float) -> float:
        estimate = None
        if self.settings.learn_latency:
            estimate = self._estimates.get(job.request.model, job.request.service_tier)
        return self.settings.poll.next_delay(
            polls_done=polls_done, elapsed=elapsed, estimate=estimate, rng=self._rng
        )

    def refresh(self, job_id: str) -> Next:
        """Read a job's response once, out of schedule, and store it if terminal."""
        job = self.store.get_job(job_id)
        if job is None or job.terminal or job.response_id is None:
            return Next("stop", reason="nothing to refresh")
        try:
            response = self.client.retrieve(job.response_id)
        except errors.ProviderError as exc:
            return Next("stop", reason=exc.code)
        if not response.terminal:
            return Next("stop", reason="still running")
        return self._store(job, response, counted_poll=True)

    # -- cancel and deadlines --------------------------------------------------------------

    def cancel(self, job_id: str) -> Next:
        """Cancel a job: at the provider where it supports cancel, and in SQL in any case."""
        job = self.store.require_job(job_id)
        if job.terminal:
            return Next("stop", reason=f"job is already {job.status.value}")
        note = "cancelled before it was sent to the provider"
        if job.response_id is not None:
            try:
                response = self.client.cancel(job.response_id)
            except errors.ProviderError as exc:
                note = f"cancelled here; the provider could not cancel it ({exc.message})"
            else:
                if response.terminal and response.status != "cancelled":
                    return self._store(job, response, retry_invalid=False)
                note = "cancelled at the provider"
        return self._finish_failed(job, JobStatus.CANCELLED, "cancelled", note)

    def expire(self, job_id: str) -> Next:
        """Finish a job whose deadline passed, cancelling it at the provider if possible.

        A flex job enqueued with ``escalate=True`` is instead retried once on the
        ``escalate_to`` tier; both response ids stay in its attempts.
        """
        job = self.store.require_job(job_id)
        if job.terminal:
            return Next("stop", reason=f"job is already {job.status.value}")
        if job.escalate and job.request.service_tier == "flex":
            return self._escalate(job)
        note = "the deadline passed before the provider finished"
        if job.response_id is not None:
            try:
                self.client.cancel(job.response_id)
            except errors.ProviderError as exc:
                note += f"; the provider could not cancel it ({exc.message})"
            else:
                note += "; cancelled at the provider"
        return self._finish_failed(job, JobStatus.EXPIRED, "deadline_exceeded", note)

    def _escalate(self, job: Job) -> Next:
        if job.response_id is not None:
            try:
                self.client.cancel(job.response_id)
            except errors.ProviderError as exc:
                log.info("job %s: flex response not cancelled (%s)", job.id, exc.message)
        deadline = self.store.now() + timedelta(seconds=self.settings.escalate_deadline)
        attempt = self.store.restart(
            job.id,
            reason=f"deadline passed on flex; escalated to {self.settings.escalate_to}",
            tier=self.settings.escalate_to,
            deadline_at=deadline,
            expected_attempt=job.attempt,
        )
        if attempt is None:
            return Next("stop", reason="job changed meanwhile")
        return Next("submit", reason="escalated")

    # -- store -----------------------------------------------------------------------------

    def _store(
        self,
        job: Job,
        response: ProviderResponse,
        counted_poll: bool = False,
        *,
        retry_invalid: bool = True,
    ) -> Next:
        outcome = outcome_from(job, response)
        if retry_invalid and outcome.error_code == INVALID_OUTPUT and self._may_retry(job):
            if counted_poll:
                self.store.count_poll(job.id)
            return self._retry_invalid(job, outcome.error_message or "")
        return self._done(job, self.store.finish(job.id, outcome, polled=counted_poll))

    def _may_retry(self, job: Job) -> bool:
        """Whether invalid output may be asked for again: earlier invalid-output attempts
        are counted from the job's attempts (their reason starts with the code)."""
        retries = self.settings.invalid_output_retries
        if retries <= 0 or job.attempt >= self.settings.max_attempts:
            return False
        marker = f"{INVALID_OUTPUT}:"
        earlier = sum(
            1
            for row in self.store.attempts(job.id)
            if row["attempt"] < job.attempt and str(row["error_message"] or "").startswith(marker)
        )
        return earlier < retries

    def _retry_invalid(self, job: Job, problem: str) -> Next:
        """Keep the invalid answer's attempt in the history and ask the provider again."""
        attempt = self.store.restart(
            job.id,
            reason=f"{INVALID_OUTPUT}: {problem}",
            only_from=IN_FLIGHT,
            expected_attempt=job.attempt,
        )
        if attempt is None:
            return Next("stop", reason="job changed meanwhile")
        log.info("job %s: %s; asking again as attempt %d", job.id, problem, attempt)
        return Next("submit", reason=INVALID_OUTPUT)

    def _finish_failed(self, job: Job, status: JobStatus, code: str, message: str) -> Next:
        outcome = Outcome(
            status=status, response_id=job.response_id, error_code=code, error_message=message
        )
        return self._done(job, self.store.finish(job.id, outcome), reason=code)

    def _done(self, job: Job, finished: Finished | None, reason: str = "") -> Next:
        self.limiter.release(job.id)
        if finished is None:
            return Next("stop", reason="already finished")
        if finished.bulk_finished:
            return Next(
                "done", callback=job.callback, attempt=job.attempt, bulk_id=finished.bulk_id,
                bulk_callback=finished.bulk_on_complete, reason=reason,
            )
        return Next("done", callback=job.callback, attempt=job.attempt, reason=reason)


_CALLBACK_IDS = uuid.UUID("5d0c6c1e-3f1a-4b7e-9a51-6f6c65787069")


def callback_id(owner_id: str, attempt: int | None = None) -> str:
    """The message id of a job attempt's callback (or, without ``attempt``, a bulk's).

    Stable, so a callback that the sweeper has to send again (its sender died between
    publishing it and recording that) is the same message, with the same
    ``self.request.id``, as the first: the app can tell a second delivery from a second
    outcome.
    """
    key = owner_id if attempt is None else f"{owner_id}/{attempt}"
    return str(uuid.uuid5(_CALLBACK_IDS, key))


def outcome_from(job: Job, response: ProviderResponse) -> Outcome:
    """Turn a terminal provider response into what the results table keeps."""
    status = from_provider(response.status, truncated=response.truncated)
    parsed: Any = None
    error_code = response.error_code
    error_message = response.error_message
    if status is JobStatus.COMPLETED and job.request.schema is not None:
        parsed, problem, code = _structured(response.output_text, job.request.schema)
        if problem is not None:
            status = JobStatus.FAILED
            error_code, error_message = code, problem
    if status is JobStatus.FAILED and error_code is None:
        error_code, error_message = "provider_failed", "the provider reported failure"
    incomplete_reason = response.incomplete_reason
    if status is JobStatus.INCOMPLETE and incomplete_reason is None:
        incomplete_reason = "max_output_tokens"
    return Outcome(
        status=status,
        response_id=response.id,
        output_text=response.output_text,
        output=response.output,
        parsed=parsed,
        usage=response.usage,
        served_tier=response.served_tier,
        error_code=error_code,
        error_message=error_message,
        incomplete_reason=incomplete_reason,
        provider_created_at=_from_epoch(response.created_at),
        provider_completed_at=_from_epoch(response.completed_at) or datetime.now(UTC),
    )


def parse_structured(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """Parse and validate structured output; return ``(value, None)`` or ``(None, why)``.

    References in the schema resolve inside it only: nothing is ever fetched.
    """
    value, problem, _ = _structured(text, schema)
    return value, problem


def _structured(text: str, schema: dict[str, Any]) -> tuple[Any, str | None, str]:
    """``parse_structured``, with the error code of the problem."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return None, f"output is not JSON: {exc}", INVALID_OUTPUT
    except RecursionError:
        return None, "output is not JSON: nested too deeply", INVALID_OUTPUT
    try:
        validator = Draft202012Validator(schema, registry=_NO_RETRIEVAL)
        problem = next(iter(validator.iter_errors(value)), None)
    except Unresolvable as exc:
        return None, f"the schema has a reference that is not resolved here: {exc}", INVALID_SCHEMA
    except RecursionError:
        return None, "output is nested too deeply to validate", INVALID_OUTPUT
    if problem is not None:
        return None, f"output does not match the schema: {problem.message}", INVALID_OUTPUT
    return value, None, INVALID_OUTPUT


def _past(deadline: datetime | None, now: datetime) -> bool:
    return deadline is not None and deadline <= now


def _from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class _EstimateCache:
    """Per-process cache of latency estimates per (model, tier), refreshed from SQL.

    The sample is the jobs submitted last *before* the current estimate's 95th percentile
    ago: nearly all of those have finished, so the fit is not skewed towards a running
    batch's quick jobs (the few still waiting enter the fit as censored values). An
    estimate from fewer than ``min_samples`` jobs is re-read sooner (``refresh / 6``).
    """

    def __init__(self, store: Store, refresh: float, min_samples: int = 20) -> None:
        self._store = store
        self._refresh = refresh
        self._min_samples = min_samples
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, LatencyEstimate | None]] = {}

    def get(self, model: str, tier: str) -> LatencyEstimate | None:
        key = (model, tier)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            read_at, estimate = cached
            weak = estimate is None or estimate.samples < self._min_samples
            if now - read_at < (self._refresh / 6 if weak else self._refresh):
                return estimate
        previous = cached[1] if cached is not None else None
        before = None
        if previous is not None and previous.samples >= self._min_samples:
            before = self._store.now() - timedelta(seconds=previous.quantile(0.95))
        finished, waiting = self._store.latency_samples(model, tier, submitted_before=before)
        estimate = LatencyEstimate.fit(finished, waiting)
        if estimate is None and before is not None:
            estimate = previous  # nothing older than the horizon yet: keep what we had
        with self._lock:
            self._cache[key] = (now, estimate)
        return estimate

"""Shadow evaluation, off the request path: does the cheaper tier's answer hold up against
the reference tier's, on the user's own traffic?

After a client's answer is complete (``Gateway``: a non-stream reply once built, a stream in
its end hook, successes only), ``Shadow.offer`` decides in a few operations and without
awaiting anything: the route has a rule, the answering model's tier is below the reference,
and the request is sampled (a hash of its id, so the same request is always sampled the same
way). The job then waits in a bounded per-process queue (full: dropped and counted) for a
worker, which

1. asks the reference (a model, or the cheapest eligible model of a tier) the same
   conversation, straight through the snapshot's provider adapter: no cache, no routing,
   no fallback, no shadowing of its own, nothing in ``router_requests_total`` and nothing
   charged to the client's key or team;
2. asks the judge twice, the answers in both orders (``router.shadow.judge``);
3. counts the verdict (metrics, the in-memory figures of ``GET /v1/router/quality``, and the
   verdict log when ``ROUTER_SHADOW_LOG`` is set).

Every call reserves its most possible cost from the rule's own budget scope in the state
store before it is made and settles the actual cost after, so the cap holds across replicas
sharing Redis; once it is spent, jobs are dropped (``reason="budget"``). On shutdown the
queue is drained for at most ``ROUTER_SHADOW_DRAIN_S``; what is left is dropped and counted
(``reason="shutdown"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from router import budgets
from router.accounting import Accountant
from router.metrics import Metrics
from router.policy import tokens
from router.policy.engine import decide
from router.policy.features import features_for
from router.policy.model import Model, ShadowRule
from router.providers.base import Completion, UpstreamCall, UpstreamError
from router.shadow.judge import (
    VERDICTS,
    JudgeUnreadable,
    Verdict,
    Winner,
    answer_of,
    combine,
    conversation_text,
    judge_body,
    judge_messages,
    parse_winner,
)
from router.snapshot import PolicySnapshot
from router.state.base import BudgetScope, StateStore, StateUnavailable
from router.types import Usage

log = logging.getLogger("router.shadow")
DROP_REASONS = ("queue_full", "budget", "shutdown", "state_store")
NOT_SENT = frozenset({"stream", "stream_options", "n", "model", "user", "metadata", "store"})
Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


def sampled(request_id: str, share: float) -> bool:
    """Whether a request is in the sample: a hash of its id below ``share`` of the range."""
    if share >= 1:
        return True
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2**64


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 % by default); None with no trials."""
    if total <= 0:
        return None
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(slots=True)
class ShadowJob:
    """One answered request to re-ask and judge. ``answer`` is the text the judge sees
    (tool calls as the calls they make)."""

    snapshot: PolicySnapshot
    rule: ShadowRule
    route: str
    request_id: str
    body: Mapping[str, Any]
    model: Model
    answer: str
    prompt_tokens: int
    output_tokens: int
    difficulty: float | None


@dataclass(slots=True)
class ShadowOptions:
    queue_size: int = 256
    workers: int = 2
    drain_s: float = 5.0
    log_path: Path | None = None


class BudgetSpent(Exception):
    """The rule's shadow budget cannot cover the next call."""


@dataclass(slots=True)
class Tally:
    reference_model: str
    verdicts: dict[Verdict, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))


class Shadow:
    """The per-process queue and workers (``start`` in the app's lifespan, ``stop`` at its end)."""

    def __init__(self, store: StateStore, metrics: Metrics, accountant: Accountant, options: ShadowOptions) -> None:
        self.store = store
        self.metrics = metrics
        self.accountant = accountant
        self.options = options
        self.queue: asyncio.Queue[ShadowJob] | None = None
        self.workers: list[asyncio.Task[None]] = []
        self.tallies: dict[tuple[str, str], Tally] = {}
        self.spend_usd: dict[str, float] = {}
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)

    # the request path -------------------------------------------------------------------
    def offer(
        self,
        snapshot: PolicySnapshot,
        rule: ShadowRule,
        route: str,
        request_id: str,
        body: Mapping[str, Any],
        model: Model,
        answer: Any,
        prompt_tokens: int,
        output_tokens: int,
        difficulty: float | None,
    ) -> None:
        """Queue a finished answer if it is below the reference tier and sampled; never
        waits. ``answer``: the completion body, or a stream's text."""
        if model.tier_rank <= rule.reference_rank or not sampled(request_id, rule.sample):
            return
        queue = self.queue
        if queue is None or queue.full():
            self._drop("queue_full")
            return
        text = answer if isinstance(answer, str) else answer_of(answer)
        snapshot.inflight.count += 1  # its adapters stay open until the job is done
        queue.put_nowait(
            ShadowJob(snapshot, rule, route, request_id, body, model, text, prompt_tokens, output_tokens, difficulty)
        )

    # the workers --------------------------------------------------------------------------
    def start(self) -> None:
        self.queue = asyncio.Queue(self.options.queue_size)
        self.workers = [asyncio.ensure_future(self._work()) for _ in range(self.options.workers)]

    async def stop(self) -> None:
        """Drain the queue for at most ``drain_s``, then drop what is left (counted)."""
        queue, self.queue = self.queue, None  # nothing new is accepted
        if queue is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.drain_s):
                await queue.join()
        while not queue.empty():
            job = queue.get_nowait()
            job.snapshot.inflight.count -= 1
            self._drop("shutdown")
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        self.workers = []

    async def _work(self) -> None:
        queue = self.queue
        assert queue is not None
        while True:
            job = await queue.get()
            try:
                await self.evaluate(job)
            except asyncio.CancelledError:
                self._drop("shutdown")
                raise
            except Exception as error:  # a bug of ours must not stop the worker
                log.warning("shadow evaluation failed", extra={"error": type(error).__name__})
            finally:
                job.snapshot.inflight.count -= 1
                queue.task_done()

    async def evaluate(self, job: ShadowJob) -> None:
        rule, policy = job.rule, job.snapshot.policy
        scope = budgets.scope(f"shadow:{rule.route}", rule.budget)
        reference = self._reference_model(job)
        reference_name = reference.name if reference is not None else rule.reference
        verdict: Verdict = "error"
        reason = ""
        reference_text = ""
        try:
            if reference is None:
                raise UpstreamError("bad_response", "no eligible reference model")
            completion = await self._call(job, scope, reference, self._reference_body(job, reference), "reference")
            reference_text = answer_of(completion.body)
            judge = policy.models[rule.judge]
            conversation = conversation_text(job.body)
            winners: list[Winner] = []
            for order, (a, b) in enumerate(((job.answer, reference_text), (reference_text, job.answer))):
                messages = judge_messages(conversation, a, b, rule.judge_prompt)
                body = judge_body(messages, "json_schema" in judge.capabilities)
                judged = await self._call(job, scope, judge, body, f"judge{order + 1}")
                winner, reason = parse_winner(judged.body)
                winners.append(winner)
            verdict = combine(winners[0], winners[1])
        except BudgetSpent:
            self._drop("budget")
            return
        except StateUnavailable:
            self._drop("state_store")
            return
        except (UpstreamError, TimeoutError, JudgeUnreadable) as error:
            reason = str(error) if isinstance(error, JudgeUnreadable) else getattr(error, "reason", "timeout")
        self._count(job, reference_name, verdict)
        await self._log(job, reference_name, verdict, reason, reference_text)

    def _reference_model(self, job: ShadowJob) -> Model | None:
        """The rule's model, or the cheapest model of its tier that can serve this request."""
        policy, rule = job.snapshot.policy, job.rule
        if rule.reference_model is not None:
            return policy.models.get(rule.reference_model)
        decision = decide(policy, rule.reference, features_for("chat", job.body, {}), kind="chat")
        for candidate in decision.candidates:
            if candidate.model.tier == rule.reference:
                return candidate.model
        return None

    def _reference_body(self, job: ShadowJob, model: Model) -> dict[str, Any]:
        """The client's body as a single non-stream answer, its output capped as a budgeted
        request's is (so the reservation covers it)."""
        body = {k: v for k, v in job.body.items() if k not in NOT_SENT}
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        cap = budgets.output_cap(job.snapshot.policy.defaults, model, job.prompt_tokens)
        limit = min(asked, cap) if isinstance(asked, int) and asked > 0 else cap
        field_name = "max_tokens"
        if (
            "max_completion_tokens" in body
            or "max_tokens" in job.snapshot.policy.providers[model.provider].unsupported_params
        ):
            field_name = "max_completion_tokens"
        body.pop("max_tokens", None)
        body[field_name] = limit
        return body

    async def _call(
        self, job: ShadowJob, scope: BudgetScope, model: Model, body: dict[str, Any], part: str
    ) -> Completion:
        """One upstream call inside the shadow budget: reserve its most, call, settle its cost."""
        snapshot = job.snapshot
        price = self.accountant.price_of(model)
        prompt_tokens = job.prompt_tokens if part == "reference" else tokens.count_messages(body["messages"])
        most = max(body.get("max_tokens") or 0, body.get("max_completion_tokens") or 0)
        timeouts = snapshot.timeouts(job.route, model)
        call_id = f"{job.request_id}:shadow:{part}"
        reservation = await self.store.reserve(
            scope,
            call_id,
            max(1, budgets.to_micros(price.cost_usd(prompt_tokens, most))),
            math.ceil(timeouts.total_s) + 60,
        )
        if not reservation.admitted:
            raise BudgetSpent
        cost = 0.0
        try:
            async with asyncio.timeout(timeouts.total_s):
                completion = await snapshot.adapters[model.provider].complete(
                    UpstreamCall(model, body, {}, timeouts, call_id)
                )
            usage = completion.usage or Usage(prompt_tokens, tokens.count_text(answer_of(completion.body)))
            cost = price.cost_usd(usage.input_tokens, usage.output_tokens, usage.cached_tokens)
            return completion
        finally:
            await asyncio.shield(
                self.store.settle(scope, call_id, budgets.to_micros(cost))
                if cost
                else self.store.release(scope, call_id)
            )
            if cost:
                self.spend_usd[job.route] = self.spend_usd.get(job.route, 0.0) + cost
                self.metrics.shadow_cost.labels(route=job.route).inc(cost)

    # what is counted ---------------------------------------------------------------------
    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        self.metrics.shadow_dropped.labels(reason=reason).inc()

    def _count(self, job: ShadowJob, reference: str, verdict: Verdict) -> None:
        tally = self.tallies.get((job.route, job.model.name))
        if tally is None:
            tally = self.tallies[(job.route, job.model.name)] = Tally(reference)
        tally.reference_model = reference
        tally.verdicts[verdict] += 1
        self.metrics.shadow_verdicts.labels(
            route=job.route, model=job.model.name, reference_model=reference, verdict=verdict
        ).inc()

    async def _log(self, job: ShadowJob, reference: str, verdict: Verdict, reason: str, reference_text: str) -> None:
        path = self.options.log_path
        if path is None:
            return
        entry: dict[str, Any] = {
            "request_id": job.request_id,
            "time": time.time(),
            "route": job.route,
            "model": job.model.name,
            "reference_model": reference,
            "verdict": verdict,
            "reason": reason,
            "difficulty": job.difficulty,
            "prompt_tokens": job.prompt_tokens,
            "output_tokens": job.output_tokens,
        }
        if job.rule.keep_prompts:
            entry |= {"messages": job.body.get("messages"), "answer": job.answer, "reference_answer": reference_text}
        line = orjson.dumps(entry) + b"\n"
        await asyncio.to_thread(_append, path, line)

    def report(self, snapshot: PolicySnapshot) -> dict[str, Any]:
        """``GET /v1/router/quality``: per route and model, what this process has judged."""
        rows = []
        for (route, model), tally in sorted(self.tallies.items()):
            counts = tally.verdicts
            held, compared = counts["better"] + counts["same"], counts["better"] + counts["same"] + counts["worse"]
            interval = wilson_interval(held, compared)
            rows.append(
                {
                    "route": route,
                    "model": model,
                    "reference_model": tally.reference_model,
                    "judged": sum(counts.values()),
                    "verdicts": dict(counts),
                    "held_share": held / compared if compared else None,
                    "held_interval_95": list(interval) if interval else None,
                }
            )
        rules = {name: rule for name, rule in snapshot.policy.shadow.items()}
        spend = {
            route: {
                "usd": round(self.spend_usd.get(route, 0.0), 8),
                "budget_usd": rule.budget.usd,
                "per": rule.budget.per,
            }
            for route, rule in sorted(rules.items())
        }
        return {
            "object": "router.quality",
            "scope": "process",
            "data": rows,
            "spend": spend,
            "dropped": dict(self.dropped),
        }


def _append(path: Path, line: bytes) -> None:
    with path.open("ab") as file:
        file.write(line)

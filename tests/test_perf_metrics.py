"""The hot path's metric children (``Metrics.child``) record exactly what prometheus_client's
own ``inc``/``observe`` would: same buckets (bounds included), same sums, same refusals; and
the circuit gauge written only on a change still shows every change, a re-prime included."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import Metrics
from router.policy.loader import load_policy

SAMPLES = [0.0, 0.004, 0.005, 0.0050001, 0.1, 1, 2.5, 319.9, 320, 321, 1e9]


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_histogram_child_puts_every_value_in_the_bucket_prometheus_client_would() -> None:
    fast = Metrics()
    reference = CollectorRegistry()
    own = Histogram("router_overhead_seconds", "h", ["route"], buckets=fast.overhead._upper_bounds, registry=reference)
    for value in SAMPLES:  # bounds themselves, just above them, below the first, past the last
        fast.child(fast.overhead, "r").observe(value)
        own.labels("r").observe(value)
    got = {k: v for k, v in _samples(fast).items() if k[0].startswith("router_overhead_seconds")}
    want = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(reference).decode())
        for s in family.samples
        if s.name.startswith("router_overhead_seconds") and not s.name.endswith("_created")
    }
    assert got == want
    assert sum(v for k, v in got.items() if k[0] == "router_overhead_seconds_count") == len(SAMPLES)


def test_counter_child_adds_like_prometheus_client_and_refuses_negative_amounts() -> None:
    metrics = Metrics()
    child = metrics.child(metrics.tokens, "m", "p", "input")
    child.inc()
    child.inc(41)
    assert _samples(metrics)[("router_tokens_total", (("model", "m"), ("provider", "p"), ("type", "input")))] == 42
    with pytest.raises(ValueError):
        child.inc(-1)
    reference = Counter("c", "c", registry=CollectorRegistry())
    with pytest.raises(ValueError):
        reference.inc(-1)


def test_circuit_gauge_shows_each_change_and_the_state_after_a_re_prime() -> None:
    policy = load_policy("benchmarks/policy.yaml")
    metrics = Metrics()
    metrics.prime(policy)
    key = ("router_circuit_state", (("model", "bench-model"), ("provider", "fake")))
    assert _samples(metrics)[key] == 0
    metrics.set_circuit("bench-model", "fake", "open")
    metrics.set_circuit("bench-model", "fake", "open")
    assert _samples(metrics)[key] == 2
    metrics.prime(policy)  # a reload re-primes: the gauge shows closed again...
    assert _samples(metrics)[key] == 0
    metrics.set_circuit("bench-model", "fake", "open")  # ...and the next reading of an open circuit shows
    assert _samples(metrics)[key] == 2
    metrics.set_circuit("bench-model", "fake", "half_open")
    assert _samples(metrics)[key] == 1

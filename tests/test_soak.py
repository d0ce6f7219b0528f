"""C1: a bounded soak. Half the traffic streams; the process's memory stays flat after warm-up."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import one_model_policy, write_policy
from tests.processes import RouterProcess

HELLO = [{"role": "user", "content": "hi"}]
CLIENTS = 4
WARM_UP = 600
MEASURED = 2400
GROWTH_LIMIT_MB = 4.0  # allocator noise; a leak of a few hundred bytes a request would pass it


def rss_mb(router: RouterProcess) -> float:
    assert router.process is not None
    for line in Path(f"/proc/{router.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def traffic(router: RouterProcess, total: int) -> list[str]:
    """``total`` requests from CLIENTS keep-alive clients, every other one streaming; what went wrong."""
    problems: list[str] = []

    def client(share: int, offset: int) -> None:
        with httpx.Client(base_url=f"{router.url}/v1", timeout=30) as http:
            for i in range(share):
                stream = (offset + i) % 2 == 0
                response = http.post(
                    "/chat/completions", json={"model": "standard", "messages": HELLO, "stream": stream}
                )
                if response.status_code != 200 or (stream and not response.text.endswith("data: [DONE]\n\n")):
                    problems.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client, args=(total // CLIENTS, n)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return problems


@pytest.mark.slow
def test_c1_memory_is_flat_after_warm_up_over_thousands_of_requests_half_streaming(tmp_path, upstream):
    policy = write_policy(tmp_path, one_model_policy(upstream.base_url, retries=0))
    with RouterProcess(policy) as router:
        assert traffic(router, WARM_UP) == []
        after_warm_up = rss_mb(router)
        started = time.monotonic()
        assert traffic(router, MEASURED) == []
        elapsed = time.monotonic() - started
        at_the_end = rss_mb(router)
    assert at_the_end - after_warm_up < GROWTH_LIMIT_MB, (after_warm_up, at_the_end, elapsed)

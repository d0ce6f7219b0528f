"""Run a target module with cProfile switched on by SIGUSR1 and off (stats dumped) by SIGUSR2.

    python -m benchmarks.cprofile_serve OUT.prof router serve --workers 1
    python -m benchmarks.cprofile_serve OUT.prof benchmarks.fastapi_app

Used by ``benchmarks.profile --cprofile``: only the measured requests are profiled, not
start-up or warm-up; times are the thread's CPU time, so other load on the machine does not
inflate them.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time
from types import FrameType


def main() -> None:
    out, module, *args = sys.argv[1:]
    profiler = cProfile.Profile(time.thread_time_ns, 1e-9)  # CPU time: waits and other processes do not count

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

"""Diagnostic hook: log event-loop stalls, GC pauses and thread-pool work, stamped with time.monotonic().

Loaded by every Python process started with this directory on PYTHONPATH and LOOPTRACE set (a
path prefix; each process appends to PREFIX.PID), e.g. around `bench.route_breakdown --json`:

    LOOPTRACE=/tmp/trace PYTHONPATH=bench/looptrace .venv/bin/python -m bench.route_breakdown ...

Lines: `cb START WALL_MS cpu=CPU_MS HANDLE` for an event-loop callback over LOOPTRACE_MS (default 1);
`th ...` for a thread-pool work item (asyncio.to_thread) over it; `gc START MS gen=G` for a GC pass
over 0.2 ms; `thread TID NAME TARGET` when a thread starts. CPU is the thread's own: a callback whose
wall time is far above it waited for the GIL or a CPU. The stamps share the benchmark's clock, so
they line up with its per-trial `at` timeline. It slows what it traces a little; not for numbers.
"""

import os

_OUT = os.environ.get("LOOPTRACE")
if _OUT:
    import asyncio.events
    import concurrent.futures.thread
    import functools
    import gc
    import sys
    import threading
    import time
    from collections.abc import Callable
    from typing import Any

    _log = open(f"{_OUT}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115 (open for the process's life)
    _log.write(f"argv {os.getpid()} {' '.join(sys.orig_argv)!r}\n")
    _threshold = float(os.environ.get("LOOPTRACE_MS", "1")) / 1000
    _gc_started = [0.0]

    def _on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _gc_started[0] = time.perf_counter()
            return
        took = time.perf_counter() - _gc_started[0]
        if took > 0.0002:
            _log.write(f"gc {time.monotonic() - took:.6f} {took * 1000:.3f} gen={info['generation']}\n")

    gc.callbacks.append(_on_gc)

    def _timed(kind: str, run: Callable[[Any], Any], describe: Callable[[Any], str]) -> Callable[[Any], Any]:
        def wrapper(self: Any) -> Any:
            wall, start, cpu = time.perf_counter(), time.monotonic(), time.thread_time()
            try:
                return run(self)
            finally:
                took = time.perf_counter() - wall
                if took > _threshold:
                    cpu_ms = (time.thread_time() - cpu) * 1000
                    _log.write(f"{kind} {start:.6f} {took * 1000:.3f} cpu={cpu_ms:.2f} {describe(self)[:200]}\n")

        return wrapper

    def _work_item(item: Any) -> str:
        fn = item.fn
        if isinstance(fn, functools.partial) and fn.args:  # asyncio.to_thread: partial(context.run, func, ...)
            fn = fn.args[0]
        return getattr(fn, "__qualname__", repr(fn))

    asyncio.events.Handle._run = _timed("cb", asyncio.events.Handle._run, repr)
    concurrent.futures.thread._WorkItem.run = _timed("th", concurrent.futures.thread._WorkItem.run, _work_item)
    _thread_run = threading.Thread.run

    def _announced_run(self: threading.Thread) -> None:
        _log.write(f"thread {threading.get_native_id()} {self.name} {getattr(self, '_target', None)!r}\n"[:300])
        _thread_run(self)

    threading.Thread.run = _announced_run

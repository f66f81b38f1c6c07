"""Run a function over jobs in worker processes, with a progress bar, results in job order.

Ctrl-C reaches the parent alone: the workers ignore SIGINT (they start with it ignored, so that not even one
starting up prints a traceback), and the parent, on ``KeyboardInterrupt``, cancels the queued jobs, stops the
workers and re-raises it.
"""

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from functools import partial
from typing import Literal, TypeVar

from tqdm.auto import tqdm

Job = TypeVar("Job")
Result = TypeVar("Result")


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker(initializer: Callable[[], None] | None) -> None:
    """Worker start: ignore Ctrl-C (the parent handles it), then run the caller's initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT in this process meanwhile, so that the processes started here inherit it ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Terminate the workers (their current jobs are abandoned) and cancel the queued jobs.

    The pool's manager thread is joined before returning: left running at interpreter exit, it races
    ``concurrent.futures``' exit hook, which then prints an ``OSError`` traceback.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
    pool.shutdown(wait=True, cancel_futures=True)


def map_in_processes(
    function: Callable[[Job], Result],
    jobs: Sequence[Job],
    workers: int | None,
    start_method: Literal["fork", "spawn"],
    progress: bool,
    desc: str,
    unit: str,
    initializer: Callable[[], None] | None = None,
) -> list[Result]:
    """``[function(job) for job in jobs]``, in this process (one worker) or a pool of ``workers`` processes.

    Args:
        function: A picklable module-level function.
        jobs: Its inputs.
        workers: Processes (default: every available core); never more than there are jobs.
        start_method: How workers start: fork (at once, sharing the parent's imports; Linux) or spawn (fresh
            interpreters). Fork falls back to spawn where the platform has no fork.
        progress: Show a progress bar (``desc``, counting ``unit``).
        desc: Label of the progress bar.
        unit: What one job is, for the progress bar.
        initializer: Run once in each worker process (a picklable module-level function).

    Returns:
        The results, in job order. The first exception of a job cancels the rest and is raised. Ctrl-C
        (``KeyboardInterrupt``) cancels the queued jobs, terminates the workers and is raised.
    """
    n_workers = min(workers if workers is not None else available_cores(), len(jobs))
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress) as bar:
        if n_workers <= 1:
            results = []
            for job in jobs:
                results.append(function(job))
                bar.update()
            return results
        method = start_method if start_method in multiprocessing.get_all_start_methods() else "spawn"
        by_index: dict[int, Result] = {}
        context = multiprocessing.get_context(method)
        start = partial(_start_worker, initializer)
        with ProcessPoolExecutor(n_workers, mp_context=context, initializer=start) as pool:
            with _sigint_ignored():  # the workers start (on submit) with SIGINT ignored
                futures = {pool.submit(function, job): i for i, job in enumerate(jobs)}
            try:
                for future in as_completed(futures):
                    by_index[futures[future]] = future.result()
                    bar.update()
            except KeyboardInterrupt:
                _stop(pool)
                raise
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return [by_index[i] for i in range(len(jobs))]

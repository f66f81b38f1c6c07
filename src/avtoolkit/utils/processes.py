"""Run a function over jobs in worker processes, with a progress bar, results in job order."""

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Literal, TypeVar

from tqdm.auto import tqdm

Job = TypeVar("Job")
Result = TypeVar("Result")


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
        initializer: Run once in each worker process.

    Returns:
        The results, in job order. The first exception of a job cancels the rest and is raised.
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
        with ProcessPoolExecutor(n_workers, mp_context=context, initializer=initializer) as pool:
            futures = {pool.submit(function, job): i for i, job in enumerate(jobs)}
            try:
                for future in as_completed(futures):
                    by_index[futures[future]] = future.result()
                    bar.update()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return [by_index[i] for i in range(len(jobs))]

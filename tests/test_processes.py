"""Worker pools: Ctrl-C reaches the parent alone, which stops the workers and raises KeyboardInterrupt."""

import os
import signal
import subprocess
import sys
import time

import pytest
from fixtures.processes import group_ends

CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)
from avtoolkit.utils.processes import map_in_processes
if __name__ == "__main__":
    print("started", flush=True)
    try:
        # A few short jobs, then a long one: one worker waits for work, the other is busy when Ctrl-C comes.
        map_in_processes(time.sleep, [0.1] * 4 + [300.0], 2, sys.argv[1], False, "sleep", "job")
    except KeyboardInterrupt:
        print("parent: KeyboardInterrupt", file=sys.stderr)
        sys.exit(130)
"""


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_ctrl_c_stops_the_pool_without_worker_tracebacks(start_method, tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job: Ctrl-C reaches all of it
    )
    assert child.stdout is not None and child.stdout.readline() == "started\n"
    time.sleep(8 if start_method == "spawn" else 3)  # the workers are running jobs
    os.killpg(child.pid, signal.SIGINT)
    started = time.monotonic()
    _, stderr = child.communicate(timeout=60)
    assert time.monotonic() - started < 20, "the parent waited for the running job"
    assert child.returncode == 130
    assert stderr.strip() == "parent: KeyboardInterrupt", stderr
    assert group_ends(child.pid), "a worker was left behind"

"""Process hygiene: curation workers die with the run that started them.

Why: a curation run over 160K clips is stopped with Ctrl-C, ``kill`` or ``kill -9`` all the time. A worker
that outlives its parent keeps decoding (and calling the LLM) for nobody, holds the output files and the GPU
of a local model, and a second run started beside it races it. So every worker asks the kernel to kill it
when its parent dies (Linux ``PR_SET_PDEATHSIG``), with a watchdog thread where that is not available, and
the parent, on Ctrl-C or any exception, kills its workers itself instead of waiting for their clips.

A local Ray started by the run is covered by a reaper: a small process that watches the run's descendants
while the run lives and kills the ones left when it dies. Ray makes its raylet and GCS die with the driver,
but its agents only notice after a few seconds and then wait on the dead GCS to flush their logs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_INTERVAL_S = 0.5


def _set_parent_death_signal() -> bool:
    """Ask Linux to send SIGKILL to this process when its parent dies; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # the parent is gone (this process was re-parented): nobody will read our results
        time.sleep(WATCHDOG_INTERVAL_S)


def die_with_parent(parent_pid: int) -> None:
    """Called first thing in a worker: end this process as soon as ``parent_pid`` ends, however it ends.

    Linux delivers the signal when the parent *thread* that started the worker exits; the pipeline starts its
    workers from the thread that runs the whole pool, so that thread outlives them. The watchdog thread covers
    other systems and the moment before ``prctl`` took effect (the parent may already have died)."""
    _set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="ophora-parent-watchdog", daemon=True).start()


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Drop the queued clips and kill the running workers now (their clips are retried by the next run).

    ``shutdown(cancel_futures=True)`` alone would still wait for every running clip to finish."""
    kill = getattr(pool, "kill_workers", None)  # Python 3.14+
    if kill is not None:
        kill()
        pool.shutdown(wait=False, cancel_futures=True)
        return
    # Python <= 3.13 has no public API for it; taken before shutdown(), which forgets the processes
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        try:
            process.kill()
        except (OSError, ValueError):
            pass  # already gone


REAPER_INTERVAL_S = 0.25


def start_reaper() -> subprocess.Popen:
    """Start a reaper for this process (see the module docstring); it ends by itself after this process."""
    # run as a file, not ``-m``: the reaper needs psutil only, not the whole curation package
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "reap", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True)


def reap(parent_pid: int) -> int:
    """Record ``parent_pid``'s descendants while it runs; once it is gone, kill those still running."""
    import psutil

    me = os.getpid()
    try:
        parent = psutil.Process(parent_pid)
    except psutil.NoSuchProcess:
        return 0
    watched: dict[int, psutil.Process] = {}
    while True:
        try:
            if not parent.is_running() or parent.status() == psutil.STATUS_ZOMBIE:
                break
            watched.update({child.pid: child for child in parent.children(recursive=True) if child.pid != me})
        except psutil.NoSuchProcess:
            break
        time.sleep(REAPER_INTERVAL_S)
    victims: dict[int, psutil.Process] = {}
    for process in watched.values():
        try:
            victims.update({p.pid: p for p in [process, *process.children(recursive=True)] if p.pid != me})
        except psutil.NoSuchProcess:
            continue
    for process in victims.values():
        try:
            process.kill()  # psutil checks the pid still names the same process (no pid-reuse accidents)
        except psutil.Error:
            continue
    return 0


__all__ = ["die_with_parent", "reap", "start_reaper", "stop_workers"]


if __name__ == "__main__":  # python .../ophora/curation/processes.py reap PID
    if len(sys.argv) != 3 or sys.argv[1] != "reap":
        sys.exit(f"usage: python {sys.argv[0]} reap PID")
    sys.exit(reap(int(sys.argv[2])))

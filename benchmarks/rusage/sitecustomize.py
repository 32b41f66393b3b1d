"""Exact CPU and peak memory of every Python process of a ``bench_cohort.py`` run (this folder is put first on the
run's ``PYTHONPATH``, so every process, each DAG job's ``palmares`` included, imports this module at start-up).

With ``BENCH_RUSAGE_FILE`` set, a process appends one JSON line there when it exits: its ``argv``, its CPU seconds
(user + system, ``getrusage``, its child processes' too) and its peak RSS. Snakemake's own ``benchmark:`` files
sample a job's CPU about once a second and so miss what a job spends after its last sample (on 2026-12-03, at
clinical size: 0.21 CPU-s per patient of 4.63 for the one job per patient, 0.33 of 23.55 for the seven jobs per
patient of the tree before issue 18). Without the variable this does nothing.
"""

import atexit
import json
import os
import resource
import sys

_FILE = os.environ.get("BENCH_RUSAGE_FILE")


def _record() -> None:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    line = json.dumps({"argv": sys.argv, "cpu_s": sum(u.ru_utime + u.ru_stime for u in (own, children)),
                       "max_rss_mb": max(own.ru_maxrss, children.ru_maxrss) / 1024}) + "\n"  # Linux: KiB
    handle = os.open(_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(handle, line.encode())  # one write: lines of processes exiting together do not interleave
    finally:
        os.close(handle)


if _FILE:
    atexit.register(_record)

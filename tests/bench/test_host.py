"""The harness reads a broker's process tree from /proc: its memory and its CPU time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from mqim.bench._host import process_tree_cpu_s, process_tree_rss


def test_cpu_time_counts_the_children_too() -> None:
    # A parent that waits while its child burns CPU: the tree's time is the child's.
    script = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'], timeout=30)"
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        time.sleep(0.3)
        first = process_tree_cpu_s(parent.pid)
        time.sleep(0.7)
        second = process_tree_cpu_s(parent.pid)
        assert first is not None
        assert second is not None
        assert second - first > 0.2  # the child ran most of that time
        assert (process_tree_rss(parent.pid) or 0) > 0
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the child too: it is in the parent's group
        parent.wait(5)


def test_a_gone_process_has_no_figures() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    assert process_tree_cpu_s(child.pid) is None
    assert process_tree_rss(child.pid) is None
    assert (process_tree_cpu_s(os.getpid()) or 0) > 0

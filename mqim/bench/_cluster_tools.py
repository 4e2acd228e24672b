"""The programs a bench cluster needs besides mqim: redis-server and SecantusDB."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys


def redis_server_binary() -> str | None:
    """Where redis-server is (PATH, else Debian's /usr/bin), or None if it is not installed."""
    found = shutil.which("redis-server")
    if found is None and os.path.exists("/usr/bin/redis-server"):
        found = "/usr/bin/redis-server"
    return found


def cluster_unavailable() -> str | None:
    """Why the `cluster` scenario cannot run here (no redis-server or SecantusDB), or None."""
    if redis_server_binary() is None:
        return "redis-server is not installed (scripts/install-services installs it)"
    # Only located, never imported: SecantusDB runs as a separate `python -m secantus` process.
    if importlib.util.find_spec("secantus") is None:
        return f"`{sys.executable} -m secantus` is unavailable: SecantusDB is not installed in this venv"
    return None

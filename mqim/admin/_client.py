"""Reading a running server's `/status` (for `mqim status`)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from mqim.admin._exceptions import AdminError


def _get(url: str, timeout_s: float) -> Any:
    # Blocking: run in a thread. Only http:// URLs are followed (no file:// or other schemes).
    if not url.startswith(("http://", "https://")):
        raise AdminError(f"not an http(s) URL: {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AdminError(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"cannot reach {url}: {reason}") from exc
    except ValueError as exc:
        raise AdminError(f"{url}: not JSON ({exc})") from exc


async def fetch_status(base_url: str, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """The `/status` document of the server whose admin listener is at `base_url`.

    Raises:
        AdminError: Unreachable, not an admin endpoint, or not JSON.
    """
    url = base_url.rstrip("/") + "/status"
    doc = await asyncio.to_thread(_get, url, timeout_s)
    if not isinstance(doc, dict):
        raise AdminError(f"{url}: not a status document")
    return doc

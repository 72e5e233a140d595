"""After a rollout: does each app of the env answer its health path through the edge?

The smoke suite (smoke.py, issue #5) goes further; this is the check a deploy cannot skip.
"""

from __future__ import annotations

import time

import requests

from .config import Config
from .endpoints import app_endpoint


def health_failures(config: Config, env: str, attempts: int = 10,
                    delay: float = 1.0) -> list[str]:
    """Empty when every app with a domain answers 200 on its health path (with retries)."""
    failures = []
    for app in config.apps(env):
        endpoint = app_endpoint(config, app, app.health.path)
        if endpoint is None:
            continue
        last = ""
        for attempt in range(attempts):
            try:
                response = requests.get(endpoint.url, headers=endpoint.headers, timeout=5,
                                        allow_redirects=False)
                if response.status_code == 200:
                    last = ""
                    break
                last = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                last = type(exc).__name__
            if attempt + 1 < attempts:
                time.sleep(delay)
        if last:
            failures.append(f"{app.name} {endpoint.host}{app.health.path}: {last}")
    return failures

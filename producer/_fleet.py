"""The credentials a producer serves, by app id, and what a new apps file changes.

`Fleet` holds one `AppRefresher` per app behind a lock (the listener, the follower, the
main thread and the workers all look things up). `apply(apps)` compares a freshly loaded
apps file with what runs: new apps get a refresher, removed ones are dropped, an app
whose configuration changed (secret, token API) keeps its refresher and state and uses
the new configuration from its next fetch, and unchanged apps are not touched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .apps import AppConfig
from .refresher import AppRefresher


@dataclass(frozen=True)
class Reloaded:
    """What applying an apps file changed (app ids), and the refreshers it created."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: int
    new: list[AppRefresher] = field(default_factory=list, repr=False)


class Fleet:
    """Refreshers by app id; thread-safe."""

    def __init__(
        self, apps: Sequence[AppConfig], make: Callable[[AppConfig], AppRefresher]
    ) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._refreshers = {app.app_id: make(app) for app in apps}

    def all(self) -> list[AppRefresher]:
        with self._lock:
            return list(self._refreshers.values())

    def get(self, app_id: str) -> AppRefresher | None:
        with self._lock:
            return self._refreshers.get(app_id)

    def app_ids(self) -> list[str]:
        with self._lock:
            return list(self._refreshers)

    def __len__(self) -> int:
        return len(self._refreshers)

    def apply(self, apps: Sequence[AppConfig]) -> Reloaded:
        """Serve exactly `apps` from now on (see the module docstring)."""
        wanted = {app.app_id: app for app in apps}
        added: list[str] = []
        changed: list[str] = []
        with self._lock:
            removed = [app_id for app_id in self._refreshers if app_id not in wanted]
            for app_id in removed:
                del self._refreshers[app_id]
            for app_id, app in wanted.items():
                refresher = self._refreshers.get(app_id)
                if refresher is None:
                    self._refreshers[app_id] = self._make(app)
                    added.append(app_id)
                elif refresher.app != app:
                    refresher.app = app
                    changed.append(app_id)
            new = [self._refreshers[app_id] for app_id in added]
        unchanged = len(wanted) - len(added) - len(changed)
        return Reloaded(added, removed, changed, unchanged, new)

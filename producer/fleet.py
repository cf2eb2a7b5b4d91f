"""The credentials a producer serves, by app id, and what a new apps file changes.

`Fleet` holds one `AppRefresher` per credential of each app behind a lock (the
listener, the follower, the main thread and the workers all look things up).
`apply(apps)` compares a freshly loaded apps file with what runs: new apps get
refreshers, removed ones are dropped, an app whose configuration changed (secret, token
API) keeps its refreshers and state and uses the new configuration from their next
fetch (one whose tickets changed gets new refreshers), and unchanged apps are untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consumer_lib.wire.kinds import TokenKind
from producer.apps import AppConfig
from producer.refresh.refresher import AppRefresher


@dataclass(frozen=True)
class Reloaded:
    """What applying an apps file changed (app ids), and the refreshers it created or
    dropped (an app whose credentials changed has its refreshers replaced)."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: int
    new: list[AppRefresher] = field(default_factory=list, repr=False)
    dropped: list[AppRefresher] = field(default_factory=list, repr=False)


class Fleet:
    """Refreshers by app id, one per credential (the token first); thread-safe."""

    def __init__(
        self, apps: Sequence[AppConfig], make: Callable[[AppConfig], list[AppRefresher]]
    ) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._refreshers = {app.app_id: make(app) for app in apps}

    def all(self) -> list[AppRefresher]:
        """Every credential's refresher, each app's token before its tickets."""
        with self._lock:
            return [r for of_app in self._refreshers.values() for r in of_app]

    def get(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> AppRefresher | None:
        with self._lock:
            for refresher in self._refreshers.get(app_id, ()):
                if refresher.kind is kind:
                    return refresher
            return None

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
        new: list[AppRefresher] = []
        dropped: list[AppRefresher] = []
        with self._lock:
            removed = [app_id for app_id in self._refreshers if app_id not in wanted]
            for app_id in removed:
                dropped.extend(self._refreshers.pop(app_id))
            for app_id, app in wanted.items():
                of_app = self._refreshers.get(app_id)
                if of_app is None:
                    self._refreshers[app_id] = made = self._make(app)
                    new.extend(made)
                    added.append(app_id)
                    continue
                held = of_app[0].app
                if held is app or held == app:  # the roster hands back the same objects
                    continue
                changed.append(app_id)
                if of_app[0].app.credentials != app.credentials:
                    dropped.extend(of_app)  # other tickets: new refreshers, new schedule
                    self._refreshers[app_id] = made = self._make(app)
                    new.extend(made)
                    continue
                for refresher in of_app:
                    refresher.app = app
        unchanged = len(wanted) - len(added) - len(changed)
        return Reloaded(added, removed, changed, unchanged, new, dropped)

"""Events recorded since the served model was trained, kept in memory so that recommendations for a user
follow what they did a second ago, without retraining.

The overlay holds raw ids (text), not item indices, so it outlives a model swap unchanged; after a swap it is
rebuilt from the event store with the events the new model has not folded in (`seq > watermark`). Each
user keeps at most `max_per_user` of their latest events here (the store keeps them all).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import pandas as pd


class Overlay:
    def __init__(self, max_per_user: int = 10_000):
        self.max_per_user = max_per_user
        self._events: dict[str, deque[tuple[str, float]]] = {}

    def __len__(self) -> int:
        """Number of users with events in the overlay."""
        return len(self._events)

    def add(self, events: Iterable[tuple[str, str, float]]) -> None:
        """Append (user, item, value) triples, oldest first."""
        for user, item, value in events:
            queue = self._events.get(user)
            if queue is None:
                queue = self._events[user] = deque(maxlen=self.max_per_user)
            queue.append((item, value))

    def reset(self, frame: pd.DataFrame) -> None:
        """Replace everything with the events of `frame` (columns user, item, value; ordered by seq)."""
        self._events = {}
        self.add(zip(frame["user"].astype(str), frame["item"].astype(str), frame["value"].astype(float)))

    def user(self, user: str) -> tuple[list[str], list[float]]:
        """The user's (items, values), oldest first; empty lists for a user with no recent events."""
        queue = self._events.get(user)
        if not queue:
            return [], []
        items, values = zip(*queue)
        return list(items), list(values)

    def drop(self, user: str) -> None:
        self._events.pop(user, None)

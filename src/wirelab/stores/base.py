"""What the app needs from durable storage: one interface, an embedded engine and a real one.

Theory of operation: a store keeps three things, each with one rule that both engines enforce the
same way (tests/stores/test_contract.py runs every rule against both).

- Feed events: a topic's versions are written once. Two instances that both think they hold the
  next version race on the (topic, version) key, and the loser gets `VersionConflict` with nothing
  written, so it can re-read the topic and try again.
- Comments: rows of a post, read oldest first.
- Idempotency records: `claim` is the only way to start executing a keyed request, and it is
  atomic, so of any number of concurrent claims exactly one executes. The response it produces is
  written with `completes=` in the same transaction as the request's own write, so a crash never
  leaves a comment without its stored response, or a response for a comment never written.

VersionConflict is defined by the feed, which catches it (it may not import this family), and is
re-exported here for the store's users.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from wirelab.feed import Entry, EventStore
from wirelab.feed.store import VersionConflict
from wirelab.proto.idempotency import Completion, KeyRecord

__all__ = ["Comment", "Store", "VersionConflict"]


@dataclass(frozen=True, slots=True)
class Comment:
    """One comment on a post; `created_at` is UTC epoch seconds."""

    id: str
    post: str
    text: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "post": self.post, "text": self.text, "created_at": self.created_at}


class Store(EventStore, Protocol):
    """A feed's event store that also keeps comments and idempotency records (times: epoch seconds)."""

    async def open(self) -> None:
        """Connect and bring the schema up to date; safe to run again, and by two instances at once."""

    async def close(self) -> None:
        """Release the connections; a store closed twice stays closed."""

    async def append(self, entry: Entry, *, completes: Completion | None = None) -> None:
        """Write the next version of a topic, with `completes` in the same transaction.

        Raises VersionConflict, having written nothing, if that version already exists.
        """

    async def open_topics(self, prefix: str) -> list[Entry]:
        """The latest entry of each topic under `prefix` not closed by a final entry (work to resume)."""

    async def add_comment(self, comment: Comment, *, completes: Completion | None = None) -> None:
        """Write `comment`, with `completes` in the same transaction."""

    async def comments(self, post: str, *, limit: int = 1000) -> list[Comment]:
        """The comments of `post`, oldest first."""

    async def count_comments(self, post: str) -> int:
        """How many comments `post` has."""

    async def claim(
        self, key: str, fingerprint: str, *, now: float, stale_before: float, expired_before: float
    ) -> KeyRecord | None:
        """Claim `key` to execute its request: None if it is now ours, else its record, untouched.

        The key is ours when it has no record, when its record was claimed before `expired_before`,
        or when its record is still in flight but was claimed before `stale_before` (its request
        died). Atomic: of concurrent claims of one key, exactly one gets None.
        """

    async def complete(self, completion: Completion) -> None:
        """Store the response of a claimed key, outside any other write."""

    async def release(self, key: str) -> None:
        """Forget an in-flight key (its request failed), so that a retry executes afresh."""

    async def sweep_keys(self, *, expired_before: float) -> int:
        """Delete the records claimed before `expired_before`; how many went."""

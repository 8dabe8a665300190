"""The reply cache: every finished reply is stored at once, so an interrupted phase redoes only what is missing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from .. import console
from ..errors import BackendError
from ..store import Store
from . import PROMPT_TOO_LONG, ChatModel, Conversation, OnReply, Reply, Sampling


def reply_key(model_name: str, conversation: Conversation, sampling: Sampling, json_schema: dict[str, Any] | None) -> str:
    """Everything that determines a reply, hashed: the same request is never sent twice."""
    payload = [model_name, conversation, dataclasses.asdict(sampling), json_schema]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class CachedChat:
    """Any ChatModel behind a reply store: only requests without a stored reply go to the model, all in one
    call, and each reply is stored as it finishes (committed at least every `commit_seconds`, and on any
    exit), so an interrupted phase loses about a second of work. Shows a progress bar named by `label`.

    A backend that fails mid-batch (BackendError) is reported with how many of the batch's replies are
    stored and how to resume. `asked` counts the replies the model gave, for the run's time estimate.
    """

    def __init__(self, model: ChatModel, store: Store, commit_seconds: float = 1.0):
        self.model = model
        self.store = store
        self.commit_seconds = commit_seconds
        self.name = model.name
        self.asked = 0

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling, json_schema: dict[str, Any] | None = None,
             on_reply: OnReply | None = None, label: str = "") -> list[Reply]:
        keys = [reply_key(self.name, c, sampling, json_schema) for c in conversations]
        stored = self.store.get_many(keys)
        replies = [Reply.from_json(stored[key]) if key in stored else None for key in keys]
        positions: dict[str, list[int]] = {}  # missing key -> where it occurs; duplicates are sent once
        for i, key in enumerate(keys):
            if replies[i] is None:
                positions.setdefault(key, []).append(i)
        todo = list(positions)
        uncommitted: dict[str, bytes] = {}
        last_commit = time.monotonic()

        def commit() -> None:
            nonlocal last_commit
            if uncommitted:
                self.store.put_many(uncommitted)
                uncommitted.clear()
            last_commit = time.monotonic()

        with console.Progress(len(keys), label or self.name, "reply",
                              initial=len(keys) - sum(map(len, positions.values()))) as bar:

            def finished(j: int, reply: Reply) -> None:
                self.asked += 1
                if reply.finish_reason != PROMPT_TOO_LONG:
                    uncommitted[todo[j]] = reply.to_json()
                if time.monotonic() - last_commit >= self.commit_seconds:
                    commit()
                for i in positions[todo[j]]:
                    replies[i] = reply
                    if on_reply is not None:
                        on_reply(i, reply)
                bar.update(len(positions[todo[j]]))

            if on_reply is not None:
                for i, reply in enumerate(replies):
                    if reply is not None:
                        on_reply(i, reply)
            try:
                if todo:
                    asked = [conversations[positions[key][0]] for key in todo]
                    self.model.chat(asked, sampling, json_schema, finished, label)
            except BackendError as err:
                commit()
                stored = len(self.store.get_many(keys))
                raise type(err)(f"{err}. {stored} of the {len(set(keys))} replies of {label or 'this batch'} are stored "
                                f"in {self.store.path}; run the same command again to resume: only the missing replies "
                                "are asked for") from err
            finally:
                commit()
        return replies  # type: ignore[return-value]

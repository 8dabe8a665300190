"""Both LLM backends against the real packaged SmolLM2 on CPU: vLLM in this process, and a real vLLM
OpenAI-compatible server on loopback. What a phase relies on holds for both (JSON schemas, each reply to its
own conversation, logprobs, a prompt too long failing alone); what only one has is tested on that one."""

from __future__ import annotations

import json
import threading

import jsonschema
import pytest
from conftest import SHARED_DATA, SMOLLM

from lift_local.llm import PROMPT_TOO_LONG, Reply, Sampling
from lift_local.llm.backend import load_chat_model
from lift_local.llm.cache import CachedChat
from lift_local.llm.server import ServerChat
from lift_local.records import read_records
from lift_local.store import Store

pytestmark = pytest.mark.vllm

SCORE_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "reason": {"type": "string", "maxLength": 60},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server_url(served_smollm):
    """The session's vLLM server of SmolLM2, started after the in-process tests (see `chat`)."""
    return served_smollm[0]


@pytest.fixture(scope="module", params=["in-process", "server"])
def chat(request):
    """Each backend in turn; pytest runs every in-process test before the server starts (a module-scoped
    parameter groups the tests), so one engine runs at a time."""
    if request.param == "in-process":
        return request.getfixturevalue("smollm")
    return ServerChat(request.getfixturevalue("server_url"), SMOLLM)


@pytest.fixture(scope="module")
def instructions():
    records = read_records(SHARED_DATA / "dolly_3k.json")[:6]
    return [[{"role": "user", "content": f"{r.instruction}\n\n{r.input}".strip()}] for r in records]


# --- in process only ---


def test_rewriter_and_judge_share_one_engine(smollm):
    assert load_chat_model("rewriter") is smollm
    assert load_chat_model("judge") is smollm


def test_an_interrupted_batch_leaves_the_engine_ready(smollm, instructions, tmp_path):
    """A consumer failing mid-batch aborts the rest; the finished reply is stored and the next call works."""
    store = Store(tmp_path / "replies.sqlite", "replies")

    def fail(i, reply):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        CachedChat(smollm, store).chat(instructions[:4], Sampling(max_tokens=16), on_reply=fail)
    assert len(store) == 1
    assert not smollm.llm.llm_engine.has_unfinished_requests()
    replies = CachedChat(smollm, store).chat(instructions[:4], Sampling(max_tokens=16))
    assert len(store) == 4 and all(isinstance(reply, Reply) for reply in replies)


def test_a_sampled_batch_of_long_prompts_survives_chunked_prefill(smollm):
    """Regression: on CPU, per-request seeds plus a chunked prefill killed the engine ("CPU Generator
    does not use offset"): one seeded request whose prompt is cut at the end of a step's token budget does
    it. Long prompts of twice that budget in all (more than one step's prefill, whatever the order) suffice."""
    budget = smollm.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens  # on CPU vLLM's 4096
    tokenizer = smollm.llm.get_tokenizer()
    conversations, tokens = [], 0
    for record in read_records(SHARED_DATA / "dolly_3k.json"):
        if len(record.output) > 1500 and tokens <= 2 * budget:
            text = f"Summarise:\n{record.output}"
            conversations.append([{"role": "user", "content": text}])
            tokens += len(tokenizer.encode(text))  # fewer than the prompt's: the chat template adds some
    replies = smollm.chat(conversations, Sampling(temperature=0.7, max_tokens=4, seed=3))
    assert len(replies) == len(conversations) and all(r.finish_reason in ("stop", "length") for r in replies)


# --- both backends ---


def test_json_schema_replies_parse_and_match_the_schema(chat, instructions):
    judge = [[{"role": "system", "content": "Rate the instruction from 1 to 10. Reply in JSON."}, *c] for c in instructions]
    delivered: dict[int, Reply] = {}

    def on_reply(i, reply):
        assert i not in delivered  # each reply reported once
        delivered[i] = reply

    # Sampled (on CPU unseeded, see VLLMChat.chat); the schema bounds a reply below ~80 tokens.
    replies = chat.chat(judge, Sampling(max_tokens=128, temperature=0.7), SCORE_SCHEMA, on_reply=on_reply)
    assert delivered == dict(enumerate(replies)) and len(replies) == len(instructions)
    for reply in replies:
        assert reply.finish_reason == "stop", reply
        jsonschema.validate(json.loads(reply.text), SCORE_SCHEMA)


def test_each_reply_belongs_to_its_own_conversation(chat):
    """A copying task that even a 135M model gets right shows replies are not shuffled between requests."""
    numbers = [417, 8, 2931, 56]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    asks = [[{"role": "user", "content": f'Output exactly this JSON object: {{"n": {n}}}'}] for n in numbers]
    replies = chat.chat(asks, Sampling(max_tokens=16, temperature=0.0), json_schema=schema)
    assert [json.loads(reply.text)["n"] for reply in replies] == numbers


def test_logprobs_cover_every_generated_token(chat, instructions):
    (reply,) = chat.chat(instructions[:1], Sampling(max_tokens=8, logprobs=2, temperature=0.0))
    assert reply.text.strip() and reply.logprobs is not None
    assert len(reply.logprobs) == 8 if reply.finish_reason == "length" else 1 <= len(reply.logprobs) <= 8
    assert all(1 <= len(top) <= 3 and all(lp <= 0 for lp in top.values()) for top in reply.logprobs)
    # Greedy decoding picks the most likely token, so the text starts with the top token at position 0.
    assert reply.text.startswith(max(reply.logprobs[0], key=reply.logprobs[0].get))


def test_a_prompt_longer_than_the_model_fails_alone(chat, instructions):
    too_long = [{"role": "user", "content": "word " * 5000}]  # over max_model_len (4096 in process, 2048 served)
    replies = chat.chat([too_long, instructions[0]], Sampling(max_tokens=8))
    assert replies[0] == Reply("", PROMPT_TOO_LONG)
    assert replies[1].text.strip()


# --- the server only ---


def test_client_finds_the_served_model(server_url):
    assert ServerChat(server_url).name == SMOLLM


def test_concurrency_is_bounded(server_url, instructions, monkeypatch):
    chat = ServerChat(server_url, SMOLLM, max_concurrency=2)
    in_flight, peak, lock = 0, 0, threading.Lock()
    one = chat._one

    def counting(*args):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            return one(*args)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(chat, "_one", counting)
    replies = chat.chat(instructions, Sampling(max_tokens=16))
    assert peak == 2 and len(replies) == len(instructions)  # both workers busy at once, never more

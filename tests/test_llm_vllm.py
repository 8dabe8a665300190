"""The in-process vLLM backend with the packaged SmolLM2 on CPU: real instructions, JSON schemas, on_reply."""

from __future__ import annotations

import json

import jsonschema
import pytest
from conftest import SHARED_DATA

from lift_local.llm import PROMPT_TOO_LONG, Reply, Sampling
from lift_local.llm.backend import load_chat_model
from lift_local.llm.cache import CachedChat
from lift_local.records import read_records
from lift_local.store import Store

pytestmark = pytest.mark.vllm

JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "reason": {"type": "string", "maxLength": 60},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine(smollm):
    """The session's SmolLM2 engine (conftest.py), which is also the rewriter's default."""
    return smollm


@pytest.fixture(scope="module")
def instructions():
    records = read_records(SHARED_DATA / "dolly_3k.json")[:6]
    return [[{"role": "user", "content": f"{r.instruction}\n\n{r.input}".strip()}] for r in records]


def test_rewriter_and_judge_share_one_engine(engine):
    assert load_chat_model("rewriter") is engine
    assert load_chat_model("judge") is engine


def test_answers_real_instructions_reporting_each_once(engine, instructions):
    delivered: dict[int, Reply] = {}

    def on_reply(i, reply):
        assert i not in delivered
        delivered[i] = reply

    replies = engine.chat(instructions, Sampling(max_tokens=32), on_reply=on_reply)
    assert len(replies) == len(instructions)
    assert delivered == dict(enumerate(replies))
    assert all(reply.text.strip() for reply in replies)
    assert {reply.finish_reason for reply in replies} <= {"stop", "length"}


def test_json_schema_replies_parse_and_match_the_schema(engine, instructions):
    judge = [[{"role": "system", "content": "Rate the instruction from 1 to 10. Reply in JSON."}, *c] for c in instructions]
    # Sampled (on CPU unseeded, see VLLMChat.chat); the schema bounds a reply below ~80 tokens.
    replies = engine.chat(judge, Sampling(max_tokens=128, temperature=0.7), json_schema=JUDGE_SCHEMA)
    for reply in replies:
        assert reply.finish_reason == "stop", reply
        jsonschema.validate(json.loads(reply.text), JUDGE_SCHEMA)


def test_each_reply_belongs_to_its_own_conversation(engine):
    """A copying task that even a 135M model gets right shows replies are not shuffled between requests."""
    numbers = [417, 8, 2931, 56]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    asks = [[{"role": "user", "content": f'Output exactly this JSON object: {{"n": {n}}}'}] for n in numbers]
    replies = engine.chat(asks, Sampling(max_tokens=16, temperature=0.0), json_schema=schema)
    assert [json.loads(reply.text)["n"] for reply in replies] == numbers


def test_logprobs_cover_every_generated_token(engine, instructions):
    (reply,) = engine.chat(instructions[:1], Sampling(max_tokens=8, logprobs=2, temperature=0.0))
    assert reply.logprobs is not None
    assert len(reply.logprobs) == 8 if reply.finish_reason == "length" else 1 <= len(reply.logprobs) <= 8
    assert all(1 <= len(top) <= 3 and all(lp <= 0 for lp in top.values()) for top in reply.logprobs)
    # Greedy decoding picks the most likely token, so the text starts with the top token at position 0.
    assert reply.text.startswith(max(reply.logprobs[0], key=reply.logprobs[0].get))


def test_an_interrupted_batch_leaves_the_engine_ready(engine, instructions, tmp_path):
    """A consumer failing mid-batch aborts the rest; the finished reply is stored and the next call works."""
    store = Store(tmp_path / "replies.sqlite", "replies")

    def fail(i, reply):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        CachedChat(engine, store).chat(instructions[:4], Sampling(max_tokens=16), on_reply=fail)
    assert len(store) == 1
    assert not engine.llm.llm_engine.has_unfinished_requests()
    replies = CachedChat(engine, store).chat(instructions[:4], Sampling(max_tokens=16))
    assert len(store) == 4 and all(isinstance(reply, Reply) for reply in replies)


def test_a_prompt_longer_than_the_model_fails_alone(engine, instructions):
    too_long = [{"role": "user", "content": "word " * 5000}]  # over max_model_len (4096 tokens)
    replies = engine.chat([too_long, instructions[0]], Sampling(max_tokens=8))
    assert replies[0] == Reply("", PROMPT_TOO_LONG)
    assert replies[1].text.strip()


def test_large_sampled_batch_of_long_prompts_survives_chunked_prefill(engine):
    """Regression: on CPU, per-request seeds plus a chunked prefill killed the engine ("CPU Generator
    does not use offset"). 96 long prompts overflow a step's token budget, so prefills are chunked."""
    records = read_records(SHARED_DATA / "dolly_3k.json")
    long_ones = [r for r in records if len(r.output) > 1500][:96]
    conversations = [[{"role": "user", "content": f"Summarise:\n{r.output}"}] for r in long_ones]
    replies = engine.chat(conversations, Sampling(temperature=0.7, max_tokens=4, seed=3))
    assert len(replies) == 96 and all(r.finish_reason in ("stop", "length") for r in replies)

"""The server backend against a real vLLM OpenAI-compatible server on loopback, serving the packaged SmolLM2."""

from __future__ import annotations

import json
import threading

import jsonschema
import pytest
from conftest import SHARED_DATA, SMOLLM, vllm_server

from lift_local.llm import PROMPT_TOO_LONG, Reply, Sampling
from lift_local.llm.server import ServerChat
from lift_local.records import read_records

pytestmark = pytest.mark.vllm

SERVED_NAME = SMOLLM
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
def server_url(tmp_path_factory):
    """Starts the server once for this module, stops it after."""
    with vllm_server(tmp_path_factory.mktemp("vllm-serve") / "server.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def instructions():
    records = read_records(SHARED_DATA / "code_alpaca_2k.json")[:6]
    return [[{"role": "user", "content": f"{r.instruction}\n\n{r.input}".strip()}] for r in records]


def test_client_finds_the_served_model(server_url):
    assert ServerChat(server_url).name == SERVED_NAME


def test_json_schema_batch_with_bounded_concurrency(server_url, instructions, monkeypatch):
    chat = ServerChat(server_url, SERVED_NAME, max_concurrency=2)
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
    delivered: dict[int, Reply] = {}
    judge = [[{"role": "system", "content": "Rate the instruction from 1 to 10. Reply in JSON."}, *c] for c in instructions]
    replies = chat.chat(judge, Sampling(max_tokens=64), JUDGE_SCHEMA, on_reply=lambda i, r: delivered.setdefault(i, r))
    assert delivered == dict(enumerate(replies))
    assert peak == 2  # both workers busy at once, never more
    for reply in replies:
        assert reply.finish_reason == "stop", reply
        jsonschema.validate(json.loads(reply.text), JUDGE_SCHEMA)


def test_each_reply_belongs_to_its_own_conversation(server_url):
    numbers = [417, 8, 2931, 56]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    asks = [[{"role": "user", "content": f'Output exactly this JSON object: {{"n": {n}}}'}] for n in numbers]
    replies = ServerChat(server_url, SERVED_NAME).chat(asks, Sampling(max_tokens=16, temperature=0.0), schema)
    assert [json.loads(reply.text)["n"] for reply in replies] == numbers


def test_free_text_with_logprobs(server_url, instructions):
    (reply,) = ServerChat(server_url, SERVED_NAME).chat(instructions[:1], Sampling(max_tokens=8, logprobs=2, temperature=0.0))
    assert reply.text.strip()
    assert reply.logprobs is not None and 1 <= len(reply.logprobs) <= 8
    assert all(len(top) == 2 and all(lp <= 0 for lp in top.values()) for top in reply.logprobs)


def test_a_prompt_longer_than_the_model_fails_alone(server_url, instructions):
    too_long = [{"role": "user", "content": "word " * 5000}]  # over max_model_len (2048 tokens)
    replies = ServerChat(server_url, SERVED_NAME).chat([too_long, instructions[0]], Sampling(max_tokens=8))
    assert replies[0] == Reply("", PROMPT_TOO_LONG)
    assert replies[1].text.strip()

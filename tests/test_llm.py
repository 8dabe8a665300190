"""CachedChat and the reply key with the fake model, and ServerChat against a stand-in HTTP server.

The real backends are tested in test_llm_vllm.py and test_llm_server.py."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fakes import FakeChat, FakeChatInterrupted, last_user_message

from lift_local.errors import ServerError
from lift_local.llm import PROMPT_TOO_LONG, Reply, Sampling
from lift_local.llm.cache import CachedChat, reply_key
from lift_local.llm.server import ServerChat
from lift_local.models import ModelError
from lift_local.store import Store

SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}


def conversations(n: int, start: int = 0) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"question {i}"}] for i in range(start, start + n)]


def echo(conversation) -> str:
    return "answer to " + last_user_message(conversation)


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "replies.sqlite", "replies")
    yield store
    store.close()


def test_replies_come_back_in_input_order_and_each_is_reported_once(store):
    delivered: dict[int, Reply] = {}

    def on_reply(i: int, reply: Reply) -> None:
        assert i not in delivered
        delivered[i] = reply

    replies = CachedChat(FakeChat(echo), store).chat(conversations(5), Sampling(), on_reply=on_reply)
    assert [r.text for r in replies] == [f"answer to question {i}" for i in range(5)]
    assert delivered == dict(enumerate(replies))


def test_only_missing_conversations_are_sent_in_one_call(store):
    CachedChat(FakeChat(echo), store).chat(conversations(3), Sampling())
    fake = FakeChat(echo)
    delivered = []
    replies = CachedChat(fake, store).chat(
        conversations(5), Sampling(), on_reply=lambda i, r: delivered.append(i)
    )
    assert len(fake.calls) == 1
    assert fake.conversations_sent == conversations(2, start=3)
    assert [r.text for r in replies] == [f"answer to question {i}" for i in range(5)]
    assert sorted(delivered) == [0, 1, 2, 3, 4]  # cached replies are reported too


def test_a_fully_cached_batch_does_not_call_the_model(store):
    CachedChat(FakeChat(echo), store).chat(conversations(3), Sampling(), SCHEMA)
    fake = FakeChat(echo)
    CachedChat(fake, store).chat(conversations(3), Sampling(), SCHEMA)
    assert fake.calls == []


def test_identical_conversations_are_sent_once(store):
    fake = FakeChat(echo)
    batch = conversations(2) + conversations(2)
    replies = CachedChat(fake, store).chat(batch, Sampling())
    assert fake.conversations_sent == conversations(2)
    assert [r.text for r in replies] == [f"answer to question {i}" for i in (0, 1, 0, 1)]


def test_interrupted_batch_keeps_finished_replies_and_resumes_with_the_rest(store):
    with pytest.raises(FakeChatInterrupted):
        CachedChat(FakeChat(echo, fail_after=3), store, commit_seconds=3600).chat(conversations(8), Sampling())
    assert len(store) == 3  # committed on the way out, although the commit interval had not passed
    fake = FakeChat(echo)
    replies = CachedChat(fake, store).chat(conversations(8), Sampling())
    assert len(fake.conversations_sent) == 5
    assert [r.text for r in replies] == [f"answer to question {i}" for i in range(8)]
    assert len(store) == 8


def test_replies_are_committed_while_the_batch_runs(store, tmp_path):
    """With commit_seconds=0 every reply is on disk before the next one arrives, as another connection sees."""
    reader = Store(tmp_path / "replies.sqlite", "replies")
    seen_on_disk = []
    fake = FakeChat(echo)
    cached = CachedChat(fake, store, commit_seconds=0)
    cached.chat(conversations(4), Sampling(), on_reply=lambda i, r: seen_on_disk.append(len(reader)))
    reader.close()
    assert seen_on_disk == [1, 2, 3, 4]


def test_stored_reply_keeps_text_finish_reason_and_logprobs(store):
    logprobs = [{"{": -0.01}, {"7": -0.1, "8": -2.5}, {"}": -0.02}]
    sampling = Sampling(logprobs=2)
    fake = FakeChat(lambda c: '{"score": 7}', finish_reason="length", logprobs=logprobs)
    CachedChat(fake, store).chat(conversations(1), sampling)
    (value,) = store.get_many([reply_key("fake-chat", conversations(1)[0], sampling, None)]).values()
    assert json.loads(value) == {"text": '{"score": 7}', "finish_reason": "length", "logprobs": logprobs, "tokens": None}
    unused = FakeChat([])  # has no reply to give: the stored one must serve
    (again,) = CachedChat(unused, store).chat(conversations(1), sampling)
    assert again == Reply('{"score": 7}', "length", logprobs) and unused.calls == []


@pytest.mark.parametrize(
    "change",
    [
        {"model_name": "other-model"},
        {"sampling": Sampling(temperature=0.0)},
        {"sampling": Sampling(seed=1)},
        {"sampling": Sampling(max_tokens=16)},
        {"sampling": Sampling(logprobs=5)},
        {"json_schema": SCHEMA},
        {"conversation": [{"role": "user", "content": "question 0 "}]},
        {"conversation": [{"role": "system", "content": "x"}, {"role": "user", "content": "question 0"}]},
    ],
)
def test_reply_key_changes_with_everything_that_determines_the_reply(change):
    base = {"model_name": "m", "conversation": conversations(1)[0], "sampling": Sampling(), "json_schema": None}
    assert reply_key(**{**base, **change}) != reply_key(**base)


def test_reply_key_ignores_dict_order():
    schema_reordered = {"required": ["score"], "properties": {"score": {"type": "integer"}}, "type": "object"}
    conversation = conversations(1)[0]
    assert reply_key("m", conversation, Sampling(), SCHEMA) == reply_key("m", conversation, Sampling(), schema_reordered)


def test_a_changed_model_is_asked_again(store):
    CachedChat(FakeChat(echo, name="model-a"), store).chat(conversations(2), Sampling())
    other = FakeChat(lambda c: "from b", name="model-b")
    replies = CachedChat(other, store).chat(conversations(2), Sampling())
    assert len(other.conversations_sent) == 2
    assert [r.text for r in replies] == ["from b", "from b"]


def test_a_prompt_too_long_for_the_engine_is_not_cached(store):
    """Whether a prompt fits depends on the engine's max_model_len, not on the request: ask again next time."""
    CachedChat(FakeChat(lambda c: "", finish_reason=PROMPT_TOO_LONG), store).chat(conversations(2), Sampling())
    assert len(store) == 0
    fake = FakeChat(echo)
    CachedChat(fake, store).chat(conversations(2), Sampling())
    assert len(fake.conversations_sent) == 2


def test_empty_batch(store):
    fake = FakeChat(echo)
    assert CachedChat(fake, store).chat([], Sampling()) == []
    assert fake.calls == []


def test_fake_canned_replies_follow_input_order():
    fake = FakeChat(["first", "second"])
    replies = fake.chat(conversations(2), Sampling(), SCHEMA)
    assert [r.text for r in replies] == ["first", "second"]
    assert fake.calls[0].json_schema == SCHEMA


# --- ServerChat against a stand-in HTTP server (the real `vllm serve`: test_llm_server.py) ---------------


class StandInServer(ThreadingHTTPServer):
    """Speaks just enough of the OpenAI API: echoes the last user message, slowly, and answers the first
    request for each message with 503 (and a short retry-after-ms) to exercise the client's retries.
    With `answers` set, it breaks after that many answers: 500 to every request from then on."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.failed: set[str] = set()
        self.requests: list[dict] = []
        self.answers: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class StandInHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.send(200, {"object": "list", "data": [{"id": "served", "object": "model", "created": 0, "owned_by": "x"}]})

    def do_POST(self):
        server: StandInServer = self.server
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = request["messages"][-1]["content"]
        with server.lock:
            broken = server.answers is not None and server.answers <= 0
            if server.answers is not None:
                server.answers -= 1
        if broken:
            self.send(500, {"error": {"message": "engine dead"}})
            return
        with server.lock:
            server.requests.append(request)
            first_time = content not in server.failed
            server.failed.add(content)
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        time.sleep(0.05)
        with server.lock:
            server.in_flight -= 1
        if first_time:
            self.send(503, {"error": {"message": "busy"}}, {"retry-after-ms": "1"})
            return
        message = {"role": "assistant", "content": f"echo {content}"}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        self.send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": request["model"], "choices": [choice]})


@pytest.fixture
def stand_in():
    server = StandInServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_server_chat_retries_bounds_concurrency_and_keeps_order(stand_in):
    chat = ServerChat(stand_in.url, max_concurrency=3)
    assert chat.name == "served"  # the server's only model
    delivered = []
    replies = chat.chat(conversations(9), Sampling(), SCHEMA, on_reply=lambda i, r: delivered.append(i))
    assert [r.text for r in replies] == [f"echo question {i}" for i in range(9)]
    assert sorted(delivered) == list(range(9))
    assert len(stand_in.requests) == 18  # every request failed once and was retried
    assert 1 < stand_in.max_in_flight <= 3  # requests overlap, up to the bound
    sent = stand_in.requests[0]
    assert sent["response_format"]["json_schema"]["schema"] == SCHEMA
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.7, 0.95, 1024)
    assert "seed" not in sent  # vLLM on CPU kills its engine on seeded requests


def test_a_server_that_breaks_mid_batch_is_a_clear_error_and_the_rerun_asks_only_the_rest(stand_in, store):
    stand_in.answers = 8  # 4 replies, each after a 503
    chat = CachedChat(ServerChat(stand_in.url, "served", max_concurrency=1, max_retries=1), store)
    with pytest.raises(ServerError) as failed:
        chat.chat(conversations(9), Sampling(), label="enhance")
    assert str(failed.value).startswith(f"the server at {stand_in.url} failed: HTTP 500")
    assert "4 of the 9 replies of enhance are stored" in str(failed.value)
    assert "run the same command again" in str(failed.value)
    stand_in.answers, stand_in.requests = None, []
    replies = chat.chat(conversations(9), Sampling(), label="enhance")
    assert [r.text for r in replies] == [f"echo question {i}" for i in range(9)]
    assert {r["messages"][-1]["content"] for r in stand_in.requests} == {f"question {i}" for i in range(4, 9)}


def test_server_chat_ignores_openai_and_proxy_environment(stand_in, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-be-used")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    chat = ServerChat(stand_in.url, "served")
    assert chat.chat(conversations(1), Sampling())[0].text == "echo question 0"
    assert chat.client.api_key == "EMPTY"


def test_unreachable_server_is_a_clear_error():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ModelError, match=f"cannot list the models served at http://127.0.0.1:{port}/v1"):
        ServerChat(f"http://127.0.0.1:{port}/v1", max_retries=0)


def test_the_environment_is_as_before_once_an_engine_has_started(monkeypatch):
    """What lift-local adds for the engine, and what vLLM writes into os.environ while its engine starts (on
    CPU VLLM_WORKER_MULTIPROC_METHOD=spawn), reach none of the processes this one starts later."""
    import os

    from lift_local import cpu_engine

    monkeypatch.setattr(cpu_engine, "engine_environment", lambda: {"LD_PRELOAD": "libfast.so"})
    monkeypatch.setenv("LIFT_TEST_KEPT", "before")
    monkeypatch.setenv("LIFT_TEST_REMOVED", "before")
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    before = dict(os.environ)
    with cpu_engine.engine_environment_applied() as added:
        assert added == {"LD_PRELOAD": "libfast.so"} and os.environ["LD_PRELOAD"] == "libfast.so"
        os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"  # as vLLM's CPU platform does
        os.environ["LIFT_TEST_KEPT"] = "changed"
        del os.environ["LIFT_TEST_REMOVED"]
    assert dict(os.environ) == before


@pytest.mark.slow
def test_importing_the_trainer_leaves_no_vllm_setting_behind():
    """trl sets VLLM_LOGGING_LEVEL=ERROR when imported; `lift-local ab` imports it, and its engines (and every
    lift-local process a test starts after a test module imported it) would then log nothing but errors."""
    import os
    import subprocess
    import sys

    code = ("import os; before = set(os.environ); import lift_local.ab.train; "
            "print(sorted(k for k in os.environ if k.startswith('VLLM_') and k not in before))")
    env = {key: value for key, value in os.environ.items() if not key.startswith("VLLM_")}
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert found.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("preloaded, user, expected", [
    (True, {}, {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}),  # lift-local relaunched with the libraries: in process
    (False, {}, {"LD_PRELOAD": "libtcmalloc.so libiomp5.so"}),  # any other process: the engine's get them
    (True, {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, {"LD_PRELOAD": "libtcmalloc.so libiomp5.so"}),  # the user's say
])
def test_on_a_cpu_the_engine_runs_in_a_process_that_has_the_libraries(monkeypatch, preloaded, user, expected):
    from lift_local import cpu_engine

    monkeypatch.setattr(cpu_engine, "preloaded", lambda: preloaded)
    monkeypatch.setattr(cpu_engine, "preload_libraries", lambda: ["libtcmalloc.so", "libiomp5.so"])
    added = cpu_engine.engine_environment({"PYTHONUNBUFFERED": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", **user})
    assert added == expected


RELAUNCHED = """
import json, os, sys
from lift_local import cpu_engine
cpu_engine.relaunch_preloaded([__file__])
print(json.dumps({"pid": os.getpid(), "preloaded": cpu_engine.preloaded(), "LD_PRELOAD": os.environ.get("LD_PRELOAD"),
                  "marked": "LIFT_LOCAL_LD_PRELOAD" in os.environ}))
"""


@pytest.mark.parametrize("before", [None, "libm.so.6"])
def test_relaunched_with_the_libraries_loaded_and_the_environment_as_it_was(tmp_path, before):
    """`lift-local` starts again in place of itself (same pid) with tcmalloc and Intel OpenMP loaded, and what
    it starts later does not inherit them (LD_PRELOAD as the user had it)."""
    import os
    import subprocess
    import sys

    from lift_local import cpu_engine

    if not cpu_engine.preload_libraries():
        pytest.skip("neither tcmalloc nor Intel OpenMP is installed here")
    script = tmp_path / "relaunched.py"
    script.write_text(RELAUNCHED)
    env = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"} | (
        {"LD_PRELOAD": before} if before else {})
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    seen = json.loads(process.communicate(timeout=60)[0])
    assert seen == {"pid": process.pid, "preloaded": True, "LD_PRELOAD": before, "marked": False}

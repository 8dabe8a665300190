"""A real vLLM OpenAI server on CPU dies in the middle of `enhance --server`: the command ends with a clear
error (the server, how many replies are stored, how to resume), not a traceback; against another server (the
session's) the same command asks only for the missing replies. The batch's requests do not kill a server."""

import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest
from conftest import LIFT_LOCAL, REPO, stored_replies, vllm_server

pytestmark = pytest.mark.vllm
# As in test_interrupt_vllm: the third reply is stored a hundred decoding steps before the last.
RECORDS, MAX_TOKENS = 24, 128


def requests_finished(url: str) -> int:
    """How many requests the server finished, from its Prometheus metrics."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    return round(sum(float(value) for value in re.findall(r"^vllm:request_success_total\{.*\} (\S+)$", metrics, re.MULTILINE)))


def test_a_server_dying_mid_phase_is_a_clear_error_and_another_gets_only_the_rest(tmp_path, real_sample,
                                                                                  served_smollm):
    cache = tmp_path / "cache"
    sample = real_sample("dolly_3k.json", list(range(RECORDS)))

    def enhance(url: str) -> list[str]:
        return [*LIFT_LOCAL, "enhance", str(sample), str(tmp_path / "out.jsonl"), "--server", url,
                "--cache-dir", str(cache), "--max-tokens", str(MAX_TOKENS)]

    with vllm_server(tmp_path / "dying.log") as (url, server):
        command = enhance(url)
        client = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while stored_replies(cache) < 3 and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.poll() is None, client.communicate()[1][-2000:]
        assert server.poll() is None  # a batch of requests does not kill a CPU server
        os.killpg(server.pid, signal.SIGKILL)  # the server and its engine die at once
        _, error = client.communicate(timeout=600)

    assert client.returncode == 1
    assert "Traceback" not in error
    stored = stored_replies(cache)
    assert 3 <= stored < RECORDS
    assert f"Error: the server at {url} failed: cannot reach it" in error
    assert f"{stored} of the {RECORDS} replies of enhance are stored in {cache / 'replies.sqlite'}" in error
    assert "run the same command again to resume" in error

    url, server = served_smollm
    finished = requests_finished(url)
    resumed = subprocess.run(enhance(url), cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert stored_replies(cache) == RECORDS
    assert requests_finished(url) - finished == RECORDS - stored  # only the missing replies were asked for
    assert server.poll() is None

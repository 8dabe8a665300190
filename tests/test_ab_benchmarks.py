"""The bundled benchmarks and what scores their answers, without a model: the code sandbox (the benchmarks'
own solutions pass their own tests, wrong ones fail, loops, sockets, memory hogs and file damage are
stopped), GSM8K's final number, the seeded sample, and clear errors for unknown benchmarks."""

from __future__ import annotations

import random

import pytest

from lift_local.ab import benchmarks, sandbox
from lift_local.ab.benchmarks import (
    BENCHMARKS,
    check_benchmarks,
    default_benchmarks,
    final_number,
    gsm8k_right,
    items,
    sample_ids,
)
from lift_local.errors import ConfigError


def test_the_bundle_holds_every_test_set_whole():
    sizes = {name: len(items(name)) for name in BENCHMARKS}
    assert sizes == {"arc_easy": 2376, "arc_challenge": 1172, "mmlu": 14042, "truthfulqa_mc": 817,
                     "gsm8k": 1319, "humaneval": 164, "mbpp": 500}  # MBPP's test split, task ids 11-510
    arc = items("arc_easy")["ARC-Easy/1"]
    assert arc["text"].startswith("Which piece of safety equipment") and arc["choices"][arc["answer"]] == "breathing mask"
    mmlu = next(iter(items("mmlu").values()))
    assert len(mmlu["choices"]) == 4 and mmlu["answer"] in range(4) and mmlu["subject"] == "abstract_algebra"
    truthful = items("truthfulqa_mc")["TruthfulQA/0"]
    assert truthful["best_answer"] == "The watermelon seeds pass through your digestive system"
    assert "You grow watermelons in your stomach" in truthful["incorrect_answers"]


@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_the_benchmarks_reference_solutions_pass_their_tests_in_the_sandbox(name):
    program = benchmarks.humaneval_program if name == "humaneval" else benchmarks.mbpp_program
    solution = "canonical_solution" if name == "humaneval" else "code"
    for item in random.Random(0).sample(list(items(name).values()), 5):
        # As a chat model answers: the code in a fenced block, with a sentence around it.
        answer = f"Here is the solution:\n```python\n{item[solution]}\n```\nIt works."
        outcome = sandbox.run(program(item, answer), timeout=10)
        assert outcome.status == "passed", (item["id"], outcome.detail)


def test_a_humaneval_answer_may_be_the_whole_function_or_the_body_the_prompt_lacks():
    item = items("humaneval")["HumanEval/0"]
    body = item["canonical_solution"]
    whole = item["text"] + body
    for answer in (body, f"```python\n{whole}```", f"```\n{whole}\n```"):
        assert sandbox.run(benchmarks.humaneval_program(item, answer)).status == "passed"
    wrong = whole.replace("distance < threshold", "distance > threshold")
    outcome = sandbox.run(benchmarks.humaneval_program(item, f"```python\n{wrong}```"))
    assert outcome.status == "failed" and outcome.detail.endswith("AssertionError")


def test_wrong_and_broken_programs_fail():
    item = items("mbpp")["MBPP/11"]  # remove the first and last occurrence of a character
    assert sandbox.run(benchmarks.mbpp_program(item, item["code"])).status == "passed"
    assert sandbox.run(benchmarks.mbpp_program(item, "def remove_Occ(s, ch):\n    return s")).status == "failed"
    outcome = sandbox.run(benchmarks.mbpp_program(item, "def remove_Occ(s, ch) return s"))
    assert outcome.status == "failed" and "SyntaxError" in outcome.detail


@pytest.mark.slow  # child processes that run out their time
def test_an_endless_loop_is_stopped_at_the_time_limit():
    outcome = sandbox.run("while True:\n    pass\n", timeout=1)
    assert outcome.status == "timeout"
    assert sandbox.run("import time\ntime.sleep(60)\n", timeout=1).status == "timeout"


@pytest.mark.parametrize("program", [
    "import socket\nsocket.create_connection(('127.0.0.1', 9))\n",
    "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=5)\n",
    # A program that catches the refusal and tries again still reaches nothing.
    "import socket\ntry:\n    socket.socket()\nexcept PermissionError:\n    pass\nsocket.getaddrinfo('example.com', 80)\n",
])
def test_a_program_that_opens_a_socket_is_stopped(program):
    outcome = sandbox.run(program, timeout=5)
    assert outcome.status == "error" and outcome.detail.startswith("sandbox: socket.")


def test_the_network_is_a_namespace_of_its_own_where_the_system_allows():
    # On this machine user namespaces work; elsewhere the audit hook alone refuses sockets.
    if not sandbox.network_isolated():
        pytest.skip("unprivileged user namespaces are not available here")
    # /proc/net/dev lists the interfaces of the reader's network namespace (this machine has eth0 and more).
    program = ("names = [line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]]\n"
               "assert names == ['lo'], names\n")
    outcome = sandbox.run(program)
    assert outcome.status == "passed", outcome.detail


def test_a_program_that_allocates_too_much_memory_is_stopped():
    outcome = sandbox.run("block = bytearray(2 * 1024 ** 3)\n", memory=512 << 20)
    assert outcome == sandbox.Outcome("error", "stopped at the memory limit")
    assert sandbox.run("block = bytearray(64 * 1024 ** 2)\n", memory=512 << 20).status == "passed"


@pytest.mark.parametrize("program, refused", [
    ("import subprocess\nsubprocess.run(['true'])\n", "subprocess.Popen"),
    ("import os\nos.kill(os.getppid(), 9)\n", "os.kill"),
    ("import os\nos.remove('/etc/hostname')\n", "os.remove outside the working folder"),
    ("open('/tmp/lift-sandbox-was-here', 'w').write('x')\n", "writing outside the working folder"),
    ("import ctypes\nctypes.CDLL(None).socket(2, 1, 0)\n", "ctypes.dlsym"),
])
def test_processes_signals_and_files_outside_its_folder_are_refused(program, refused, tmp_path):
    outcome = sandbox.run(program)
    assert outcome.status == "error" and refused in outcome.detail


def test_a_program_may_use_its_own_folder_and_the_standard_library():
    program = ("import collections, heapq, json, math, re\nfrom typing import List\n"
               "open('notes.txt', 'w').write('kept')\nassert open('notes.txt').read() == 'kept'\n")
    assert sandbox.run(program).status == "passed"


@pytest.mark.parametrize("answer, number", [
    ("Janet sells 16 - 3 - 4 = 9 eggs and makes 9 * 2 = $18 every day.", "18"),
    ("The total is $1,234.50.", "1234.50"),
    ("She is left with -3 degrees, so the answer is -3.", "-3"),
    ("#### 72", "72"),
    ("I cannot tell.", None),
])
def test_gsm8k_takes_the_last_number_of_the_answer(answer, number):
    assert final_number(answer) == number


def test_gsm8k_compares_the_final_numbers_of_answer_and_reference():
    reference = items("gsm8k")["GSM8K/0"]["answer"]  # ... "#### 18"
    assert gsm8k_right("So she makes $18.00 a day.", reference)
    assert gsm8k_right(reference, reference)  # the reference's own worked solution ends in its number
    assert not gsm8k_right("She makes 16 dollars.", reference)
    assert not gsm8k_right("I don't know.", reference)
    everything = list(items("gsm8k").values())
    assert all(gsm8k_right(item["answer"], item["answer"]) for item in everything)


def test_the_sample_is_seeded_the_same_for_every_call_and_kept_in_order():
    first = sample_ids("arc_challenge", 50, seed=7)
    assert first == sample_ids("arc_challenge", 50, seed=7)
    assert first != sample_ids("arc_challenge", 50, seed=8)
    order = list(items("arc_challenge"))
    assert len(set(first)) == 50 and first == sorted(first, key=order.index)
    assert sample_ids("humaneval", 500, seed=7) == list(items("humaneval"))
    assert sample_ids("humaneval", None, seed=7) == list(items("humaneval"))


def test_unknown_benchmarks_are_a_clear_error():
    check_benchmarks(["arc_easy", "mbpp"])
    with pytest.raises(ConfigError) as caught:
        check_benchmarks(["arc_easy", "hellaswag", "winogrande"])
    assert str(caught.value) == ("unknown benchmarks hellaswag, winogrande: choose from arc_easy, arc_challenge, "
                                 "mmlu, truthfulqa_mc, gsm8k, humaneval, mbpp")


def test_generating_benchmarks_are_opt_in_on_a_cpu_and_default_on_a_gpu():
    assert default_benchmarks(gpu=False) == ["arc_easy", "arc_challenge", "mmlu", "truthfulqa_mc"]
    assert default_benchmarks(gpu=True) == list(BENCHMARKS)

"""Planted duplicates and benchmark items, made from real records, for the dedup and decontamination tests
and `scripts/bench_dedup.py`. Every edit is seeded, so a test sees the same data every run."""

from __future__ import annotations

import random
import re

from lift_local.records import Record

# Rewordings an instruction rewriter makes: same task, other words.
SYNONYMS = {
    "write": "compose", "create": "build", "generate": "produce", "function": "routine", "given": "provided",
    "find": "determine", "list": "sequence", "number": "value", "numbers": "values", "program": "script",
    "print": "output", "return": "give back", "calculate": "compute", "string": "text", "array": "collection",
    "what": "which", "how": "in what way", "describe": "explain", "give": "provide", "make": "produce",
}
FILLERS = ["really", "kindly", "also", "then", "simply", "now", "just"]


def exact_copy(record: Record, rng: random.Random) -> Record:
    """The same text in other case and spacing."""
    change = rng.choice([str.upper, str.lower, lambda t: "  " + t.replace(" ", "  ") + "\n"])
    return record.replace(instruction=change(record.instruction), id=f"{record.id}~exact")


def edit_words(text: str, edits: int, rng: random.Random) -> str:
    """`edits` words replaced, dropped or followed by a filler word, at random places."""
    words = text.split(" ")
    for _ in range(edits):
        at = rng.randrange(len(words))
        action = rng.randrange(3)
        if action == 0:
            words[at] = rng.choice(FILLERS)
        elif action == 1 and len(words) > 1:
            del words[at]
        else:
            words.insert(at, rng.choice(FILLERS))
    return " ".join(words)


def near_copy(record: Record, rng: random.Random) -> Record:
    """A few words edited: one per 60 words of instruction and output, at least one."""
    length = len((record.instruction + " " + record.output).split())
    edits = length // 60 + 1
    if rng.random() < 0.5:
        return record.replace(instruction=edit_words(record.instruction, edits, rng), id=f"{record.id}~near")
    return record.replace(output=edit_words(record.output, edits, rng), id=f"{record.id}~near")


def reword(text: str, rng: random.Random, share: float = 1.0) -> str:
    """Words swapped for synonyms (each with probability `share`), the way a rewriter rephrases."""
    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = SYNONYMS.get(word.lower())
        if other is None or rng.random() > share:
            return word
        return other.capitalize() if word[0].isupper() else other

    return re.sub(r"[A-Za-z]+", swap, text)


def reworded_copy(record: Record, rng: random.Random) -> Record:
    """The instruction rephrased (synonyms, a polite opening); the answer the same."""
    opening = rng.choice(["Please ", "Could you ", "I need you to ", ""])
    instruction = reword(record.instruction, rng)
    instruction = opening + instruction[0].lower() + instruction[1:] if opening else instruction
    return record.replace(instruction=instruction, id=f"{record.id}~semantic")


def rename_identifiers(code: str) -> str:
    """A HumanEval prompt with its function and parameters renamed everywhere."""
    header = re.search(r"def (\w+)\((.*?)\)", code, re.S)
    names = [header.group(1)] + re.findall(r"(\w+)\s*(?::[^,=)]*)?(?:=[^,)]*)?(?:,|$)", header.group(2))
    renamed = code
    for number, name in enumerate(dict.fromkeys(n for n in names if n)):
        renamed = re.sub(rf"\b{re.escape(name)}\b", f"{'solve' if number == 0 else 'arg'}_{number}", renamed)
    return renamed


def change_numbers(text: str, rng: random.Random) -> str:
    return re.sub(r"\d+", lambda m: str(int(m.group(0)) + rng.randint(1, 9)), text)


def lightly_reworded(text: str, rng: random.Random) -> str:
    """One word in about 12 replaced or dropped, and a request around the question."""
    words = text.split(" ")
    return f"Answer this question: {edit_words(text, max(1, len(words) // 12), rng)} Explain your answer."

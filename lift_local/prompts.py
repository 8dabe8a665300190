"""Prompt templates: TOML files with a fixed `system` message and a per-record `user` message.

Templates are files so that users can edit them or bring their own (`--prompt PATH`). The system message
carries everything that is the same for every request (rules, rubric, examples) and comes first, so the
engine's prefix cache computes it once. The user message is a `string.Template`: `$instruction`, `$input`,
`$output` and `$input_block` (the optional `input_block` template, filled in only when the record has an
input). `$`-placeholders leave the braces of code and JSON alone, unlike `str.format`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterable
from pathlib import Path
from string import Template

from .errors import InputError
from .llm import Conversation

FIELDS = ("instruction", "input", "output")
_KEYS = {"system", "user", "input_block"}


@dataclasses.dataclass(frozen=True)
class Prompt:
    source: str  # the file it came from, for messages and run manifests
    system: str
    user: str
    input_block: str = ""

    def conversation(self, instruction: str, input: str = "", output: str = "") -> Conversation:
        fields = {"instruction": instruction, "input": input, "output": output}
        block = Template(self.input_block).substitute(fields) if input else ""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        user = Template(self.user).substitute(fields, input_block=block)
        messages.append({"role": "user", "content": user})
        return messages


def _bundled_folder() -> Path:
    here = Path(__file__).resolve().parent
    for folder in (here / "prompts", here.parent / "prompts"):  # installed wheel, then source checkout
        if folder.is_dir():
            return folder
    raise FileNotFoundError("lift-local's bundled prompts are missing from the installation")


def bundled_names() -> list[str]:
    """The packaged templates: every TOML file of the prompts folder, by name without `.toml`."""
    return sorted(path.stem for path in _bundled_folder().glob("*.toml"))


def bundled_path(name: str) -> Path:
    """The packaged template `name` (one of `bundled_names()`)."""
    if name not in bundled_names():
        raise ValueError(f"no bundled prompt {name!r}; bundled prompts are {', '.join(bundled_names())}")
    return _bundled_folder() / f"{name}.toml"


def load_prompt(source: str | Path, requires: Iterable[str] = ("instruction",)) -> Prompt:
    """Read a template (a bundled name or a file path); its user message must use the fields in `requires`.

    Every problem is an `InputError` naming the file, so a typo in a user's template fails before any
    model is loaded.
    """
    path = bundled_path(str(source)) if str(source) in bundled_names() else Path(source)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise InputError(path, None, "no such prompt file") from None
    except UnicodeDecodeError:
        raise InputError(path, None, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(path, None, f"not valid TOML: {err}") from None
    unknown = set(data) - _KEYS
    if unknown:
        names, known = ", ".join(sorted(unknown)), ", ".join(sorted(_KEYS))
        raise InputError(path, None, f"unknown key(s) {names}; a prompt file has {known}")
    for key in ("system", "user"):
        if key not in data:
            raise InputError(path, None, f"missing key '{key}'")
    for key, value in data.items():
        if not isinstance(value, str):
            raise InputError(path, None, f"'{key}' must be a string")
    prompt = Prompt(str(path), data["system"], data["user"], data.get("input_block", ""))
    _check_placeholders(path, "user", prompt.user, allowed={*FIELDS, "input_block"})
    _check_placeholders(path, "input_block", prompt.input_block, allowed=set(FIELDS))
    used = set(Template(prompt.user).get_identifiers())
    for name in requires:
        if name not in used:
            raise InputError(path, None, f"the user message must contain ${name}")
    if not used & {"input", "input_block"}:
        problem = "the user message must contain $input or $input_block, or records' inputs would be lost"
        raise InputError(path, None, problem)
    return prompt


def _check_placeholders(path: Path, key: str, text: str, allowed: set[str]) -> None:
    template = Template(text)
    if not template.is_valid():
        problem = f"'{key}' has a '$' that starts no placeholder; write $$ for a dollar sign"
        raise InputError(path, None, problem)
    unknown = set(template.get_identifiers()) - allowed
    if unknown:
        names, known = (", ".join(f"${name}" for name in sorted(group)) for group in (unknown, allowed))
        raise InputError(path, None, f"'{key}' uses unknown placeholder(s) {names}; known: {known}")

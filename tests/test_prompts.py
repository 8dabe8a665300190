"""Prompt templates: the bundled files load and render; a broken template fails early, naming the file."""

import pytest

from lift_local.judge.protocol import DIMENSIONS
from lift_local.phases.quality import Quality
from lift_local.prompts import Prompt, bundled_names, bundled_path, load_prompt
from lift_local.records import InputError


def write(tmp_path, text, name="mine.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", bundled_names())
def test_bundled_templates_load_and_render_a_record(name):
    prompt = load_prompt(name, requires=Quality.requires if name == "judge" else ("instruction",))
    system, user = prompt.conversation("Sum the list.", "[1, 2]", "3")
    assert system == {"role": "system", "content": prompt.system}
    assert user["role"] == "user"
    assert "Sum the list." in user["content"] and "[1, 2]" in user["content"]
    assert "$" not in user["content"]  # every placeholder filled


def test_system_message_is_the_same_for_every_record_so_the_prefix_cache_reuses_it():
    prompt = load_prompt("judge")
    first = prompt.conversation("A?", "", "a")
    second = prompt.conversation("B?", "some input", "b")
    assert first[0] == second[0]
    assert first[1] != second[1]


def test_input_block_appears_only_when_the_record_has_an_input():
    prompt = Prompt("test", "sys", "Q: $instruction$input_block", "\nIN: $input")
    assert prompt.conversation("x")[1]["content"] == "Q: x"
    assert prompt.conversation("x", "y")[1]["content"] == "Q: x\nIN: y"


def test_record_text_with_braces_and_dollars_passes_through_unchanged():
    prompt = load_prompt("enhance")
    code = "def f(d): return {k: v for k, v in d.items()}  # costs $5, see ${HOME} and $instruction"
    user = prompt.conversation(code, "{'a': 1}")[1]["content"]
    assert code in user and "{'a': 1}" in user


def test_empty_system_message_is_left_out():
    prompt = Prompt("test", "", "$instruction$input_block")
    assert prompt.conversation("x") == [{"role": "user", "content": "x"}]


def test_judge_template_states_the_rubric_the_code_enforces():
    system = load_prompt("judge").system
    for name, top in DIMENSIONS.items():
        assert f"{name} (0-{top})" in system
    assert "full marks" in system.lower()


def test_user_template_file_is_used(tmp_path):
    text = 'system = "Be brief."\nuser = "Task: $instruction$input_block"\ninput_block = " ($input)"\n'
    path = write(tmp_path, text)
    prompt = load_prompt(path)
    assert prompt.source == str(path)
    assert prompt.conversation("add", "1, 2") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Task: add (1, 2)"},
    ]


@pytest.mark.parametrize(
    "text, problem",
    [
        ('system = "s"\nuser = "$instruction', "not valid TOML"),
        ('user = "$instruction $input"', "missing key 'system'"),
        ('system = "s"', "missing key 'user'"),
        ('system = "s"\nuser = "$instruction $input"\nsytem = "typo"', "unknown key(s) sytem"),
        ('system = 3\nuser = "$instruction $input"', "'system' must be a string"),
        ('system = "s"\nuser = "$instruction $input $answer"', "unknown placeholder(s) $answer"),
        ('system = "s"\nuser = "$instruction $input costs $5"', "write $$ for a dollar sign"),
        ('system = "s"\nuser = "$instruction$input_block"\ninput_block = "$input_block"', "block' uses"),
        ('system = "s"\nuser = "$input"', "must contain $instruction"),
        ('system = "s"\nuser = "$instruction"', "inputs would be lost"),
    ],
)
def test_bad_template_is_an_input_error_naming_the_file(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_prompt(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_judge_template_without_the_answer_is_refused(tmp_path):
    path = write(tmp_path, 'system = "s"\nuser = "$instruction$input_block"')
    with pytest.raises(InputError, match=r"must contain \$output"):
        load_prompt(path, requires=Quality.requires)


def test_missing_template_file(tmp_path):
    with pytest.raises(InputError, match="no such prompt file"):
        load_prompt(tmp_path / "absent.toml")


def test_bundled_names_resolve_to_files_in_the_prompts_folder():
    assert bundled_names() == ["enhance", "expand_code", "expand_nlu", "judge", "judge_digits"]
    for name in bundled_names():
        assert bundled_path(name).name == f"{name}.toml"
    with pytest.raises(ValueError, match="bundled prompts are"):
        bundled_path("nope")

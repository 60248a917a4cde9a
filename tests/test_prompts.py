"""selfdebug.core.prompts: chat format, prompts, parsing, program assembly."""

from __future__ import annotations

import pytest

from selfdebug.execution.spec import TestSuite as Suite
from selfdebug.problems import Problem
from selfdebug.core.prompts import (
    ParsedCompletion,
    assemble_program,
    initial_messages,
    parse_completion,
    refine_messages,
    render_chat,
)

HE_STARTER = 'from typing import List\n\n\ndef add(xs: List[int]) -> int:\n    """Sum of xs."""\n'
HUMANEVAL = Problem(task_id="HumanEval/0", source="humaneval", prompt=HE_STARTER,
                    tests=Suite("assert", ("assert candidate([1, 2]) == 3",), setup="candidate = add"),
                    entry_point="add", starter_code=HE_STARTER, reference=HE_STARTER + "    return sum(xs)\n")
MBPP = Problem(task_id="mbpp/1", source="mbpp", prompt="Write a function to add two numbers.",
               tests=Suite("assert", ("assert add(1, 2) == 3",)), entry_point="add",
               reference="def add(a, b):\n    return a + b\n", tests_shown=("assert add(1, 2) == 3",))


def test_render_chat_starchat_exact():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"}]
    assert render_chat(msgs) == "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\nA<|end|>\n<|assistant|>\n"
    assert render_chat(msgs, add_generation_prompt=False) == (
        "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\nA<|end|>\n")
    with pytest.raises(ValueError, match="role"):
        render_chat([{"role": "bot", "content": "x"}])


def test_render_chat_uses_tokenizer_template():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert tokenize is False
            return "|".join(m["content"] for m in messages) + ("<gen>" if add_generation_prompt else "")

    assert render_chat([{"role": "user", "content": "hi"}], Tok()) == "hi<gen>"


def test_render_chat_tiny_tokenizer_is_starchat(tiny_lm):
    _, tok = tiny_lm
    msgs = [{"role": "user", "content": "U"}]
    assert render_chat(msgs, tok) == "<|user|>\nU<|end|>\n<|assistant|>\n"


def test_initial_messages():
    (m,) = initial_messages(MBPP)
    assert m["role"] == "user" and "```python" in m["content"]
    assert MBPP.prompt in m["content"]
    assert "Your code should pass these tests:\nassert add(1, 2) == 3" in m["content"]
    (h,) = initial_messages(HUMANEVAL)
    assert h["content"].count("def add(xs: List[int]) -> int:") == 1  # prompt == starter: shown once
    assert "```python\n" + HE_STARTER.rstrip() + "\n```" in h["content"]


@pytest.mark.parametrize("mode", ["refine", "explain_refine"])
def test_refine_messages(mode):
    msgs = refine_messages(HUMANEVAL, "    return 0\n", "AssertionError: assert 0 == 3", mode)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0] == initial_messages(HUMANEVAL)[0]
    # The wrong code is shown as the whole program that ran.
    assert msgs[1]["content"] == "```python\n" + HE_STARTER + "    return 0\n```"
    assert "AssertionError: assert 0 == 3" in msgs[2]["content"]
    assert ("explain" in msgs[2]["content"]) == (mode == "explain_refine")


def test_refine_messages_unknown_mode():
    with pytest.raises(ValueError, match="refine.*explain_refine"):
        refine_messages(MBPP, "x", "fb", "explain")


def test_parse_explanation_and_code():
    text = "The loop stops one early.\n\n```python\ndef f():\n    return 1\n```\n<|end|>"
    assert parse_completion(text) == ParsedCompletion("The loop stops one early.", "def f():\n    return 1\n")


def test_parse_no_code():
    p = parse_completion("I cannot solve this.<|end|>")
    assert p.code is None and not p.has_code and p.explanation == "I cannot solve this."
    assert parse_completion("").code is None
    assert parse_completion("```python\n\n```").code is None
    assert parse_completion("```bash\nls\n```").code is None


def test_parse_unterminated_fence():
    p = parse_completion("Fix:\n```python\ndef f(x):\n    return x + 1")
    assert p.code == "def f(x):\n    return x + 1\n" and p.explanation == "Fix:"


def test_parse_several_blocks_takes_last():
    text = ("Wrong:\n```python\nold()\n```\nOutput:\n```text\n1\n```\nFixed:\n```\nnew()\n```\n"
            "Done.")
    p = parse_completion(text)
    assert p.code == "new()\n"
    assert p.explanation.startswith("Wrong:") and p.explanation.endswith("Fixed:")


def test_parse_closing_fence_glued_to_code():
    assert parse_completion("```python\nx = 1\ny = 2```").code == "x = 1\ny = 2\n"


def test_assemble_humaneval_continuation():
    body = "    return sum(xs)\n"
    prog = assemble_program(HUMANEVAL, body)
    assert prog == HE_STARTER + body
    assert assemble_program(HUMANEVAL, prog) == prog  # idempotent
    compile(prog, "<program>", "exec")  # a whole program, not a fragment (running it is the sandbox's job)


def test_assemble_humaneval_full_function_keeps_imports():
    full = "def add(xs: List[int]) -> int:\n    return sum(xs)\n"
    prog = assemble_program(HUMANEVAL, full)
    assert prog == "from typing import List\n\n" + full
    assert assemble_program(HUMANEVAL, prog) == prog
    compile(prog, "<program>", "exec")


def test_assemble_standalone_is_unchanged():
    code = "def add(a, b):\n    return a + b\n"
    assert assemble_program(MBPP, code) == code


# ------------------------------------------------------------------ chat format, few-shot picks, teacher examples

def test_starchat_format_drops_a_chat_template(tiny_model_dir):
    """chat_format=starchat renders StarChat turns even for a tokenizer that ships a chat template."""
    from transformers import AutoTokenizer

    from selfdebug.core.errors import ConfigError
    from selfdebug.core.prompts import apply_chat_format

    msgs = [{"role": "user", "content": "U"}]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    assert render_chat(msgs, apply_chat_format(tok, "template")) == "[INST] U [/INST]"
    assert render_chat(msgs, apply_chat_format(tok, "starchat")) == "<|user|>\nU<|end|>\n<|assistant|>\n"
    with pytest.raises(ConfigError, match="model.chat_format"):
        apply_chat_format(tok, "chatml")


def test_pick_examples_never_shows_the_problem_itself():
    from selfdebug.core.prompts import pick_examples

    other = Problem(task_id="mbpp/2", source="mbpp", prompt="Write a function to subtract.",
                    tests=Suite("assert", ("assert sub(2, 1) == 1",)), reference="def sub(a, b):\n    return a - b\n")
    same_text = Problem(task_id="copy/1", source="x", prompt=MBPP.prompt, tests=MBPP.tests, reference="x = 1\n")
    pool = [MBPP, same_text, other, HUMANEVAL]
    assert pick_examples(pool, MBPP, 2) == [other, HUMANEVAL]
    assert pick_examples(pool, other, 2) == [MBPP, same_text]
    msgs = initial_messages(MBPP, pick_examples(pool, MBPP, 1))
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert "return a - b" in msgs[1]["content"] and "return a + b" not in "".join(m["content"] for m in msgs)


def test_few_shot_refine_messages_show_finished_exchanges():
    from selfdebug.core.prompts import few_shot_refine_messages, refine_answer

    ex = (MBPP, "def add(a, b):\n    return a - b\n", "Failed test: assert add(1, 2) == 3\nActual output: -1",
          "It subtracts instead of adding.", MBPP.reference)
    msgs = few_shot_refine_messages([ex], HUMANEVAL, "    return 0\n", "Failed", "explain_refine")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert msgs[3]["content"] == refine_answer(MBPP.reference, "It subtracts instead of adding.")
    assert parse_completion(msgs[3]["content"]) == ParsedCompletion("It subtracts instead of adding.",
                                                                    MBPP.reference)
    assert msgs[4:] == refine_messages(HUMANEVAL, "    return 0\n", "Failed", "explain_refine")
    refine_only = few_shot_refine_messages([ex], HUMANEVAL, "    return 0\n", "Failed", "refine")
    assert refine_only[3]["content"] == refine_answer(MBPP.reference)

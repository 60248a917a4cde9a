"""The one prompt module: chat format, the initial and refinement prompts, and parsing a completion.

Collection, training, rewards and evaluation all build prompts and read completions through these
functions, so every stage sees a program the same way.

Messages are ``list[dict(role=..., content=...)]`` with roles ``system``, ``user`` and ``assistant``.
"""

from __future__ import annotations

from collections.abc import Sequence

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from selfdebug.core.errors import ConfigError

if TYPE_CHECKING:
    from selfdebug.problems import Problem

ROLES = ("system", "user", "assistant")
END = "<|end|>"
MODES = ("refine", "explain_refine")

INITIAL_INSTRUCTION = (
    "Write a Python solution to the following problem. Give the complete code in one ```python fenced block."
)
ANSWER_FORMS = ("full", "line", "search_replace")
# How a refinement is written (selfdebug.core.answers applies the edit forms back to the wrong program).
_FIX = {
    "full": "the corrected code in one ```python fenced block",
    "line": "each changed line as `old line => new line`, one per line",
    "search_replace": "each change as a <<<<<<< SEARCH / ======= / >>>>>>> REPLACE block quoting exact lines",
}
REFINE_INSTRUCTIONS = {
    "refine": "The code above is wrong. Please fix it. Reply with only {fix}.",
    "explain_refine": "The code above is wrong. First explain briefly what is wrong with the code. Then give {fix}.",
}


def refine_instruction(mode: str, form: str = "full") -> str:
    if mode not in REFINE_INSTRUCTIONS:
        raise ValueError(f"unknown refinement mode {mode!r}; expected one of {MODES}")
    if form not in _FIX:
        raise ValueError(f"unknown answer form {form!r}; expected one of {ANSWER_FORMS}")
    return REFINE_INSTRUCTIONS[mode].format(fix=_FIX[form])


def _check_messages(messages: list[dict]) -> None:
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES:
            raise ValueError(f"message {i}: unknown role {m.get('role')!r}; expected one of {ROLES}")
        if not isinstance(m.get("content"), str):
            raise TypeError(f"message {i}: content must be a string, got {type(m.get('content')).__name__}")


def render_starchat(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """StarChat turns: ``<|role|>\\n{content}<|end|>\\n`` each; the generation prompt is ``<|assistant|>\\n``."""
    _check_messages(messages)
    text = "".join(f"<|{m['role']}|>\n{m['content']}{END}\n" for m in messages)
    if add_generation_prompt:
        text += "<|assistant|>\n"
    return text


CHAT_FORMATS = ("starchat", "template")


def check_chat_format(chat_format: str, key: str = "model.chat_format") -> str:
    if chat_format not in CHAT_FORMATS:
        raise ConfigError(f"{key} = {chat_format!r}; choose one of {CHAT_FORMATS}")
    return chat_format


def apply_chat_format(tokenizer, chat_format: str, key: str = "model.chat_format"):
    """Make ``tokenizer`` render prompts in ``chat_format`` wherever ``render_chat`` is given it.

    ``starchat``: StarChat turns, even when the checkpoint ships a chat template (the paper fine-tunes base
    StarCoder and CodeLlama with StarChat turns); the template is dropped from this tokenizer, so a checkpoint
    saved with it keeps StarChat turns too. ``template``: the tokenizer's own chat template if it has one
    (Instruct checkpoints), StarChat turns otherwise. The tokenizer is changed in place and returned.
    """
    check_chat_format(chat_format, key)
    if chat_format == "starchat" and getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = None
    return tokenizer


def render_chat(messages: list[dict], tokenizer=None, add_generation_prompt: bool = True) -> str:
    """The prompt text: the tokenizer's own chat template if it has one, otherwise StarChat turns.

    Which of the two a model gets is decided once, where its tokenizer is loaded (``apply_chat_format``)."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        _check_messages(messages)
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    return render_starchat(messages, add_generation_prompt)


def _fence(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def problem_text(problem: Problem) -> str:
    """The user turn that states a problem: instruction, task text, starter code, shown tests."""
    parts = [INITIAL_INSTRUCTION]
    prompt = problem.prompt.strip()
    starter = problem.starter_code.strip()
    if prompt and prompt != starter:
        parts.append(prompt)
    if starter:
        parts.append("Complete the following code:\n" + _fence(problem.starter_code))
    if problem.tests_shown:
        parts.append("Your code should pass these tests:\n" + "\n".join(t.strip() for t in problem.tests_shown))
    return "\n\n".join(parts)


def pick_examples(pool: Sequence[Problem], problem: Problem, k: int) -> list[Problem]:
    """The first ``k`` few-shot examples of ``pool`` that are not ``problem`` itself (same task id or same task
    text): a prompt never shows the solution of the problem it asks about."""
    own = problem.prompt.strip()
    return [ex for ex in pool if ex.task_id != problem.task_id and ex.prompt.strip() != own][:max(0, k)]


def initial_messages(problem: Problem, examples: Sequence[Problem] = ()) -> list[dict]:
    """Ask for a first solution of ``problem``, after worked ``examples`` (few-shot: each example's problem as
    a user turn and its reference solution as the assistant's answer)."""
    messages = []
    for ex in examples:
        if not ex.reference:
            raise ValueError(f"few-shot example {ex.task_id} has no reference solution")
        messages += [{"role": "user", "content": problem_text(ex)}, {"role": "assistant", "content": _fence(ex.reference)}]
    return messages + [{"role": "user", "content": problem_text(problem)}]


def refine_messages(problem: Problem, code: str, feedback: str, mode: str, form: str = "full") -> list[dict]:
    """The self-debugging turn: problem, the wrong program as the assistant's answer, feedback + instruction.

    The wrong code is shown as the complete program that was run (``assemble_program``), so the model sees
    exactly what the judge saw. ``mode``: "refine" (corrected code only) or "explain_refine" (explanation,
    then corrected code); ``form``: how the fix is written (``ANSWER_FORMS``).
    """
    instruction = refine_instruction(mode, form)
    program = assemble_program(problem, code)
    feedback = feedback.strip() or "(no feedback)"
    return [
        {"role": "user", "content": problem_text(problem)},
        {"role": "assistant", "content": _fence(program)},
        {"role": "user", "content": f"Execution feedback:\n{feedback}\n\n{instruction}"},
    ]


def refine_answer(code: str, explanation: str | None = None) -> str:
    """An answer to a refinement request in the form ``parse_completion`` reads: the explanation (if any), then
    the corrected code in one fenced block."""
    block = _fence(code)
    return f"{explanation.strip()}\n\n{block}" if explanation and explanation.strip() else block


def few_shot_refine_messages(examples: Sequence[tuple[Problem, str, str, str, str]], problem: Problem, code: str,
                             feedback: str, mode: str) -> list[dict]:
    """``refine_messages`` after worked examples, each ``(problem, wrong code, feedback, explanation, fix)``
    shown as a finished exchange: a base model sees what an explanation and a refinement look like."""
    messages = []
    for ex_problem, ex_code, ex_feedback, explanation, fix in examples:
        messages += refine_messages(ex_problem, ex_code, ex_feedback, mode)
        messages.append({"role": "assistant",
                         "content": refine_answer(fix, explanation if mode == "explain_refine" else None)})
    return messages + refine_messages(problem, code, feedback, mode)


@dataclass(frozen=True)
class ParsedCompletion:
    """What a completion says: ``explanation`` (text before the code) and ``code`` (None: no code block)."""

    explanation: str
    code: str | None

    @property
    def has_code(self) -> bool:
        return self.code is not None


_OPEN = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n`]*$")
_PY_LANGS = ("", "python", "py", "python3", "py3")


def _fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(start offset, language, content)`` of each fenced block; an unterminated last one runs to the end."""
    blocks = []
    lines = text.splitlines(keepends=True)
    pos, i = 0, 0
    offsets = []
    for line in lines:
        offsets.append(pos)
        pos += len(line)
    while i < len(lines):
        m = _OPEN.match(lines[i].rstrip("\r\n"))
        if not m:
            i += 1
            continue
        start, lang, body = offsets[i], m.group(1).lower(), []
        i += 1
        while i < len(lines):
            stripped = lines[i].rstrip("\r\n")
            if stripped.strip() == "```":
                i += 1
                break
            if stripped.rstrip().endswith("```") and not stripped.strip().startswith("```"):
                # ``    return x```: the closing fence glued to the last code line.
                body.append(stripped.rstrip()[:-3] + "\n")
                i += 1
                break
            body.append(lines[i])
            i += 1
        blocks.append((start, lang, "".join(body)))
    return blocks


def parse_completion(text: str) -> ParsedCompletion:
    """Split a completion into explanation and code: the last ```python (or bare ```) fenced block.

    Never raises on model output: no code block (or an empty one) gives ``code=None``.
    """
    text = text.rstrip()
    while text.endswith(END):
        text = text[: -len(END)].rstrip()
    blocks = [b for b in _fenced_blocks(text) if b[1] in _PY_LANGS]
    if not blocks:
        return ParsedCompletion(explanation=text.strip(), code=None)
    start, _, code = blocks[-1]
    code = code.rstrip() + "\n" if code.strip() else None
    return ParsedCompletion(explanation=text[:start].strip(), code=code)


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code, re.MULTILINE) is not None


_IMPORT = re.compile(r"^(?:import[ \t]+\S|from[ \t]+\S+[ \t]+import[ \t]+\S)")


def assemble_program(problem: Problem, code: str) -> str:
    """The complete program as it is run.

    HumanEval-style problems (starter code and entry point set): code that does not define the entry point
    continues the starter code (a function body), so the program is ``starter_code + code``. Otherwise the
    code stands alone, with any top-level import lines of the starter code that it lacks put in front.
    Idempotent: assembling an assembled program changes nothing.
    """
    starter = problem.starter_code
    if not starter.strip():
        return code
    if problem.entry_point and not _defines(code, problem.entry_point):
        sep = "" if starter.endswith("\n") or code.startswith("\n") else "\n"
        return starter + sep + code
    have = {line.strip() for line in code.splitlines()}
    missing = [line.rstrip() for line in starter.splitlines() if _IMPORT.match(line) and line.strip() not in have]
    if not missing:
        return code
    return "\n".join(missing) + "\n\n" + code

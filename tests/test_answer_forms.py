"""Answer forms end to end: a model that writes its fix as `old => new` lines is prompted for that form, trained
on targets in it (SFT and offline PPO), and judged on the program the edit gives (PPO rollouts, evaluation)."""

from __future__ import annotations

import json
import re

import pytest

from selfdebug.collect.teachers.mutation import MutationTeacher, canonical
from selfdebug.core.answers import ARROW, answer_form_of, edit_answer, model_answer_form, parse_answer
from selfdebug.core.errors import ConfigError
from selfdebug.core.models import load_causal_lm
from selfdebug.core.prompts import assemble_program, refine_instruction
from selfdebug.evaluate.mutants import load_mbpp_mutants
from selfdebug.execution import Sandbox, SandboxConfig
from selfdebug.problems import load_mbpp
from selfdebug.train.data import build_examples, record_problem
from selfdebug.train.rl.data import build_items
from selfdebug.train.rl.tokens import read_response
from tests.openai_server import FakeOpenAIServer
from tests.test_evaluate import evaluate, results, samples

WRONG = "def add(a, b):\n    total = a - b\n    return total\n"


def test_parse_answer_splits_explanation_and_applies_the_edit():
    text = "The function subtracts instead of adding.\n\ntotal = a - b => total = a + b"
    parsed = parse_answer(text, "line", WRONG)
    assert parsed.explanation == "The function subtracts instead of adding."
    assert parsed.code == "def add(a, b):\n    total = a + b\n    return total\n"
    sr = parse_answer(f"It subtracts.\n{edit_answer(WRONG, parsed.code, 'search_replace')}", "search_replace", WRONG)
    assert (sr.explanation, sr.code) == ("It subtracts.", parsed.code)
    # No edit written, or an edit that quotes a line the program does not have: no program.
    assert parse_answer("It subtracts.", "line", WRONG).code is None
    assert parse_answer("It subtracts.", "line", WRONG).explanation == "It subtracts."
    assert parse_answer("total = a * b => total = a + b", "line", WRONG).code is None
    # The paper's form reads a fenced block, as before.
    full = parse_answer("Wrong sign.\n\n```python\ndef add(a, b):\n    return a + b\n```", "full", WRONG)
    assert full.explanation == "Wrong sign." and "a + b" in full.code


def test_model_answer_form_comes_from_the_config_or_the_checkpoint(tmp_path):
    assert model_answer_form("codellama/CodeLlama-7b-hf") == "full"
    assert model_answer_form(str(tmp_path)) == "full"  # a folder without a record
    (tmp_path / "selfdebug_sft.json").write_text(json.dumps({"format": "full", "answer_form": "line"}))
    assert model_answer_form(str(tmp_path)) == "line"
    assert model_answer_form(str(tmp_path), "search_replace") == "search_replace"  # the config wins
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    (pretrained / "selfdebug_sft.json").write_text(json.dumps({"pretrain": {"answer_form": "line"}}))
    assert model_answer_form(str(pretrained)) == "line"
    with pytest.raises(ConfigError, match=r"model.answer_form = 'diff'"):
        model_answer_form(str(tmp_path), "diff")
    (tmp_path / "selfdebug_sft.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"selfdebug_sft.json: unreadable"):
        model_answer_form(str(tmp_path))
    assert answer_form_of({"model": {"answer_form": "line"}}, "anything") == "line"


def test_refine_instruction_names_the_form():
    assert "`old line => new line`" in refine_instruction("refine", "line")
    assert "SEARCH" in refine_instruction("explain_refine", "search_replace")
    assert refine_instruction("refine") == refine_instruction("refine", "full")
    with pytest.raises(ValueError, match="answer form"):
        refine_instruction("refine", "diff")


@pytest.fixture(scope="module")
def mutant_records():
    """Trajectories as collection writes them: MBPP train mutants, explained and fixed by the mutation teacher,
    with the sandbox's feedback."""
    problems = [p for p in load_mbpp(split="train") if p.reference][:6]
    teacher = MutationTeacher(seed=0)
    records = []
    with Sandbox(SandboxConfig()) as sandbox:
        for p in problems:
            for k, mutant in enumerate(teacher.propose(p, 2)):
                verdict = sandbox.run(mutant.code, p.tests)
                if verdict.passed:
                    continue
                for explanation, fix in teacher.explain_one(p, mutant.code, verdict.feedback, 1, mutant.mutation):
                    records.append((f"part-0.jsonl:{len(records) + 1}", {
                        "problem_id": p.task_id, "source": p.source, "problem": p.prompt,
                        "entry_point": p.entry_point, "tests": p.tests.to_dict(), "wrong_code": mutant.code,
                        "wrong_id": f"{p.task_id}/{k}", "feedback": verdict.feedback, "explanation": explanation,
                        "refinement": fix, "verdict": "correct"}))
    assert len(records) >= 6
    return records


def test_sft_targets_in_the_line_form_apply_to_the_shown_program(mutant_records):
    examples = build_examples(mutant_records, [], {"explain_refine": 1.0, "refine": 1.0}, answer_form="line")
    assert {ex.kind for ex in examples} == {"explain_refine", "refine"}
    by_where = dict(mutant_records)
    with Sandbox(SandboxConfig()) as sandbox:
        for ex in examples:
            rec = by_where[ex.where]
            assert ex.messages[-1]["content"].endswith(refine_instruction(ex.kind, "line"))
            assert ARROW in ex.target and "```" not in ex.target
            if ex.kind == "explain_refine":
                assert ex.target.startswith(rec["explanation"].strip())
            problem = record_problem(rec)
            program = parse_answer(ex.target, "line", assemble_program(problem, rec["wrong_code"])).code
            assert program is not None and sandbox.run(program, problem.tests).passed
    # The paper's form is unchanged: a fenced block.
    full = build_examples(mutant_records, [], {"refine": 1.0})
    assert all(ex.target.startswith("```python\n") for ex in full)


def test_a_fix_the_line_form_cannot_express_is_left_out(mutant_records):
    where, rec = mutant_records[0]
    rewritten = {**rec, "refinement": "def other(x):\n    pass\n    return x\n"}  # not a one-line change
    assert build_examples([(where, rewritten)], [], {"refine": 1.0}, answer_form="line") == []


def test_ppo_reads_an_edit_answer_into_the_whole_program(mutant_records, tiny_cache_dir):
    _, tokenizer = load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir)
    items, counts = build_items(mutant_records, tokenizer, "explain_refine", offline=True, max_prompt_length=4096,
                                answer_form="line")
    assert items and counts["answer_form"] == "line" and counts["rl_answers_not_expressible"] == 0
    item = items[0]
    assert item.answer_form == "line" and ARROW in item.answer
    prompt = tokenizer.decode(item.prompt_ids)
    assert refine_instruction("explain_refine", "line") in prompt
    ids = tokenizer(item.answer, add_special_tokens=False)["input_ids"]
    response = read_response(tokenizer, ids, set(), [], explained=True, answer_form="line",
                             wrong_program=item.wrong_program)
    rec = dict(mutant_records)[item.where]
    assert response.code is not None and response.code.strip() == assemble_program(item.problem,
                                                                                    rec["refinement"]).strip()
    # R_expl lands on the explanation's last token, before the first edit row.
    upto = tokenizer.decode(ids[:response.explanation_end + 1])
    assert upto.strip().endswith(response.explanation[-5:]) and ARROW not in upto


def _edit_responder(problems, correct: bool):
    by_prompt = {p.prompt: p for p in problems}

    def respond(request):
        text = "\n".join(m["content"] for m in request["messages"])
        problem = next(p for prompt, p in by_prompt.items() if prompt in text)
        wrong = assemble_program(problem, problem.given_program).rstrip() + "\n"
        fixed = canonical(problem.reference) if correct else wrong.replace("return ", "return None or ", 1)
        edit = edit_answer(wrong, fixed, "line")
        assert edit is not None
        return [f"The bug is on one line.\n\n{edit}"] * request.get("n", 1)
    return respond


@pytest.mark.slow
def test_evaluation_applies_line_answers_before_judging(tmp_path):
    cache = tmp_path / "cache"
    problems = load_mbpp_mutants(limit=3, cache_dir=str(cache))
    for correct, expected in ((True, 100.0), (False, 0.0)):
        run_dir = tmp_path / f"correct-{correct}"
        with FakeOpenAIServer(_edit_responder(problems, correct)) as server:
            proc = evaluate(run_dir, "benchmark=mbpp_mutants", "limit=3", f"benchmark.loader.cache_dir={cache}",
                            "model=openai", "model.model=scripted", f"model.base_url={server.base_url}",
                            "model.answer_form=line", "n_samples=1", "rounds=1", "ks=[1]", "logger=none")
            assert proc.returncode == 0, proc.stderr
            prompt = server.chat_requests[-1].json["messages"][-1]["content"]
            assert prompt.endswith(refine_instruction("explain_refine", "line"))
        res = results(run_dir)
        assert res["rounds"][1]["pass@1"]["value"] == expected
        refined = [r for r in samples(run_dir) if r["round"] == 1]
        assert all(r["explanation"] == "The bug is on one line." for r in refined)
        if correct:
            assert all(re.search(r"^def ", r["solution"], re.MULTILINE) for r in refined)  # judged as whole programs
    proc = evaluate(tmp_path / "bad", "benchmark=mbpp_mutants", "limit=3", f"benchmark.loader.cache_dir={cache}",
                    "model=reference", "model.answer_form=diff", "logger=none")
    assert proc.returncode == 2 and "model.answer_form = 'diff'" in proc.stderr

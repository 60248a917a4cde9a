"""The LLM judge: strict parsing, the rubric from conf/, and ``python -m selfdebug.evaluate judge=...`` end to end
against a real OpenAI-compatible server on 127.0.0.1 (valid, fenced, malformed and out-of-range replies; resume
after a kill) and a local transformers judge."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest
import yaml

from selfdebug.core.errors import ConfigError
from selfdebug.evaluate.judge import Rubric, mean_ci, parse_scores
from selfdebug.problems import load_humaneval
from tests.conftest import REPO
from tests.openai_server import FakeOpenAIServer
from tests.test_evaluate import evaluate, results, samples, scripted_responder

RUBRIC = REPO / "conf" / "judge" / "rubric" / "ledex.yaml"


# ------------------------------------------------------------------------------------------------ parsing

@pytest.mark.parametrize("reply, scores", [
    ('{"correctness": 4, "helpfulness": 2}', {"correctness": 4, "helpfulness": 2}),
    ('  {"helpfulness": 5, "correctness": 1}\n', {"correctness": 1, "helpfulness": 5}),
    ('```json\n{"correctness": 3, "helpfulness": 3}\n```', {"correctness": 3, "helpfulness": 3}),
])
def test_valid_replies(reply, scores):
    assert parse_scores(reply) == (scores, None)


@pytest.mark.parametrize("reply, reason", [
    ("", "empty"),
    ("Correctness: 4, helpfulness: 3", "not a JSON object"),
    ('Sure! {"correctness": 4, "helpfulness": 3}', "not a JSON object"),
    ('[4, 3]', "not an object"),
    ('{"correctness": 4}', "exactly the keys"),
    ('{"correctness": 4, "helpfulness": 3, "why": "x"}', "exactly the keys"),
    ('{"correctness": 7, "helpfulness": 3}', "correctness = 7 is outside 1..5"),
    ('{"correctness": 0, "helpfulness": 3}', "outside 1..5"),
    ('{"correctness": 4.5, "helpfulness": 3}', "correctness = 4.5 is not an integer"),
    ('{"correctness": "4", "helpfulness": 3}', 'correctness = "4" is not an integer'),
    ('{"correctness": 4, "helpfulness": true}', "helpfulness = true is not an integer"),
])
def test_invalid_replies_say_why(reply, reason):
    scores, why = parse_scores(reply)
    assert scores is None and reason in why


def test_rubric_prompt_states_both_axes_and_anchors():
    spec = yaml.safe_load(RUBRIC.read_text())
    rubric = Rubric.from_dict(spec)
    item = {"problem": "PROBLEM-TEXT", "code": "CODE-TEXT", "feedback": "FEEDBACK-TEXT",
            "explanation": "It says {code} literally."}
    _system, user = rubric.messages(item)
    for axis in ("correctness", "helpfulness"):
        for k in (1, 3, 5):
            assert f"{k} = {spec['axes'][axis]['anchors'][k]}" in user["content"]
    assert all(t in user["content"] for t in ("PROBLEM-TEXT", "CODE-TEXT", "FEEDBACK-TEXT"))
    assert "It says {code} literally." in user["content"]  # placeholders inside an explanation stay as written
    assert '{"correctness": <integer 1-5>, "helpfulness": <integer 1-5>}' in user["content"]
    retry = rubric.retry_messages(item, "nonsense", "the reply is empty")
    assert retry[-2] == {"role": "assistant", "content": "nonsense"} and "the reply is empty" in retry[-1]["content"]

    bad = dict(spec, user="no placeholders here")
    with pytest.raises(ConfigError, match=r"judge\.rubric\.user"):
        Rubric.from_dict(bad)
    bad = dict(spec, axes={**spec["axes"], "helpfulness": {"question": "q", "anchors": {1: "a", 5: "b"}}})
    with pytest.raises(ConfigError, match=r"axes\.helpfulness\.anchors"):
        Rubric.from_dict(bad)


def test_mean_ci_resamples_groups():
    # Two problems, one with many identical scores: a per-problem bootstrap sees only two units.
    values = [5] * 10 + [1]
    grouped = mean_ci(values, ["a"] * 10 + ["b"], n_resamples=2000)
    assert grouped["mean"] == pytest.approx(51 / 11) and grouped["n"] == 11
    assert grouped["ci_low"] == pytest.approx(1.0) and grouped["ci_high"] == pytest.approx(5.0)
    flat = mean_ci(values, n_resamples=2000)
    assert flat["ci_low"] > 3.5  # eleven independent units give a much narrower interval
    assert mean_ci([])["mean"] is None


# ------------------------------------------------------------------------------------------------ end to end

PROBLEMS = load_humaneval()[:3]
# How the judge answers the explanations of each task: first try, then the retry.
SCRIPT = {
    PROBLEMS[0].entry_point: ['```json\n{"correctness": 5, "helpfulness": 4}\n```', None],
    PROBLEMS[1].entry_point: ["The explanation is right. Correctness 2/5.", '{"correctness": 2, "helpfulness": 3}'],
    PROBLEMS[2].entry_point: ['{"correctness": 7, "helpfulness": 3}', '{"correctness": 7, "helpfulness": 3}'],
}


class Judge:
    """The judge's side of the server: scripted replies per task; can hold requests to simulate a slow judge."""

    def __init__(self, hold_after: int | None = None):
        self.student = scripted_responder(PROBLEMS)
        self.requests: list[dict] = []
        self.hold_after = hold_after
        self.holding = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, request: dict):
        if request["model"] != "judge":
            return self.student(request)
        with self.lock:
            self.requests.append(request)
            count = len(self.requests)
        if self.hold_after is not None and count > self.hold_after:
            self.holding.set()
            self.release.wait(60)
        user = request["messages"][1]["content"]
        name = next(n for n in SCRIPT if f"def {n}(" in user)
        return SCRIPT[name][1 if len(request["messages"]) > 2 else 0]


def judge_overrides(server, *extra):
    return ["model=openai", "model.model=student", f"model.base_url={server.base_url}", "limit=3", "n_samples=3",
            "rounds=1", "ks=[1]", "judge=openai", "judge.model=judge", f"judge.base_url={server.base_url}", *extra]


@pytest.mark.slow
def test_judge_scores_every_explanation(tmp_path):
    judge = Judge()
    with FakeOpenAIServer(judge) as server:
        proc = evaluate(tmp_path, *judge_overrides(server))
    assert proc.returncode == 0, proc.stderr[-3000:]

    # 9 explanations: 3 accepted at once, 3 after one retry, 3 refused twice.
    assert len(judge.requests) == 9 + 6
    first = judge.requests[0]
    assert first["temperature"] == 0.0
    prompt = first["messages"][1]["content"]
    assert "The function returns None instead of computing the result." in prompt  # the explanation
    assert "return None" in prompt and "Failed test" in prompt  # the wrong program and its feedback
    retries = [r for r in judge.requests if len(r["messages"]) == 4]
    assert len(retries) == 6
    assert any("correctness = 7 is outside 1..5" in r["messages"][3]["content"] for r in retries)
    assert any("not a JSON object" in r["messages"][3]["content"] for r in retries)

    verdicts = {r["task_id"]: r["judge"] for r in samples(tmp_path) if r["round"] == 1}
    assert verdicts[PROBLEMS[0].task_id] == {"status": "ok", "correctness": 5, "helpfulness": 4, "attempts": 1}
    assert verdicts[PROBLEMS[1].task_id] == {"status": "ok", "correctness": 2, "helpfulness": 3, "attempts": 2}
    bad = verdicts[PROBLEMS[2].task_id]
    assert bad["status"] == "unparsed" and bad["attempts"] == 2 and "outside 1..5" in bad["reason"]
    assert all("judge" not in r for r in samples(tmp_path) if r["round"] == 0)

    j = results(tmp_path)["judge"]
    assert (j["judge"], j["rubric"], j["explanations"], j["scored"], j["judge_unparsed"], j["retried"]) == (
        "openai:judge", "ledex", 9, 6, 3, 6)
    assert j["correctness"]["mean"] == pytest.approx(3.5) and j["helpfulness"]["mean"] == pytest.approx(3.5)
    assert 2.0 <= j["correctness"]["ci_low"] < 3.5 < j["correctness"]["ci_high"] <= 5.0
    assert j["by_round"][0]["round"] == 1 and j["by_round"][0]["judge_unparsed"] == 3

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["judge"]["judge_unparsed"] == 3 and summary["judge"]["helpfulness"]["mean"] == pytest.approx(3.5)
    wandb_file = next((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    assert b"judge/correctness" in wandb_file and b"judge_unparsed" in wandb_file
    assert "judge openai:judge: correctness 3.50, helpfulness 3.50 over 6 explanations (3 unparsed)" in proc.stdout

    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "selfdebug.report", f"runs={tmp_path}", f"out={out}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ci = f"[{j['correctness']['ci_low']:.2f}, {j['correctness']['ci_high']:.2f}]"
    assert (f"| openai-student | explain_refine | humaneval | openai:judge | 6 | 3 | 3.50 {ci} | 3.50 "
            in (out / "report.md").read_text())
    assert "Explanation quality (LLM judge" in (out / "report.html").read_text()


@pytest.mark.slow
def test_a_killed_judge_resumes_where_it_stopped(tmp_path):
    judge = Judge(hold_after=3)  # the first chunk (3 explanations of one task) is answered, then the judge hangs
    with FakeOpenAIServer(judge) as server:
        overrides = judge_overrides(server, "judge.chunk_size=3", "logger=none")
        cmd = [sys.executable, "-m", "selfdebug.evaluate", f"hydra.run.dir={tmp_path}", "progress=false", *overrides]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "WANDB_MODE": "offline"})
        try:
            assert judge.holding.wait(300), "the judge was never asked past its first chunk"
            time.sleep(0.5)
        finally:
            proc.kill()
            proc.wait(30)
            judge.release.set()
        (checkpoint,) = (tmp_path / "checkpoints").glob("judge-*.jsonl")
        assert len(checkpoint.read_text().splitlines()) == 3
        assert not (tmp_path / "results.json").exists() and not (tmp_path / "samples.jsonl").exists()

        judge.requests.clear()
        judge.hold_after = None
        student_before = sum(1 for r in server.chat_requests if r.json["model"] == "student")
        proc = evaluate(tmp_path, *overrides)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert sum(1 for r in server.chat_requests if r.json["model"] == "student") == student_before
    # Only the 6 unscored explanations are asked again (each twice: their first replies are refused).
    assert len(judge.requests) == 12
    assert all(f"def {PROBLEMS[0].entry_point}(" not in r["messages"][1]["content"] for r in judge.requests)
    j = results(tmp_path)["judge"]
    assert (j["scored"], j["judge_unparsed"]) == (6, 3) and j["correctness"]["mean"] == pytest.approx(3.5)


@pytest.mark.slow
def test_judge_on_a_finished_run_only_adds_scores(tmp_path):
    judge = Judge()
    with FakeOpenAIServer(judge) as server:
        base = [o for o in judge_overrides(server, "logger=none") if not o.startswith("judge")]
        assert evaluate(tmp_path, *base).returncode == 0
        assert "judge" not in results(tmp_path)
        asked = len(server.chat_requests)
        proc = evaluate(tmp_path, *judge_overrides(server, "logger=none", "judge.rounds=[1]", "judge.max_items=4"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(server.chat_requests) - asked == len(judge.requests)  # no student request
    j = results(tmp_path)["judge"]
    assert j["asked"] == 4 and j["scored"] + j["judge_unparsed"] == 4
    assert sum(1 for r in samples(tmp_path) if "judge" in r) == 4


@pytest.mark.slow
def test_refine_mode_has_nothing_to_judge(tmp_path):
    judge = Judge()
    with FakeOpenAIServer(judge) as server:
        proc = evaluate(tmp_path, *judge_overrides(server, "logger=none", "mode=refine", "limit=1", "n_samples=1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert judge.requests == [] and "judge" not in results(tmp_path)
    assert "judge=openai-judge skipped: mode=refine" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_local_transformers_judge_counts_what_it_cannot_parse(tmp_path, tiny_cache_dir):
    # The tiny model writes noise: every verdict is retried once, then counted as unparsed.
    with FakeOpenAIServer(scripted_responder(PROBLEMS)) as server:
        proc = evaluate(tmp_path, "model=openai", "model.model=student", f"model.base_url={server.base_url}",
                        "limit=1", "n_samples=2", "rounds=1", "ks=[1]", "logger=none", "judge=hf",
                        "judge.name_or_path=tiny", f"+judge.generator.tiny_cache_dir={tiny_cache_dir}",
                        "judge.sampling.max_new_tokens=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    j = results(tmp_path)["judge"]
    assert j["judge"] == "hf:tiny" and (j["scored"], j["judge_unparsed"], j["retried"]) == (0, 2, 2)
    assert j["correctness"]["mean"] is None
    assert all(r["judge"]["status"] == "unparsed" for r in samples(tmp_path) if r["round"] == 1)


@pytest.mark.parametrize("override, message", [
    ("judge.rubric.user=no placeholders", r"judge\.rubric\.user: the template lacks"),
    ("+judge.sampling.n=2", r"judge\.sampling\.n = 2"),
    ("judge.max_items=0", r"judge\.max_items = 0"),
])
def test_bad_judge_config_fails_before_any_request(tmp_path, override, message):
    with FakeOpenAIServer(scripted_responder(PROBLEMS)) as server:
        proc = evaluate(tmp_path, *judge_overrides(server, "logger=none", override))
        assert server.chat_requests == []
    assert proc.returncode == 2 and re.search(message, proc.stderr), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "results.json").exists()

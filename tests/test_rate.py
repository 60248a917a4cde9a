"""``python -m selfdebug.rate command=export`` / ``command=import`` on real evaluation runs: blinded sheets,
filled the way a spreadsheet user or the HTML page fills them, read back onto the right sample and model; bad
sheets refused."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfdebug.problems import load_humaneval
from tests.conftest import REPO
from tests.openai_server import FakeOpenAIServer
from tests.test_evaluate import evaluate

PROBLEMS = load_humaneval()[:3]
MARKERS = {"alpha": "ALPHA", "beta": "BETA"}
LABELS = {"alpha": "base", "beta": "sft"}
N_SAMPLES = 4


def responder(request: dict):
    """Students alpha and beta: sample i is ``return i`` (wrong); each explanation names its model and the
    constant it saw, so a rater (and the judge) can tell every item apart by what the sheet shows."""
    messages = request["messages"]
    if request["model"] == "judge":
        seen = rater_scores(messages[1]["content"].split("## Explanation to grade", 1)[1])
        return json.dumps(seen)
    text = "\n".join(m["content"] for m in messages)
    problem = next(p for p in PROBLEMS if f"def {p.entry_point}(" in text)
    n = request.get("n", 1)
    if len(messages) <= 2:
        return [f"```python\ndef {problem.entry_point}(*args, **kwargs):\n    return {i}\n```" for i in range(n)]
    value = re.search(r"return (\d+)", messages[1]["content"]).group(1)
    explanation = f"{MARKERS[request['model']]}: the function returns the constant {value} instead of computing it."
    return [f"{explanation}\n```python\n{problem.reference}\n```"] * n


def rater_scores(explanation: str, rater: str = "ann") -> dict:
    """What a scripted rater gives an explanation: correctness by model (5 for alpha, 2 for beta), helpfulness
    by the wrong constant (sample i returns i); rater bob is one point kinder on sample 0's helpfulness."""
    model = "alpha" if "ALPHA" in explanation else "beta"
    value = int(re.search(r"constant (\d+)", explanation).group(1))
    helpfulness = 1 + value % 5 + (1 if rater == "bob" and value == 0 else 0)
    return {"correctness": 5 if model == "alpha" else 2, "helpfulness": helpfulness}


def expected_scores(label: str, sample_index: int, rater: str = "ann") -> dict:
    model = next(m for m, lab in LABELS.items() if lab == label)
    return rater_scores(f"{MARKERS[model]} constant {sample_index}", rater)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished explain_refine runs (labels base and sft), their explanations scored by an LLM judge."""
    root = tmp_path_factory.mktemp("runs")
    dirs = {}
    with FakeOpenAIServer(responder) as server:
        for model, label in LABELS.items():
            run_dir = root / label
            proc = evaluate(run_dir, "model=openai", f"model.model={model}", f"model.base_url={server.base_url}",
                            f"label={label}", "limit=3", f"n_samples={N_SAMPLES}", "rounds=1", "ks=[1]",
                            "logger=none", "judge=openai", "judge.model=judge", f"judge.base_url={server.base_url}")
            assert proc.returncode == 0, proc.stderr[-3000:]
            dirs[label] = run_dir
    return dirs


def rate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfdebug.rate", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "WANDB_MODE": "offline"})


def export(runs, out: Path, n: int = 5, seed: int = 0) -> subprocess.CompletedProcess:
    return rate("command=export", f"runs=[{runs['base']},{runs['sft']}]", f"n={n}", f"seed={seed}", f"out={out}")


def fill_like_a_spreadsheet(sheet: Path, dest: Path, rater: str, skip: int = 0) -> None:
    """Copy sheet.csv with the rater's name and scores in, reading only what the sheet shows."""
    with open(sheet, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(dest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for i, row in enumerate(rows):
            if i >= skip:
                row.update(rater=rater, comment=f'{rater} says "ok", item {row["number"]}',
                           **{k: str(v) for k, v in rater_scores(row["explanation"], rater).items()})
            writer.writerow(row)


def check_round_trip(summary: dict, raters: dict[str, int]) -> None:
    """Every rating sits on the sample and model whose explanation the rater read."""
    items = summary["ratings_by_item"]
    assert len(items) == 10 and sorted(i["number"] for i in items) == list(range(1, 11))
    rated = {name: 0 for name in raters}
    for item in items:
        assert item["label"] in LABELS.values() and item["round"] == 1
        for name, given in item["ratings"].items():
            expected = expected_scores(item["label"], item["sample_index"], name)
            assert {k: given[k] for k in expected} == expected, (name, item)
            rated[name] += 1
        if item["judge"] is not None:
            assert item["judge"] == expected_scores(item["label"], item["sample_index"])
    assert rated == raters


@pytest.mark.slow
def test_export_then_import_round_trips(runs, tmp_path):
    proc = export(runs, tmp_path / "study")
    assert proc.returncode == 0, proc.stderr
    sheet_dir, key_path = tmp_path / "study" / "sheet", tmp_path / "study" / "key.json"
    assert sorted(p.name for p in sheet_dir.iterdir()) == ["sheet.csv", "sheet.html"]
    key = json.loads(key_path.read_text())
    assert [r["label"] for r in key["runs"]] == ["base", "sft"] and len(key["items"]) == 10
    assert sorted(sum(1 for it in key["items"] if it["run"] == r) for r in (0, 1)) == [5, 5]  # n per run

    # Blind: nothing on the sheets tells the model; ids say nothing of the task.
    for path in sheet_dir.iterdir():
        text = path.read_text()
        for secret in ("openai-alpha", "openai-beta", str(runs["base"]), str(runs["sft"]), '"label"', '"run"'):
            assert secret not in text, (path.name, secret)
    assert all(re.fullmatch(r"[0-9a-f]{10}", it["item_id"]) for it in key["items"])
    # Shuffled across models, not in blocks.
    order = [it["run"] for it in key["items"]]
    assert order != sorted(order) and order != sorted(order, reverse=True)

    fill_like_a_spreadsheet(sheet_dir / "sheet.csv", tmp_path / "ann.csv", "ann")
    fill_like_a_spreadsheet(sheet_dir / "sheet.csv", tmp_path / "bob.csv", "bob", skip=3)  # bob skipped 3 items
    proc = rate("command=import", f"sheets=[{tmp_path / 'ann.csv'},{tmp_path / 'bob.csv'}]", f"key={key_path}")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "study" / "rating_summary.json").read_text())
    check_round_trip(summary, {"ann": 10, "bob": 7})
    assert summary["ratings"] == 17 and summary["items_unrated"] == 0
    assert summary["sheets"][str(tmp_path / "bob.csv")] == {"rated": 7, "unrated": 3}
    first = next(i for i in summary["ratings_by_item"] if i["number"] == 1)
    assert first["ratings"]["ann"]["comment"] == 'ann says "ok", item 1'

    models = {m["label"]: m for m in summary["models"]}
    assert models["base"]["correctness"]["mean"] == 5.0 and models["sft"]["correctness"]["mean"] == 2.0
    assert models["base"]["judge_correctness"] == 5.0 and models["base"]["judge_items"] == 5

    corr, helpful = summary["agreement"]["correctness"], summary["agreement"]["helpfulness"]
    assert corr["alpha_ordinal"] == pytest.approx(1.0) and corr["exact_agreement"] == 1.0
    assert corr["cohen_kappa_quadratic"]["ann vs bob"] == {"kappa": pytest.approx(1.0), "items": 7}
    assert corr["items_rated_twice"] == 7
    bob_kinder = sum(1 for i in summary["ratings_by_item"] if i["sample_index"] == 0 and "bob" in i["ratings"])
    assert bob_kinder > 0, "the seed drew no sample 0 for bob; pick another seed"
    assert 0 < helpful["alpha_ordinal"] < 1 and helpful["exact_agreement"] == pytest.approx((7 - bob_kinder) / 7)
    assert summary["human_vs_judge"]["correctness"]["spearman_rho"] == pytest.approx(1.0)
    assert summary["human_vs_judge"]["correctness"]["items"] == 10

    md = (tmp_path / "study" / "rating_summary.md").read_text()
    assert "| base | 5 | " in md and "| correctness | 1.000 | ann vs bob: 1.000 (n=7) | 100.00% | 7 |" in md


def test_export_is_seeded(runs, tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert export(runs, tmp_path / name, seed=seed).returncode == 0
    sheet = lambda name: (tmp_path / name / "sheet" / "sheet.csv").read_text()  # noqa: E731
    assert sheet("a") == sheet("b") and sheet("a") != sheet("c")


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


@pytest.mark.slow
def test_bad_sheets_fail_with_file_line_and_column(runs, tmp_path):
    assert export(runs, tmp_path / "study").returncode == 0
    key_path = tmp_path / "study" / "key.json"
    ids = [it["item_id"] for it in json.loads(key_path.read_text())["items"]]
    head = ["item_id", "rater", "correctness", "helpfulness", "comment"]
    good = write_csv(tmp_path / "good.csv", head, [[ids[0], "ann", 3, 4, ""]])
    cases = {
        "unknown.csv": ([[ids[1], "ann", 3, 3, ""], ["deadbeef00", "ann", 3, 3, ""]],
                        r"unknown\.csv:3: column item_id: 'deadbeef00' is not an item"),
        "range.csv": ([[ids[1], "ann", 6, 3, ""]], r"range\.csv:2: column correctness: '6' is not an integer 1\.\.5"),
        "float.csv": ([[ids[1], "ann", 3, "4.5", ""]], r"float\.csv:2: column helpfulness: '4\.5'"),
        "half.csv": ([[ids[1], "ann", 3, "", ""]], r"half\.csv:2: column helpfulness: empty, but correctness"),
        "norater.csv": ([[ids[1], " ", 3, 3, ""]], r"norater\.csv:2: column rater: empty"),
        "dup.csv": ([[ids[0], "ann", 2, 2, ""]], r"dup\.csv:2: rater 'ann' rated item .* already, at .*good\.csv:2"),
    }
    for name, (rows, pattern) in cases.items():
        sheet = write_csv(tmp_path / name, head, rows)
        proc = rate("command=import", f"sheets=[{good},{sheet}]", f"key={key_path}")
        assert proc.returncode == 2 and re.search(pattern, proc.stderr), (name, proc.stderr)
        assert "Traceback" not in proc.stderr and not (tmp_path / "study" / "rating_summary.json").exists()

    bad_header = write_csv(tmp_path / "header.csv", ["item", "rater", "correctness", "helpfulness"], [])
    proc = rate("command=import", f"sheets={bad_header}", f"key={key_path}")
    assert proc.returncode == 2 and "header.csv:1: the header needs columns" in proc.stderr
    assert "missing ['item_id']; unknown ['item']" in proc.stderr

    # All problems at once, one message.
    many = write_csv(tmp_path / "many.csv", head, [[ids[1], "ann", 9, 3, ""], [ids[2], "ann", 3, 0, ""]])
    proc = rate("command=import", f"sheets={many}", f"key={key_path}")
    assert proc.returncode == 2 and "2 problem(s)" in proc.stderr and "many.csv:3" in proc.stderr

    proc = rate("command=import", f"sheets={tmp_path / 'missing.csv'}", f"key={key_path}")
    assert proc.returncode == 2 and "no such file" in proc.stderr
    proc = rate("command=import", f"sheets={good}", f"key={tmp_path / 'good.csv'}")
    assert proc.returncode == 2 and "not JSON" in proc.stderr


@pytest.mark.slow
def test_bad_exports_write_nothing(runs, tmp_path):
    proc = export(runs, tmp_path / "big", n=13)  # 3 problems x 4 samples = 12 wrong initial programs per run
    assert proc.returncode == 2 and "12 wrong initial programs" in proc.stderr and "n=13" in proc.stderr
    assert not (tmp_path / "big").exists()

    assert export(runs, tmp_path / "study").returncode == 0
    before = (tmp_path / "study" / "key.json").read_bytes()
    proc = export(runs, tmp_path / "study", seed=5)
    assert proc.returncode == 2 and "key.json exists" in proc.stderr
    assert (tmp_path / "study" / "key.json").read_bytes() == before

    refine = tmp_path / "refine_run"
    shutil.copytree(runs["base"], refine)
    results = json.loads((refine / "results.json").read_text())
    (refine / "results.json").write_text(json.dumps({**results, "mode": "refine"}))
    proc = rate("command=export", f"runs={refine}", "n=1", f"out={tmp_path / 'r'}")
    assert proc.returncode == 2 and "mode=refine" in proc.stderr

    # An unknown key is Hydra's to report (exit 1, as for every entry point); bad values are ours (exit 2).
    proc = rate("command=export", f"runs={runs['base']}", "n=5", f"out={tmp_path / 'x'}", "colour=blue")
    assert proc.returncode == 1 and "Could not override 'colour'" in proc.stderr
    proc = rate("command=export", "n=5", f"out={tmp_path / 'x'}")
    assert proc.returncode == 2 and "at least one run dir" in proc.stderr
    proc = rate("command=export", f"runs={runs['base']}", "n=many", f"out={tmp_path / 'x'}")
    assert proc.returncode == 2 and "n='many': not an integer" in proc.stderr and "Traceback" not in proc.stderr
    proc = rate("command=rank", f"runs={runs['base']}")
    assert proc.returncode == 2 and "command='rank'" in proc.stderr
    proc = rate("command=export", f"runs={runs['base']}", f"sheets={tmp_path / 'a.csv'}", f"out={tmp_path / 'x'}")
    assert proc.returncode == 2 and "sheets= is read by command=import" in proc.stderr
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ a real browser

CHROMIUM = next((p for p in (os.environ.get("SELFDEBUG_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), shutil.which("google-chrome")) if p), None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium, or set SELFDEBUG_CHROMIUM)")
def test_html_sheet_in_headless_chromium(runs, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: pip install -e .[test]")
    assert export(runs, tmp_path / "study").returncode == 0
    page_path = tmp_path / "study" / "sheet" / "sheet.html"
    html = page_path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html)  # self-contained: works offline

    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 900})
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_path.as_uri())
            items = page.locator("section.item")
            assert items.count() == 10
            assert page.locator("#status").inner_text() == "0 of 10 rated"

            # Saving without a name is refused with a message, not a file.
            dialogs = []
            page.once("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.click("#save")
            assert dialogs and "name" in dialogs[0]

            page.fill("#rater", "carol")
            for i in range(items.count()):
                item = items.nth(i)
                item_id = item.get_attribute("id").removeprefix("item-")
                scores = rater_scores(item.locator(".explanation").inner_text())
                for axis, value in scores.items():
                    page.check(f"#{axis}-{item_id}-{value}")
                if i == 0:
                    page.fill(f"#comment-{item_id}", 'unclear, "partly" right')
            assert page.locator("#status").inner_text() == "10 of 10 rated"

            # Work survives a reload (localStorage), before and after saving.
            page.reload()
            assert page.locator("#status").inner_text() == "10 of 10 rated"
            assert page.input_value("#rater") == "carol"
            # The screenshot shows the first item from its wrong program down to the score inputs.
            page.evaluate("const h = document.querySelectorAll('.item')[0].querySelectorAll('h3')[1];"
                          "window.scrollTo(0, h.getBoundingClientRect().top + window.scrollY - 70)")
            shot = tmp_path / "rating_sheet.png"
            page.screenshot(path=str(shot))
            if os.environ.get("SELFDEBUG_SCREENSHOT"):
                shutil.copy(shot, os.environ["SELFDEBUG_SCREENSHOT"])
            with page.expect_download() as download:
                page.click("#save")
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            assert not errors, errors
        finally:
            browser.close()
    assert saved.name.startswith("ratings-") and saved.name.endswith("-carol.csv")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    key_path = tmp_path / "study" / "key.json"
    proc = rate("command=import", f"sheets={saved}", f"key={key_path}")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "study" / "rating_summary.json").read_text())
    check_round_trip(summary, {"carol": 10})
    first = next(i for i in summary["ratings_by_item"] if i["number"] == 1)
    assert first["ratings"]["carol"]["comment"] == 'unclear, "partly" right'

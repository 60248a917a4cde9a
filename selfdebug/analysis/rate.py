"""``python -m selfdebug.rate``: human ratings of bug explanations, blinded, and read back.

    python -m selfdebug.rate command=export 'runs=[outputs/evaluate/.../base,outputs/evaluate/.../sft]' out=rating
    python -m selfdebug.rate command=import 'sheets=[ratings-alice.csv,ratings-bob.csv]' key=rating/key.json

``export`` draws ``n`` wrong initial programs with their explanation from each run (runs evaluated with
mode=explain_refine), shuffles them together under opaque ids and writes, under ``out/sheet/``, a rating
sheet as CSV (for a spreadsheet) and as one self-contained HTML page (no network; the page keeps what a
rater entered in the browser and its Save button downloads the CSV that ``import`` reads). The key that
maps items back to runs and models goes to ``out/key.json``: keep it from the raters.

``import`` validates the filled sheets (file, line and column of each problem), unblinds them with the key
and writes ``rating_summary.json`` and ``rating_summary.md``: per-model means with bootstrap intervals,
agreement between raters (Krippendorff's alpha, ordinal; Cohen's kappa, quadratic weights, per pair) and,
where the runs were scored by the LLM judge (``evaluate judge=...``), Spearman's correlation of human and
judge scores. Raters see the rubric the judge gets (``conf/judge/rubric/``).
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import itertools
import json
import math
import os
import random
import warnings
from collections import defaultdict
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig

from selfdebug.analysis import options
from selfdebug.core.cli import CONF_DIR
from selfdebug.core.errors import ConfigError, DataError
from selfdebug.core.tracking import write_json_atomic
from selfdebug.evaluate.judge import AXES, SCORES, Rubric, explanation_items, mean_ci

DEFAULT_RUBRIC = Path(CONF_DIR) / "judge" / "rubric" / "ledex.yaml"
KEY_FORMAT = "selfdebug-rating-key/1"
REQUIRED_COLUMNS = ("item_id", "rater", "correctness", "helpfulness")
# Columns of sheet.csv that carry what the rater reads; import accepts and ignores them.
CONTENT_COLUMNS = ("number", "comment", "problem", "wrong_code", "feedback", "explanation")
SHEET_COLUMNS = ("item_id", "number", "rater", "correctness", "helpfulness", "comment", "problem", "wrong_code",
                 "feedback", "explanation")
MAX_ERRORS = 20

def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def load_rubric(path: Path) -> Rubric:
    if not path.is_file():
        raise ConfigError(f"rubric={path}: no such file")
    return Rubric.from_dict(yaml.safe_load(path.read_text()) or {}, where=str(path))


# ------------------------------------------------------------------------------------------------ export

def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise DataError(f"{path}:{i}: not a JSON line ({exc})") from None
    return rows


def load_run(run_dir: Path) -> dict:
    """A finished explain_refine evaluation: its label, rows and the problems it was run on."""
    results_path, samples_path = run_dir / "results.json", run_dir / "samples.jsonl"
    for path in (results_path, samples_path, run_dir / ".hydra" / "config.yaml"):
        if not path.is_file():
            raise DataError(f"runs: {run_dir}: {path.name} is missing; point runs= at a finished evaluation's run dir")
    results = json.loads(results_path.read_text())
    if results.get("mode") != "explain_refine":
        raise DataError(f"runs: {run_dir}: mode={results.get('mode')}; only explain_refine runs have explanations")
    import hydra
    from omegaconf import OmegaConf

    import selfdebug.core.cli  # noqa: F401 -- registers the resolvers the saved config uses

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    # The benchmark is read the way the evaluation read it: the sheet shows the problem text.
    problems = {p.task_id: p for p in hydra.utils.instantiate(cfg.benchmark.loader)}
    rows = _read_jsonl(samples_path)
    unknown = sorted({r["task_id"] for r in rows} - set(problems))
    if unknown:
        raise DataError(f"runs: {run_dir}: samples.jsonl names tasks the benchmark lacks: {unknown[:5]}")
    return {"dir": str(run_dir.resolve()), "label": cfg.get("label") or results.get("model", "?"),
            "model": results.get("model", "?"), "benchmark": results.get("benchmark", "?"),
            "mode": results["mode"], "rows": rows, "problems": problems}


def export(runs: list[Path], n: int, seed: int, out: Path, key_path: Path | None = None,
           rubric_path: Path = DEFAULT_RUBRIC) -> dict:
    """Writes out/sheet/sheet.{csv,html} and the key; returns their paths and the item count."""
    key_path = key_path or out / "key.json"
    sheet_dir = out / "sheet"
    for path in (key_path, sheet_dir / "sheet.html", sheet_dir / "sheet.csv"):
        if path.exists():
            raise ConfigError(f"{path} exists: an earlier export's; its filled sheets would no longer match. "
                              "Choose another out=")
    if len({str(r.resolve()) for r in runs}) != len(runs):
        raise ConfigError("runs= names the same run dir twice")
    rubric = load_rubric(rubric_path)
    rng = random.Random(seed)
    loaded, drawn = [], []
    for index, run_dir in enumerate(runs):
        run = load_run(run_dir)
        # Explanations of wrong initial programs: round 1 explains the program sampled first.
        items, _ = explanation_items(run["rows"], run["problems"], rounds=(1,))
        if len(items) < n:
            raise DataError(f"runs: {run_dir}: {len(items)} wrong initial programs with an explanation; n={n} asks "
                            "for more. Lower n or evaluate more samples")
        for item in rng.sample(items, n):
            drawn.append({**item, "run": index})
        loaded.append({k: run[k] for k in ("dir", "label", "model", "benchmark", "mode")})
    rng.shuffle(drawn)
    ids: set[str] = set()
    for number, item in enumerate(drawn, 1):
        while (item_id := f"{rng.getrandbits(40):010x}") in ids:
            pass
        ids.add(item_id)
        item.update(item_id=item_id, number=number)
    sheet_id = _sha(json.dumps([seed, sorted(ids)]))[:10]
    key = {"format": KEY_FORMAT, "sheet_id": sheet_id, "seed": seed, "n_per_run": n, "rubric": rubric.name,
           "runs": loaded,
           "items": [{"item_id": it["item_id"], "number": it["number"], "run": it["run"], "task_id": it["task_id"],
                      "round": it["round"], "sample_index": it["sample_index"],
                      "explanation_sha256": _sha(it["explanation"])} for it in drawn]}
    public = [{"item_id": it["item_id"], "number": it["number"], "problem": it["problem"], "wrong_code": it["code"],
               "feedback": it["feedback"], "explanation": it["explanation"]} for it in drawn]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(SHEET_COLUMNS)
    for it in public:
        writer.writerow([it["item_id"], it["number"], "", "", "", "", it["problem"], it["wrong_code"], it["feedback"],
                         it["explanation"]])
    page = render_html(sheet_id, public, rubric)
    sheet_dir.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(sheet_dir / "sheet.csv", buf.getvalue())
    _write_text_atomic(sheet_dir / "sheet.html", page)
    write_json_atomic(key_path, key)  # last: a key exists only beside complete sheets
    return {"sheet_html": sheet_dir / "sheet.html", "sheet_csv": sheet_dir / "sheet.csv", "key": key_path,
            "items": len(drawn), "sheet_id": sheet_id}


# ------------------------------------------------------------------------------------------------ the HTML sheet

_CSS = """
*{box-sizing:border-box} body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d1f23}
header{position:sticky;top:0;z-index:2;background:#1f3a5f;color:#fff;padding:10px 24px;display:flex;gap:18px;
 align-items:center;flex-wrap:wrap} header h1{font-size:18px;margin:0 12px 0 0}
header input{font-size:15px;padding:5px 8px;border-radius:4px;border:0;width:220px}
header button{font-size:15px;padding:6px 16px;border-radius:4px;border:0;background:#ffd166;cursor:pointer;font-weight:600}
#status{font-size:14px;opacity:.9} main{max-width:1100px;margin:0 auto;padding:16px 24px 80px}
.rubric,.item{background:#fff;border-radius:8px;padding:14px 20px;margin:16px 0;box-shadow:0 1px 3px #0002}
.item.rated{border-left:6px solid #2a9d8f} .item h2{font-size:17px;margin:4px 0 10px} .item h3{font-size:14px;
 margin:12px 0 4px;color:#445} pre{background:#f6f8fa;border:1px solid #e1e4e8;border-radius:4px;padding:8px 10px;
 overflow-x:auto;font-size:13px;margin:0;white-space:pre-wrap} .explanation{background:#fff8e1;border:1px solid #f0d98c;
 border-radius:4px;padding:8px 10px;white-space:pre-wrap;font-size:14px}
.scores{display:flex;gap:24px;flex-wrap:wrap;margin-top:12px} fieldset{border:1px solid #ccd;border-radius:6px;
 padding:6px 12px;flex:1;min-width:300px} legend{font-weight:600;font-size:14px} .choices{display:flex;gap:10px;
 margin:6px 0} .choices label{display:flex;align-items:center;gap:3px;font-size:15px;cursor:pointer}
.anchors{font-size:12px;color:#556;margin:0;padding-left:18px} textarea{width:100%;min-height:34px;font:inherit;
 font-size:13px;margin-top:8px} .id{font-weight:400;color:#778;font-size:12px}
"""

_JS = r"""
const DATA = JSON.parse(document.getElementById('sheet-data').textContent);
const STORE = 'selfdebug-rating-' + DATA.sheet_id;
let state = {rater: '', ratings: {}};
try { const saved = JSON.parse(localStorage.getItem(STORE) || 'null'); if (saved && saved.ratings) state = saved; }
catch (e) { /* a browser without storage: the page still works, unsaved input is lost on close */ }
function persist() { try { localStorage.setItem(STORE, JSON.stringify(state)); } catch (e) {} }
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;  // never innerHTML: model output is shown as text
  return e;
}
function rating(id) { return state.ratings[id] || (state.ratings[id] = {correctness: '', helpfulness: '', comment: ''}); }
function isRated(id) { const r = state.ratings[id]; return !!(r && r.correctness && r.helpfulness); }
function refresh() {
  const done = DATA.items.filter(it => isRated(it.item_id)).length;
  document.getElementById('status').textContent = done + ' of ' + DATA.items.length + ' rated';
  for (const it of DATA.items) document.getElementById('item-' + it.item_id).classList.toggle('rated', isRated(it.item_id));
}
function renderRubric() {
  const box = document.getElementById('rubric');
  box.appendChild(el('h2', {}, 'How to rate'));
  box.appendChild(el('p', {}, 'Each item shows a problem, a program that fails its tests, the test feedback and an ' +
    'explanation of the bug. Rate the explanation on both axes from 1 to 5 (2 and 4 lie between the anchors). ' +
    'What you enter is kept in this browser; press Save to download your ratings as a CSV file and send it back.'));
  for (const axis of DATA.axes) {
    const spec = DATA.rubric[axis];
    box.appendChild(el('h3', {}, axis[0].toUpperCase() + axis.slice(1) + ': ' + spec.question));
    const ul = el('ul', {class: 'anchors'});
    for (const k of ['1', '3', '5']) ul.appendChild(el('li', {}, k + ' = ' + spec.anchors[k]));
    box.appendChild(ul);
  }
}
function renderItem(it) {
  const sec = el('section', {class: 'item', id: 'item-' + it.item_id});
  const h = el('h2', {}, 'Item ' + it.number + ' of ' + DATA.items.length + ' ');
  h.appendChild(el('span', {class: 'id'}, '(' + it.item_id + ')'));
  sec.appendChild(h);
  for (const [title, key, cls] of [['Problem', 'problem', 'pre'], ['Wrong program', 'wrong_code', 'pre'],
                                   ['Execution feedback', 'feedback', 'pre'], ['Explanation to rate', 'explanation', 'div']]) {
    sec.appendChild(el('h3', {}, title));
    sec.appendChild(el(cls, cls === 'div' ? {class: 'explanation'} : {}, it[key]));
  }
  const scores = el('div', {class: 'scores'});
  const r = rating(it.item_id);
  for (const axis of DATA.axes) {
    const fs = el('fieldset', {});
    fs.appendChild(el('legend', {}, axis[0].toUpperCase() + axis.slice(1)));
    const choices = el('div', {class: 'choices'});
    for (const v of DATA.scores) {
      const id = axis + '-' + it.item_id + '-' + v;
      const input = el('input', {type: 'radio', name: axis + '-' + it.item_id, id: id, value: String(v)});
      if (String(r[axis]) === String(v)) input.checked = true;
      input.addEventListener('change', () => { rating(it.item_id)[axis] = String(v); persist(); refresh(); });
      const label = el('label', {for: id, title: DATA.rubric[axis].anchors[String(v)] || ''});
      label.appendChild(input); label.appendChild(document.createTextNode(String(v)));
      choices.appendChild(label);
    }
    fs.appendChild(choices);
    scores.appendChild(fs);
  }
  sec.appendChild(scores);
  const note = el('textarea', {id: 'comment-' + it.item_id, placeholder: 'Comment (optional)'});
  note.value = r.comment || '';
  note.addEventListener('input', () => { rating(it.item_id).comment = note.value; persist(); });
  sec.appendChild(note);
  return sec;
}
function csvField(v) { return '"' + String(v).replace(/"/g, '""') + '"'; }
function save() {
  const rater = document.getElementById('rater').value.trim();
  if (!rater) { alert('Enter your name first: it goes into every row.'); document.getElementById('rater').focus(); return; }
  const lines = [DATA.columns.map(csvField).join(',')];
  for (const it of DATA.items) {
    const r = state.ratings[it.item_id] || {};
    lines.push([it.item_id, rater, r.correctness || '', r.helpfulness || '', r.comment || ''].map(csvField).join(','));
  }
  const blob = new Blob([lines.join('\r\n') + '\r\n'], {type: 'text/csv;charset=utf-8'});
  const a = el('a', {href: URL.createObjectURL(blob),
                     download: 'ratings-' + DATA.sheet_id + '-' + rater.replace(/[^\w.-]+/g, '_') + '.csv'});
  document.body.appendChild(a); a.click(); a.remove();
  document.getElementById('status').textContent += ' - saved';
}
renderRubric();
const main = document.getElementById('items');
for (const it of DATA.items) main.appendChild(renderItem(it));
const raterInput = document.getElementById('rater');
raterInput.value = state.rater || '';
raterInput.addEventListener('input', () => { state.rater = raterInput.value; persist(); });
document.getElementById('save').addEventListener('click', save);
refresh();
"""


def render_html(sheet_id: str, items: list[dict], rubric: Rubric) -> str:
    data = {"sheet_id": sheet_id, "items": items, "axes": list(AXES), "scores": list(SCORES),
            "columns": ["item_id", "rater", "correctness", "helpfulness", "comment"],
            "rubric": {a: {"question": s["question"], "anchors": {str(k): v for k, v in s["anchors"].items()}}
                       for a, s in rubric.axes.items()}}
    # "</" would end the script element early; JSON allows "<\/" for it.
    blob = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>Rating sheet {html.escape(sheet_id)}</title><style>{_CSS}</style></head><body>\n"
            f"<header><h1>Rate bug explanations</h1><label>Your name <input id='rater' autocomplete='name'></label>"
            f"<button id='save' type='button'>Save ratings (CSV)</button><span id='status'></span></header>\n"
            f"<main><section class='rubric' id='rubric'></section><div id='items'></div></main>\n"
            f"<script type='application/json' id='sheet-data'>{blob}</script>\n<script>{_JS}</script>\n</body></html>\n")


# ------------------------------------------------------------------------------------------------ import

def _score(value: str, where: str, axis: str, errors: list[str]) -> int | None:
    value = value.strip()
    if value not in {str(s) for s in SCORES}:
        errors.append(f"{where}: column {axis}: {value!r} is not an integer 1..5")
        return None
    return int(value)


def read_sheets(paths: list[Path], key: dict) -> tuple[list[dict], dict]:
    """All ratings of the filled sheets: ``[{item_id, rater, correctness, helpfulness, comment, where}]`` and
    per-sheet counts. Every problem is collected; any problem raises one DataError that lists them."""
    known = {it["item_id"] for it in key["items"]}
    ratings, counts, errors = [], {}, []
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        if not path.is_file():
            errors.append(f"sheets: {path}: no such file")
            continue
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            unknown = [c for c in header if c not in REQUIRED_COLUMNS + CONTENT_COLUMNS]
            doubled = sorted({c for c in header if header.count(c) > 1})
            if missing or unknown or doubled:
                errors.append(f"{path}:1: the header needs columns {list(REQUIRED_COLUMNS)}"
                              + (f"; missing {missing}" if missing else "")
                              + (f"; unknown {unknown}" if unknown else "") + (f"; twice {doubled}" if doubled else ""))
                continue
            col = {c: header.index(c) for c in header}
            rated = unrated = 0
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if not any(cell.strip() for cell in row):
                    continue  # a blank line
                if len(row) != len(header):
                    errors.append(f"{where}: {len(row)} fields where the header has {len(header)}")
                    continue
                get = {c: row[i] for c, i in col.items()}
                item_id = get["item_id"].strip()
                if item_id not in known:
                    errors.append(f"{where}: column item_id: {item_id!r} is not an item of this key "
                                  f"(sheet {key['sheet_id']})")
                    continue
                filled = [a for a in AXES if get[a].strip()]
                if not filled:
                    unrated += 1
                    continue
                if len(filled) < len(AXES):
                    empty = next(a for a in AXES if a not in filled)
                    errors.append(f"{where}: column {empty}: empty, but {filled[0]} is filled; rate both or neither")
                    continue
                rater = get["rater"].strip()
                if not rater:
                    errors.append(f"{where}: column rater: empty; every rated row names its rater")
                    continue
                scores = {a: _score(get[a], where, a, errors) for a in AXES}
                if None in scores.values():
                    continue
                if (rater, item_id) in seen:
                    errors.append(f"{where}: rater {rater!r} rated item {item_id} already, at {seen[rater, item_id]}")
                    continue
                seen[rater, item_id] = where
                ratings.append({"item_id": item_id, "rater": rater, **scores,
                                "comment": get.get("comment", "").strip(), "where": where})
                rated += 1
            counts[str(path)] = {"rated": rated, "unrated": unrated}
    if errors:
        more = f"\n  ... and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
        raise DataError(f"{len(errors)} problem(s) in the rating sheets, nothing written:\n  "
                        + "\n  ".join(errors[:MAX_ERRORS]) + more)
    return ratings, counts


def load_key(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"key={path}: no such file; it is the key.json that command=export wrote")
    try:
        key = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"key={path}: not JSON ({exc})") from None
    if not isinstance(key, dict) or key.get("format") != KEY_FORMAT:
        raise DataError(f"key={path}: not a rating key of selfdebug.rate command=export (format {KEY_FORMAT})")
    return key


def _judge_scores(key: dict) -> tuple[dict[str, dict], list[str]]:
    """item_id -> the LLM judge's verdict, where the run has one for the same explanation; and notes."""
    notes, by_item = [], {}
    for index, run in enumerate(key["runs"]):
        path = Path(run["dir"]) / "samples.jsonl"
        if not path.is_file():
            notes.append(f"{path} is gone: no judge scores for run {run['label']}")
            continue
        rows = {(r["task_id"], r["round"], r["sample_index"]): r for r in _read_jsonl(path)}
        for it in key["items"]:
            if it["run"] != index:
                continue
            row = rows.get((it["task_id"], it["round"], it["sample_index"]))
            if row is None or _sha((row.get("explanation") or "").strip()) != it["explanation_sha256"]:
                notes.append(f"item {it['item_id']}: {path} no longer holds the rated explanation")
                continue
            if (row.get("judge") or {}).get("status") == "ok":
                by_item[it["item_id"]] = row["judge"]
    return by_item, notes


def _nan_to_none(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def agreement(ratings: list[dict], axis: str) -> dict:
    """Krippendorff's alpha (ordinal) over all raters, Cohen's kappa (quadratic) per pair, exact agreement."""
    import krippendorff
    import numpy as np
    from sklearn.metrics import cohen_kappa_score

    raters = sorted({r["rater"] for r in ratings})
    items = sorted({r["item_id"] for r in ratings})
    out: dict = {"raters": len(raters), "alpha_ordinal": None, "cohen_kappa_quadratic": {}, "exact_agreement": None}
    if len(raters) < 2:
        out["note"] = "agreement needs two raters or more"
        return out
    grid = {(r["rater"], r["item_id"]): r[axis] for r in ratings}
    data = np.array([[grid.get((rater, it), np.nan) for it in items] for rater in raters], dtype=float)
    shared = int((np.sum(~np.isnan(data), axis=0) >= 2).sum())
    out["items_rated_twice"] = shared
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined statistics (one value used by everyone) come back as None
        if shared:
            try:
                out["alpha_ordinal"] = _nan_to_none(krippendorff.alpha(
                    reliability_data=data, level_of_measurement="ordinal", value_domain=list(SCORES)))
            except (ValueError, ZeroDivisionError):
                out["alpha_ordinal"] = None
        same = total = 0
        for a, b in itertools.combinations(raters, 2):
            both = [it for it in items if (a, it) in grid and (b, it) in grid]
            xs, ys = [grid[a, it] for it in both], [grid[b, it] for it in both]
            same += sum(x == y for x, y in zip(xs, ys))
            total += len(both)
            kappa = (cohen_kappa_score(xs, ys, labels=list(SCORES), weights="quadratic") if len(both) >= 2 else None)
            out["cohen_kappa_quadratic"][f"{a} vs {b}"] = {"kappa": _nan_to_none(kappa), "items": len(both)}
    out["exact_agreement"] = same / total if total else None
    return out


def human_vs_judge(item_means: dict[str, dict], judge: dict[str, dict], axis: str) -> dict:
    from scipy.stats import spearmanr

    both = [it for it in item_means if it in judge]
    out = {"items": len(both), "spearman_rho": None, "p_value": None}
    if len(both) >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant column has no rank correlation: None
            res = spearmanr([item_means[it][axis] for it in both], [judge[it][axis] for it in both])
        out["spearman_rho"], out["p_value"] = _nan_to_none(res.statistic), _nan_to_none(res.pvalue)
    return out


def import_ratings(sheets: list[Path], key_path: Path, out: Path | None = None, n_resamples: int = 1000,
                   seed: int = 0) -> dict:
    key = load_key(key_path)
    ratings, counts = read_sheets(sheets, key)
    if not ratings:
        raise DataError(f"the sheets {', '.join(map(str, sheets))} hold no rated item")
    items = {it["item_id"]: it for it in key["items"]}
    runs = key["runs"]
    judge, notes = _judge_scores(key)
    by_item: dict[str, list[dict]] = defaultdict(list)
    for r in ratings:
        by_item[r["item_id"]].append(r)
    item_means = {it: {a: sum(r[a] for r in rs) / len(rs) for a in AXES} for it, rs in by_item.items()}

    models = []
    for label in sorted({runs[it["run"]]["label"] for it in key["items"]}):
        these = [r for r in ratings if runs[items[r["item_id"]]["run"]]["label"] == label]
        rated_items = sorted({r["item_id"] for r in these})
        judged = [judge[it] for it in rated_items if it in judge]
        entry = {"label": label, "runs": sorted({runs[it["run"]]["dir"] for it in key["items"]
                                                 if runs[it["run"]]["label"] == label}),
                 "items_rated": len(rated_items), "ratings": len(these)}
        for axis in AXES:
            entry[axis] = mean_ci([r[axis] for r in these], [r["item_id"] for r in these], n_resamples, seed=seed)
            entry[f"judge_{axis}"] = (sum(v[axis] for v in judged) / len(judged)) if judged else None
        entry["judge_items"] = len(judged)
        models.append(entry)

    summary = {
        "key": str(key_path), "sheet_id": key["sheet_id"], "rubric": key["rubric"],
        "sheets": counts, "raters": sorted({r["rater"] for r in ratings}),
        "items": len(items), "items_rated": len(by_item), "items_unrated": len(items) - len(by_item),
        "ratings": len(ratings), "models": models,
        "agreement": {axis: agreement(ratings, axis) for axis in AXES},
        "human_vs_judge": {axis: human_vs_judge(item_means, judge, axis) for axis in AXES},
        "notes": notes,
        "ratings_by_item": [
            {"item_id": it["item_id"], "number": it["number"], "label": runs[it["run"]]["label"],
             "run": runs[it["run"]]["dir"], "benchmark": runs[it["run"]]["benchmark"], "task_id": it["task_id"],
             "round": it["round"], "sample_index": it["sample_index"],
             "ratings": {r["rater"]: {a: r[a] for a in (*AXES, "comment")} for r in by_item.get(it["item_id"], [])},
             "judge": {a: judge[it["item_id"]][a] for a in AXES} if it["item_id"] in judge else None}
            for it in key["items"]],
    }
    out = out or key_path.parent
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "rating_summary.json", summary)
    _write_text_atomic(out / "rating_summary.md", summary_markdown(summary))
    return {"json": out / "rating_summary.json", "markdown": out / "rating_summary.md", "summary": summary}


def summary_markdown(s: dict) -> str:
    def ci(e: dict) -> str:
        return "-" if e["mean"] is None else f"{e['mean']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]"

    def num(v, fmt=".3f") -> str:
        return "-" if v is None else format(v, fmt)

    lines = ["# Human ratings of bug explanations", "",
             (f"Sheet {s['sheet_id']} (rubric {s['rubric']}): {s['ratings']} ratings by {len(s['raters'])} "
              f"rater(s) ({', '.join(s['raters'])}) of {s['items_rated']} of {s['items']} items."), "",
             "## Per model (mean of human scores 1-5 [95% bootstrap CI over items]; LLM judge on the same items)", "",
             "| model | items rated | ratings | correctness | helpfulness | judge correctness | judge helpfulness |",
             "|---|---|---|---|---|---|---|"]
    for m in s["models"]:
        lines.append(f"| {m['label']} | {m['items_rated']} | {m['ratings']} | {ci(m['correctness'])} | "
                     f"{ci(m['helpfulness'])} | {num(m['judge_correctness'], '.2f')} | "
                     f"{num(m['judge_helpfulness'], '.2f')} |")
    lines += ["", "## Agreement between raters", "",
              ("| axis | Krippendorff's alpha (ordinal) | Cohen's kappa (quadratic), per pair | exact agreement | "
               "items rated twice |"), "|---|---|---|---|---|"]
    for axis, a in s["agreement"].items():
        kappas = "; ".join(f"{pair}: {num(k['kappa'])} (n={k['items']})"
                           for pair, k in a["cohen_kappa_quadratic"].items()) or "-"
        lines.append(f"| {axis} | {num(a['alpha_ordinal'])} | {kappas} | {num(a['exact_agreement'], '.2%')} | "
                     f"{a.get('items_rated_twice', 0)} |")
    lines += ["", "## Human vs LLM judge (Spearman's rho of the item's mean human score and the judge's score)", "",
              "| axis | items | rho | p-value |", "|---|---|---|---|"]
    for axis, h in s["human_vs_judge"].items():
        lines.append(f"| {axis} | {h['items']} | {num(h['spearman_rho'])} | {num(h['p_value'], '.3g')} |")
    if s["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in s["notes"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ entry point

COMMANDS = {"export": ("runs", "n", "seed", "rubric"), "import": ("sheets",)}  # the keys only one command reads


def run(cfg: DictConfig) -> dict:
    command = cfg.get("command")
    if command not in COMMANDS:
        raise ConfigError(f"command={command!r}: expected command=export (write the rating sheets) or "
                          "command=import (read the filled sheets back)")
    other = "import" if command == "export" else "export"
    for key in COMMANDS[other]:
        if key in ("runs", "sheets") and options.text_list(cfg, key):
            raise ConfigError(f"{key}= is read by command={other}, not command={command}")
    if command == "export":
        runs = options.paths(cfg, "runs")
        if not runs:
            raise ConfigError("command=export: give at least one run dir, e.g. 'runs=[outputs/evaluate/.../base]'")
        out = Path(options.text(cfg, "out", "out=rating (where the sheet and the key go)"))
        info = export(runs, options.integer(cfg, "n", 1), options.integer(cfg, "seed", 0), out,
                      options.optional_path(cfg, "key"), options.optional_path(cfg, "rubric") or DEFAULT_RUBRIC)
        print(f"{info['items']} items (sheet {info['sheet_id']}): give raters {info['sheet_html']} or "
              f"{info['sheet_csv']}; keep {info['key']} to yourself")
        return info
    sheets = options.paths(cfg, "sheets")
    if not sheets:
        raise ConfigError("command=import: give at least one filled sheet, e.g. 'sheets=[ratings-alice.csv]'")
    key = Path(options.text(cfg, "key", "key=rating/key.json (the key that command=export wrote)"))
    info = import_ratings(sheets, key, options.optional_path(cfg, "out"))
    s = info["summary"]
    print(f"{s['ratings']} ratings by {len(s['raters'])} rater(s) of {s['items_rated']} items; "
          f"summary: {info['markdown']} and {info['json']}")
    return info


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="rate")
def main(cfg: DictConfig) -> None:
    options.run_command(run, cfg)


if __name__ == "__main__":
    main()

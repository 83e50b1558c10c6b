#!/usr/bin/env python3
"""Writes the LongBench scorer fixtures: hand-written prediction files and the scores that the
benchmark's scorer gives them.

Output (tests/data/longbench/):
  preds/<task>.jsonl  one file per English/code task, records {pred, answers, all_classes, length}
                      in the format LongBench's pred.py writes
  expected.json       per-record scores, per-task scores, LongBench-E bucket scores, the average of
                      the task scores, and the deepest ROUGE-L reconstruction that still succeeds

The scoring logic below is written from the benchmark's definitions (METHODS.md section 8): token
F1 after normalisation, classification with its remove-while-iterating quirk, retrieval and count
accuracy, best score over a record's answers, first line only for trec/triviaqa/samsum, x100 and
Python's round(.., 2); LongBench-E buckets average with numpy. The two places the definition says
"as the package computes" call the packages themselves: ROUGE-L from `rouge` 1.0.1 and the code
similarity from fuzzywuzzy's fuzz.ratio on its pure-Python (difflib) back end.

The scorer is called from module level, as LongBench's eval.py calls it, so that the Python stack
is as deep as there when ROUGE-L's recursive LCS reconstruction runs out of recursion depth (the
package raises, the scorer catches and scores 0; the depth at which that happens is recorded).

Run (packages only needed here):
  python3 -m venv /tmp/lbvenv && /tmp/lbvenv/bin/pip install rouge==1.0.1 fuzzywuzzy numpy
  /tmp/lbvenv/bin/python scripts/make_longbench_fixtures.py
"""
import json
import pathlib
import re
import string
import sys
from collections import Counter
from difflib import SequenceMatcher
from importlib.metadata import version

import numpy as np
from fuzzywuzzy import fuzz
from rouge import Rouge

try:  # the scores must come from difflib, not python-Levenshtein
    import Levenshtein  # noqa: F401
    raise SystemExit("python-Levenshtein is installed: fuzz.ratio would not use difflib; use a clean venv")
except ImportError:
    pass

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "longbench"


# ---- the metrics, from their definitions --------------------------------------------------------
def normalize_answer(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def qa_f1(prediction, truth, **_):
    pred_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(truth).split()
    common = Counter(pred_tokens) & Counter(truth_tokens)
    same = sum(common.values())
    if same == 0:
        return 0
    precision = 1.0 * same / len(pred_tokens)
    recall = 1.0 * same / len(truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def rouge_l(prediction, truth, **_):
    try:
        scores = Rouge().get_scores([prediction], [truth], avg=True)
    except Exception:  # noqa: BLE001 (the benchmark scores any failure 0, RecursionError included)
        return 0.0
    return scores["rouge-l"]["f"]


def classification(prediction, truth, all_classes, **_):
    matches = [c for c in all_classes if c in prediction]
    for term in matches:  # removing while iterating skips the element after a removed one
        if term in truth and term != truth:
            matches.remove(term)
    return 1.0 / len(matches) if truth in matches else 0.0


def retrieval(prediction, truth, **_):
    truth_id = re.findall(r"Paragraph (\d+)", truth)[0]
    numbers = re.findall(r"\d+", prediction)
    right = sum(1 for n in numbers if str(n) == str(truth_id))
    return float(0.0 if len(numbers) == 0 else right / len(numbers))


def count(prediction, truth, **_):
    numbers = re.findall(r"\d+", prediction)
    right = sum(1 for n in numbers if str(n) == str(truth))
    return float(0.0 if len(numbers) == 0 else right / len(numbers))


def code_sim(prediction, truth, **_):
    line = ""
    for candidate in prediction.lstrip("\n").split("\n"):
        if "`" not in candidate and "#" not in candidate and "//" not in candidate:
            line = candidate
            break
    return fuzz.ratio(line, truth) / 100


METRIC = {
    "narrativeqa": qa_f1, "qasper": qa_f1, "multifieldqa_en": qa_f1, "hotpotqa": qa_f1, "2wikimqa": qa_f1,
    "musique": qa_f1, "triviaqa": qa_f1, "gov_report": rouge_l, "qmsum": rouge_l, "multi_news": rouge_l,
    "samsum": rouge_l, "trec": classification, "passage_retrieval_en": retrieval, "passage_count": count,
    "lcc": code_sim, "repobench-p": code_sim,
}
FIRST_LINE = {"trec", "triviaqa", "samsum", "lsht"}


# eval.py's structure, frame for frame: the metric is called right from the scorer (the stack
# depth decides when ROUGE-L's recursion fails). `per_record` collects each record's score.
def scorer(task, predictions, answers, all_classes, per_record=None):
    total = 0.0
    for prediction, truths in zip(predictions, answers):
        score = 0.0
        if task in FIRST_LINE:
            prediction = prediction.lstrip("\n").split("\n")[0]
        for truth in truths:
            score = max(score, METRIC[task](prediction, truth, all_classes=all_classes))
        total += score
        if per_record is not None:
            per_record.append(score)
    return round(100 * total / len(predictions), 2)


def scorer_e(task, predictions, answers, lengths, all_classes):
    buckets = {"0-4k": [], "4-8k": [], "8k+": []}
    for prediction, truths, length in zip(predictions, answers, lengths):
        score = 0.0
        if task in FIRST_LINE:
            prediction = prediction.lstrip("\n").split("\n")[0]
        for truth in truths:
            score = max(score, METRIC[task](prediction, truth, all_classes=all_classes))
        buckets["0-4k" if length < 4000 else "4-8k" if length < 8000 else "8k+"].append(score)
    out = {}
    for key, values in buckets.items():
        out[key] = None if not values else round(100 * np.mean(values), 2)
    return out


# ---- the hand-written predictions ---------------------------------------------------------------
def rec(pred, answers, length=1000, classes=None):
    return {"pred": pred, "answers": answers, "all_classes": classes, "length": length}


QA = [
    rec("The Eiffel Tower", ["Eiffel Tower"], 1200),
    rec("It was a dog, the cat and an owl.", ["a cat", "the owl"], 5000),
    rec("", ["yes"], 9000),                                              # empty prediction
    rec("Émile Zola's «J'accuse»", ["émile zola"], 3999),               # non-ASCII case, « » kept
    rec("ΟΔΟΣ ΣΟΦΙΑΣ", ["οδος σοφιασ"], 4000),                         # final sigma when lowering
    rec("Theatre of the absurd; an apple a day", ["theatre absurd apple day"], 7999),  # articles
    rec("New\u00a0York\u2003City", ["new york city"], 8000),            # Unicode spaces split
    rec("café a la carte", ["Café la carte"], 100),                      # \b around non-ASCII letters
    rec("İstanbul", ["istanbul"], 200),                                  # U+0130 lowers to two code points
    rec("1,000,000 dollars.", ["1000000"], 300),                         # punctuation inside numbers
    rec("Barack Obama", ["Obama", "President Barack Obama", "Michelle"], 400),  # best over answers
    rec("the the cat cat cat", ["cat cat dog"], 500),                    # multiset overlap
    rec("snake_case a_b", ["snakecase ab"], 600),                        # '_' is punctuation
    rec("an's the's theatre", ["ans thes theatre"], 700),                # quote removed before articles
    rec("a an the", ["the"], 800),                                       # nothing left
]
TRIVIAQA_EXTRA = [
    rec("\n\nParis\nLondon", ["Paris"], 1000),         # leading newlines stripped, first line kept
    rec(" \nParis", ["Paris"], 2000),                 # only newlines are stripped: first line is " "
    rec("Rome\r\nVenice", ["Rome"], 3000),            # '\r' stays on the first line (whitespace later)
    rec("Paris is the capital.\nParis", ["Paris"], 6000),
]

LONG = 990  # around the recursion limit of the ROUGE-L reconstruction (measured below)


def long_sentence(words):
    return " ".join(f"w{i}" for i in range(words))


SUMMARY = [
    rec("The cat sat on the mat. It was happy. The dog barked",
        ["The cat was on the mat. The dog was happy."], 1500),
    rec("", ["A reference summary."], 2500),                                # empty: rouge raises -> 0
    rec("...", ["A reference summary."], 3500),                             # no sentence left -> 0
    rec("Hello world. . Bye", ["Hello there. . Bye now"], 4500),            # whitespace-only sentences
    rec("the the the the", ["the cat"], 5500),                              # words counted as sets
    rec("Crème brûlée is tasty. Très bien", ["crème brûlée is tasty. Très bien!"], 6500),  # no lowercasing
    rec("c b a", ["a b c. c"], 7500),                                       # which LCS is reconstructed
    rec("First, the budget rose 3.5 percent. Then it fell.",
        ["The budget rose 3.5 percent in 2020. It fell later."], 8500),     # '.' inside numbers splits
]
SAMSUM_EXTRA = [
    rec("\nAnna will call Tom tomorrow.\nTom agrees.", ["Anna will call Tom tomorrow about the party."], 1000),
    rec("Tom and Anna meet at 5\nDialogue: more", ["Tom and Anna meet at 5 pm."], 9000),
]

TREC_CLASSES = ["Other", "location", "Other location", "City", "Country", "Number of something", "Other number",
                "Date", "Individual"]
TREC = [
    rec("Other location", ["Other location"], 1000, TREC_CLASSES),         # skip-after-remove: 1/2
    rec("City", ["City"], 2000, TREC_CLASSES),
    rec("Date or Individual", ["Date"], 3000, TREC_CLASSES),
    rec("nothing", ["City"], 4000, TREC_CLASSES),
    rec("Other number", ["Number of something"], 5000, TREC_CLASSES),
    rec("\nCity\nCountry", ["City"], 6000, TREC_CLASSES),                  # first line only
    rec("Other number", ["Other number"], 7000, TREC_CLASSES),
    rec("Other location City", ["City"], 8000, TREC_CLASSES),
]

RETRIEVAL = [
    rec("Paragraph 3", ["Paragraph 3"], 1000),
    rec("Paragraph 3, not Paragraph 13", ["Paragraph 3"], 2000),
    rec("I think it is paragraph three", ["Paragraph 3"], 3000),
    rec("Paragraph 3 or \u0663", ["Paragraph 3"], 4000),      # Arabic-Indic digit is a \d number too
    rec("Paragraph 03", ["Paragraph 3"], 5000),
    rec("12 12 5", ["Paragraph 12"], 9000),
    rec("The answer is: Paragraph 27", ["Paragraph 27"], 10000),
]

# 25 records whose mean is exactly 2.125 after x100: Python's round gives 2.12 (ties to even).
COUNT = [rec("5 or 6", ["5"], 1000), rec(" ".join(str(i) for i in range(1, 33)), ["7"], 2000)]
COUNT += [rec(p, [a], length) for p, a, length in [
    ("There are none", "4", 3000), ("3", "4", 4100), ("I count 9 unique paragraphs", "8", 4200),
    ("10", "11", 4300), ("2 2", "3", 4400), ("", "5", 4500), ("The final answer is: 14", "15", 4600),
    ("6", "7", 4700), ("1", "2", 4800), ("20", "21", 4900), ("7", "6", 5000), ("8", "9", 5100),
    ("0", "1", 5200), ("13", "12", 5300), ("x", "3", 5400), ("4", "5", 5500), ("30", "31", 5600),
    ("17", "18", 9000), ("19", "16", 9100), ("22", "23", 9200), ("24", "25", 9300), ("26", "27", 9400),
    ("28", "29", 9500)]]
assert len(COUNT) == 25

LONG_LINE_A = "result = compute(" + ", ".join(f"arg_{i} + {i}" for i in range(24)) + ")"
LONG_LINE_B = "result = compute(" + ", ".join(f"arg_{i} - {i * 2}" for i in range(24)) + ")"
CODE = [
    rec("    return x + 1\n", ["    return x + 1"], 1000),
    rec("# comment\n// c\nfoo(bar)\n", ["foo(baz)"], 2000),
    rec("```python\nx = 1\n```", ["x = 2"], 3000),
    rec("", ["x = 1"], 4000),                                   # empty prediction -> 0
    rec("# a\n# b", [""], 5000),                                # nothing valid, empty answer: equal -> 1
    rec("abcdefgh", ["ijklmnoa"], 6000),                        # 100 * 2/16 = 12.5 -> 12 (ties to even)
    rec("abcdefgh", ["abcijklm"], 7000),                        # 37.5 -> 38
    rec(LONG_LINE_A, [LONG_LINE_B], 8000),                      # 200+ characters: difflib autojunk
    rec("print('héllo wörld')", ["print('hello world')"], 9000),  # code points, not bytes
    rec("\n\n    x = foo()", ["    x = foo(1)"], 1000),
    rec("a = b // 2\nc = 3", ["a = b // 2"], 1000),              # '//' lines are skipped
]


def task_records():
    t = {}
    t["narrativeqa"] = QA[:5]
    t["qasper"] = QA[5:10]
    t["multifieldqa_en"] = QA[10:]
    t["hotpotqa"] = QA[::2]
    t["2wikimqa"] = QA[1::2]
    t["musique"] = QA[3:12]
    t["triviaqa"] = QA[:6] + TRIVIAQA_EXTRA
    t["gov_report"] = SUMMARY
    t["qmsum"] = SUMMARY[::-1]
    t["multi_news"] = SUMMARY[:4] + [
        rec(long_sentence(LONG - 1), ["w0"], 2000),  # placeholders: lengths fixed after measuring
        rec(long_sentence(LONG), ["w0"], 6000),
    ]
    t["samsum"] = SUMMARY[3:] + SAMSUM_EXTRA
    t["trec"] = TREC
    t["passage_retrieval_en"] = RETRIEVAL
    t["passage_count"] = COUNT
    t["lcc"] = CODE[:6] + CODE[7:]
    t["repobench-p"] = CODE[::-1]
    return t


# ---- module level, as eval.py: measure the recursion limit, then score ---------------------------
# The deepest reconstruction that works: reference 'w0' against one hypothesis sentence of n
# distinct words walks n + 1 nested calls and scores > 0 exactly when it does not run out of stack.
max_ok = None
for n in range(800, 1200):
    if scorer("multi_news", [long_sentence(n)], [["w0"]], None) > 0:
        max_ok = n
    else:
        break
assert max_ok is not None and max_ok < 1199, "recursion limit not found"
max_recon_calls = max_ok + 1

tasks = task_records()
tasks["multi_news"][4] = rec(long_sentence(max_ok), ["w0"], 2000)       # deepest that succeeds
tasks["multi_news"][5] = rec(long_sentence(max_ok + 1), ["w0"], 6000)   # one deeper: raises -> 0

assert fuzz.ratio("abcdefgh", "ijklmnoa") == 12 and fuzz.ratio("abcdefgh", "abcijklm") == 38
assert SequenceMatcher(None, LONG_LINE_A, LONG_LINE_B).ratio() != \
    SequenceMatcher(None, LONG_LINE_A, LONG_LINE_B, autojunk=False).ratio(), "autojunk case shows no difference"
assert len(LONG_LINE_B) >= 200

(OUT / "preds").mkdir(parents=True, exist_ok=True)
for old in (OUT / "preds").glob("*.jsonl"):
    old.unlink()
expected = {
    "generator": "scripts/make_longbench_fixtures.py",
    "python": sys.version.split()[0],
    "packages": {p: version(p) for p in ("rouge", "fuzzywuzzy", "numpy")},
    "rouge_max_recon_calls": max_recon_calls,
    "records": {}, "scores": {}, "scores_e": {},
}
for task, records in sorted(tasks.items()):
    with open(OUT / "preds" / f"{task}.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    preds = [r["pred"] for r in records]
    answers = [r["answers"] for r in records]
    lengths = [r["length"] for r in records]
    classes = records[-1]["all_classes"]  # as eval.py: the last record's list serves the task
    per_record = []
    expected["scores"][task] = scorer(task, preds, answers, classes, per_record)
    expected["records"][task] = per_record
    expected["scores_e"][task] = scorer_e(task, preds, answers, lengths, classes)

# Numbers: np.mean sums pairwise (not left to right) and rounds a numpy float as rint(x * 100) / 100,
# while Python's round is correctly rounded; keep cases where each differs from the naive way.
rng = np.random.default_rng(7)
mean_cases, round_cases = [], []
while len(mean_cases) < 6:
    values = [float(v) for v in rng.random(int(rng.integers(9, 300)))]
    naive = 0.0
    for v in values:
        naive += v
    if float(np.mean(values)) != naive / len(values):
        mean_cases.append({"values": values, "mean": float(np.mean(values))})
for x in (2.125, 53.125, 0.375, 2.675, 1.005):
    round_cases.append({"x": x, "python": round(x, 2), "numpy": float(round(np.float64(x), 2))})
while sum(c["python"] != c["numpy"] for c in round_cases) < 4:
    x = float(rng.integers(0, 10000)) / 100 + 0.005
    if round(x, 2) != float(round(np.float64(x), 2)):
        round_cases.append({"x": x, "python": round(x, 2), "numpy": float(round(np.float64(x), 2))})
expected["numpy_mean_cases"] = mean_cases
expected["round_cases"] = round_cases
expected["average"] = round(sum(expected["scores"].values()) / len(expected["scores"]), 2)
assert expected["scores"]["passage_count"] == 2.12, expected["scores"]["passage_count"]
with open(OUT / "expected.json", "w", encoding="utf-8") as f:
    json.dump(expected, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"wrote {len(tasks)} prediction files and expected.json to {OUT}")
print(f"deepest ROUGE-L reconstruction: {max_recon_calls} calls")
for task, score in sorted(expected["scores"].items()):
    print(f"  {task:22s} {score:6.2f}  E {expected['scores_e'][task]}")
print(f"  average {expected['average']}")

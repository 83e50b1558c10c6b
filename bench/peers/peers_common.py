"""Shared pieces of the peer benchmarks: kvlab's perplexity windows, the metrics kvlab reports, and
result files that carry their full configuration.

The windows follow `kvlab eval ppl --ctx C --bos none` (README, "Perplexity protocol"): the whole
file is tokenized once without special tokens, cut into non-overlapping windows of C tokens (a final
partial window is dropped), each window is a fresh sequence and every token but its first is
predicted. The metrics follow framework/src/eval/quantized_perplexity.cpp: ppl = exp(mean NLL),
KL(reference || quantized) per predicted token (computed in float64, clamped at 0), its mean and its
nearest-rank 99th percentile, and top-1 agreement of the argmax.
"""
import json
import math
import os
import platform
import subprocess
import sys
import time
from importlib import metadata

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("KVLAB_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
MODEL_DIR = os.path.join(SHARED, "data", "models", "smollm2-135m-instruct")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = os.path.join(SHARED, "data", "wikitext-2-raw", "wiki.test.raw")
RESULTS = os.path.join(HERE, "results")


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def check_inputs():
    for path in (os.path.join(MODEL_DIR, GGUF_NAME), TEXT):
        if not os.path.exists(path):
            fail(f"missing input '{path}' (set KVLAB_SHARED to the folder holding data/)")


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF_NAME)


def text_token_ids(tokenizer):
    """The whole file as one token sequence, no special tokens (kvlab --bos none)."""
    with open(TEXT, "rb") as f:
        text = f.read().decode("utf-8")
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def windows(ids, ctx, max_windows):
    """kvlab's perplexity_windows() without BOS: non-overlapping, final partial window dropped."""
    count = len(ids) // ctx
    if max_windows > 0:
        count = min(count, max_windows)
    if count == 0:
        fail(f"text has {len(ids)} tokens, fewer than one window of {ctx}")
    return [ids[w * ctx:(w + 1) * ctx] for w in range(count)]


def log_softmax64(logits):
    """Row-wise log-softmax of a [T, V] array in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class Metrics:
    """Accumulates NLL, KL(ref || q) and top-1 agreement over predicted tokens (logits at positions
    0..L-2 predict tokens 1..L-1)."""

    def __init__(self):
        self.nll = 0.0
        self.predicted = 0
        self.windows = 0
        self.kl = []
        self.agree = 0
        self.has_ref = False

    def add(self, logits, targets, ref_logits=None, chunk=256):
        t = np.asarray(targets)
        self.windows += 1
        self.predicted += len(t)
        if ref_logits is not None:
            self.has_ref = True
        for a in range(0, len(t), chunk):  # rows in chunks: a [2047, 49152] float64 copy is 800 MB
            b = min(a + chunk, len(t))
            lp = log_softmax64(logits[a:b])
            self.nll += float(-lp[np.arange(b - a), t[a:b]].sum())
            if ref_logits is not None:
                lr = log_softmax64(ref_logits[a:b])
                kl = np.maximum((np.exp(lr) * (lr - lp)).sum(axis=-1), 0.0)
                self.kl.append(kl.astype(np.float32))
                self.agree += int((lr.argmax(-1) == lp.argmax(-1)).sum())

    def ppl(self):
        return math.exp(self.nll / self.predicted) if self.predicted else float("nan")

    def summary(self):
        out = {"ppl": self.ppl(), "mean_nll": self.nll / max(self.predicted, 1),
               "predicted_tokens": self.predicted, "windows": self.windows}
        if self.has_ref:
            kl = np.sort(np.concatenate(self.kl).astype(np.float64))
            n = len(kl)
            out["kl_mean"] = float(kl.sum() / n)
            out["kl_p99"] = float(kl[min(n - 1, math.ceil(0.99 * n) - 1)])
            out["top1_agreement"] = self.agree / n
        return out


def package_versions(names):
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def machine_info():
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "loadavg_at_end": list(os.getloadavg())}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["kvlab_commit"] = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def write_result(name, payload):
    os.makedirs(RESULTS, exist_ok=True)
    payload = dict(payload)
    payload["machine"] = machine_info()
    payload["command"] = " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    payload["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = os.path.join(RESULTS, name + ".json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, REPO)}", flush=True)
    return path


class Progress:
    """One line per step with rate and ETA (stderr)."""

    def __init__(self, label, total, unit="windows"):
        self.label, self.total, self.unit = label, total, unit
        self.start = time.time()
        self.done = 0

    def advance(self, n=1, note=""):
        self.done += n
        el = time.time() - self.start
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        print(f"[{self.label}] {self.done}/{self.total} {self.unit}  {rate:.3g}/s  "
              f"elapsed {el:.0f}s  eta {eta:.0f}s  {note}", file=sys.stderr, flush=True)

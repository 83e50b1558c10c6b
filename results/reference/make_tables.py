#!/usr/bin/python3
"""The tables of results/reference/README.md, from the CSV exports beside this script (never from a
run): tables.md (quality, KVmix ablations, window and group, long context) and kvlab_peer_rows.csv,
kvlab's rows in the column layout of bench/peers/make_table.py for the side-by-side table.

    /usr/bin/python3 results/reference/make_tables.py           (regenerate.sh runs it)
    /usr/bin/python3 results/reference/make_tables.py --splice  (then: the tables into README.md)
"""
import csv
import json
import math
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name):
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        sys.stderr.write(f"note: {path} is absent; its table is left out\n")
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["config"] = json.loads(r["config_json"])
        r["params"] = r["config"]["method"].get("params", {})
        r["calib"] = (r["config"]["method"].get("calibration") or {}).get("params", {})
        r["task_params"] = r["config"]["task"].get("params", {})
    return rows


def num(r, key):
    v = r.get(key)
    return float(v) if v not in (None, "") else None


def rotation(p):
    return " + rotation" if p.get("rotate", "none") != "none" else ""


def label(r):
    """A short, exact name for a cell's method configuration."""
    m, p, c = r["method"], r["params"], r["calib"]
    if m == "fp16":
        return "full precision (K/V in the model dtype, fp32)"
    if m == "uniform":
        k_axis, v_axis = p.get("k_axis", "per-token"), p.get("v_axis", "per-token")
        axes = f"K {k_axis}" + (f", V {v_axis}" if v_axis != "per-token" else "")
        return f"uniform-{p['bits']} G{p['group']} ({axes}){rotation(p)}"
    if m == "kivi":
        return f"KIVI-{p['bits']} G{p['group']} R{p['residual']}{rotation(p)}"
    if m == "kvmix":
        ratio = "" if p.get("ratio_preset", "paper") != "none" else ", no dynamic ratio"
        src = p.get("bits_from", "file")
        if src == "file":  # the profile's own tier assignment
            return f"KVmix default tiers (K2.2/V2.4 nominal){ratio}{rotation(p)}"
        budget = f"K{p['k_avg_bits']:g}/V{p['v_avg_bits']:g}"
        if src == "scores":
            return f"KVmix {budget} (gradient ranking){ratio}{rotation(p)}"
        if src == "reversed":
            return f"KVmix {budget} (reversed ranking){ratio}"
        return f"KVmix {budget} (random ranking, seed {p.get('seed', r['seed'])}){ratio}"
    if m == "kvtuner":
        return f"KVTuner target {c.get('target_bits')} ({len(str(c.get('pairs', '')).split(','))} pairs)"
    if m == "mixkvq":
        return f"MixKVQ K{c.get('k_bits')}/V{c.get('v_bits')}"
    return r["slug"]


def nominal(r):
    """The width a method was asked for (the bits it holds are in bits_k / bits_v)."""
    m, p, c = r["method"], r["params"], r["calib"]
    if m == "fp16":
        return 16.0
    if m in ("uniform", "kivi"):
        return float(p["bits"])
    if m == "kvmix":
        return 2.3 if p.get("bits_from", "file") == "file" else (p["k_avg_bits"] + p["v_avg_bits"]) / 2
    if m == "kvtuner":
        return float(c.get("target_bits"))
    if m == "mixkvq":
        return (c.get("k_bits") + c.get("v_bits")) / 2
    return math.nan


def f(v, digits=4):
    if v is None:
        return ""
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.{digits}f}"


def natural(text):
    """Sort key ordering embedded numbers by value: 'R32' before 'R128'."""
    return [(0, float(t), "") if t.replace(".", "", 1).isdigit() else (1, 0, t) for t in re.split(r"(\d+(?:\.\d+)?)", text)]


METHOD_ORDER = {"fp16": 0, "uniform": 1, "kivi": 2, "kvmix": 3, "kvtuner": 4, "mixkvq": 5}


def ppl_table(rows, title, note, key=None):
    if not rows:
        return []
    key = key or (lambda r: (nominal(r) if r["method"] != "fp16" else -1, METHOD_ORDER.get(r["method"], 9),
                             natural(label(r))))
    rows = sorted(rows, key=key)
    out = [f"### {title}", "", note, "",
           "| method | nominal bits | K / V bits held | memory vs 16-bit | ppl | KL mean | KL p99 | top-1 |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nb = nominal(r)
        out.append(f"| {label(r)} | {'' if r['method'] == 'fp16' else f'{nb:g}'} | "
                   f"{num(r, 'bits_k'):.2f} / {num(r, 'bits_v'):.2f} | {num(r, 'memory_ratio'):.3f} | "
                   f"{f(num(r, 'ppl'))} | {f(num(r, 'kl_mean'))} | {f(num(r, 'kl_p99'))} | {f(num(r, 'top1_agreement'))} |")
    fp = [num(r, "ppl_fp16") for r in rows if num(r, "ppl_fp16") is not None]
    if fp:
        out += ["", f"Full-precision perplexity on these windows: {fp[0]:.4f} ({rows[0]['task_params'].get('max_windows')} "
                f"windows of {rows[0]['task_params'].get('ctx')} tokens)."]
    return out + [""]


def long_context(rows):
    if not rows:
        return []
    out = []
    lb = [r for r in rows if r["task"] == "longbench"]
    if lb:
        metrics = sorted({k for r in lb for k in r if k.startswith("longbench/") and r[k] not in ("", None)},
                         key=lambda k: (k == "longbench/avg", k))
        lb.sort(key=lambda r: (METHOD_ORDER.get(r["method"], 9), nominal(r)))
        out += ["### LongBench (first record of each English and code task, ChatML, 7500 tokens)", "",
                "| task | " + " | ".join(f"{label(r)} ({(num(r, 'bits_k') + num(r, 'bits_v')) / 2:.2f} b)" for r in lb) + " |",
                "|---|" + "---|" * len(lb)]
        for m in metrics:
            name = m.split("/", 1)[1]
            cells = [f(num(r, m), 2) for r in lb]
            out.append(f"| {'**average**' if name == 'avg' else name} | " + " | ".join(cells) + " |")
        out.append("")
    for task in ("passkey", "needle"):
        t = [r for r in rows if r["task"] == task]
        if not t:
            continue
        methods = sorted({label(r) for r in t}, key=lambda l: (not l.startswith("full"), l))
        lengths = sorted({r["task_params"]["context_length"] for r in t})
        depths = sorted({r["task_params"]["depth"] for r in t})
        out += [f"### {task} accuracy (rows: context length; columns: depth {', '.join(f'{d:g}' for d in depths)})", "",
                "| method | " + " | ".join(str(n) for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
        for m in methods:
            cells = []
            for n in lengths:
                vals = []
                for d in depths:
                    hit = [num(r, f"{task}/acc") for r in t if label(r) == m and r["task_params"]["context_length"] == n
                           and r["task_params"]["depth"] == d]
                    vals.append(f"{hit[0]:.2f}" if hit else "-")
                cells.append(" / ".join(vals))
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    return out


KVLAB_PROTOCOL = {
    "prefill_attends_to": "what the streaming cache holds after each token's append (one masked pass per window, "
                          "equal to token-by-token decoding): uniform per-token quantizes at append, so a token reads "
                          "its own K/V quantized; KIVI/KVmix keep the newest tokens, itself included, exact",
    "quantized_when": "by the method's flush rule (uniform per-token: at append; KIVI: keys per-channel every R "
                      "tokens, values once older than R; KVmix: by its full-precision ratio), once",
    "requantizes": "no",
    "queries": "fp32, not quantized",
}


def peer_rows(window1, decode):
    speed = {label(r): num(r, "steady_decode_tok_s") for r in decode}
    rows = []
    for r in window1:
        lab = label(r)
        rows.append({"method": "kvlab " + lab, "tool": "kvlab", "bits_k": num(r, "bits_k"), "bits_v": num(r, "bits_v"),
                     "ppl": num(r, "ppl"), "ppl_reference": num(r, "ppl_fp16"),
                     "reference": "kvlab fp32 cache, same run (equals HF fp32 to 2e-5 in ppl)",
                     "kl_mean": num(r, "kl_mean"), "kl_p99": num(r, "kl_p99"),
                     "top1_agreement": num(r, "top1_agreement"), "decode_tok_s_4k": speed.get(lab),
                     "windows": r["task_params"].get("max_windows"), "predicted_tokens": 2047,
                     "threads": 2 if lab in speed else "", "source": "results/reference/peers_window1.csv",
                     **KVLAB_PROTOCOL})
    return rows


def splice():
    """Puts tables.md and side_by_side.md into README.md between its markers (the prose stays)."""
    path = os.path.join(HERE, "README.md")
    with open(path) as f:
        text = f.read()
    for name in ("tables", "side_by_side"):
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        src = os.path.join(HERE, name + ".md")
        if start not in text or end not in text or not os.path.exists(src):
            sys.stderr.write(f"note: README.md has no {start} ... {end} or {src} is absent; not spliced\n")
            continue
        with open(src) as f:
            body = f.read().strip()
        if name == "side_by_side":  # its own title line is the README's section heading
            body = body.split("\n", 1)[1].strip()
        text = text[:text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end):]
    with open(path, "w") as f:
        f.write(text)
    print(f"spliced the tables into {path}")


def main():
    if sys.argv[1:] == ["--splice"]:
        return splice()
    quality = load("quality.csv")
    ablations = load("kvmix_ablations.csv")
    window_group = load("window_group.csv")
    long_ctx = load("long_context.csv")
    window1 = load("peers_window1.csv")
    decode = load("decode_4k.csv")

    md = ["<!-- generated by make_tables.py from the CSV exports; do not edit -->", ""]
    md += ppl_table(quality, "Quality at matched bits (quality.csv)",
                    "Every method against the full-precision cache of the same run, WikiText-2 raw test, ctx 2048.")
    md += ppl_table(ablations, "KVmix ablations (kvmix_ablations.csv)",
                    "Ranking (gradient profile vs reversed vs random), the dynamic full-precision ratio, the bit budget.")
    md += ppl_table(window_group, "Window and group (window_group.csv)",
                    "KIVI-2 residual window R and group G; uniform-2 with K and V per-channel over G tokens.")
    md += long_context(long_ctx)
    if decode:
        md += ["### Decode at 4K depth (decode_4k.csv)", "",
               "| method | K / V bits held | steady decode tok/s | decode tok/s (all steps) | cache MiB |",
               "|---|---|---|---|---|"]
        for r in sorted(decode, key=lambda r: (METHOD_ORDER.get(r["method"], 9), label(r))):
            md.append(f"| {label(r)} | {num(r, 'bits_k'):.2f} / {num(r, 'bits_v'):.2f} | "
                      f"{f(num(r, 'steady_decode_tok_s'), 2)} | {f(num(r, 'decode_tok_s'), 2)} | "
                      f"{num(r, 'cache_bytes') / 2**20:.2f} |")
        md.append("")
    with open(os.path.join(HERE, "tables.md"), "w") as out:
        out.write("\n".join(md))
    print(f"wrote {os.path.join(HERE, 'tables.md')}")

    rows = peer_rows(window1, decode)
    stale = os.path.join(HERE, "kvlab_peer_rows.csv")
    if not rows and os.path.exists(stale):
        os.remove(stale)
    if rows:
        cols = ["method", "tool", "bits_k", "bits_v", "ppl", "ppl_reference", "reference", "kl_mean", "kl_p99",
                "top1_agreement", "kl_mean_vs_hf_fp32", "decode_tok_s_4k", "windows", "predicted_tokens", "threads",
                "prefill_attends_to", "quantized_when", "requantizes", "queries", "source"]
        with open(os.path.join(HERE, "kvlab_peer_rows.csv"), "w", newline="") as out:
            w = csv.DictWriter(out, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
        print(f"wrote {os.path.join(HERE, 'kvlab_peer_rows.csv')} ({len(rows)} rows)")


if __name__ == "__main__":
    main()

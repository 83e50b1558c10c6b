"""Combine the per-run JSON files in results/ into results/peers_table.csv and results/peers_table.md.

One row per run. The CSV's columns are fixed (COLUMNS) so that other tools' rows (kvlab's) can be
appended with the same header; the Markdown is regenerated from the CSV rows, extra rows included:
`make_table.py --extra kvlab_rows.csv` adds rows from any CSV with (a subset of) these columns.
"""
import argparse
import csv
import glob
import json
import os

import peers_common as pc

COLUMNS = ["method", "tool", "bits_k", "bits_v", "ppl", "ppl_reference", "reference", "kl_mean", "kl_p99",
           "top1_agreement", "kl_mean_vs_hf_fp32", "decode_tok_s_4k", "windows", "predicted_tokens", "threads",
           "prefill_attends_to", "quantized_when", "requantizes", "queries", "source"]

HF_PROTOCOL = {
    "prefill_attends_to": "no prefill (token by token): each step reads the dequantized history, the fp32 residual (< R tokens) and itself",
    "quantized_when": "history quantized when the residual reaches R tokens",
    "requantizes": "yes: every flush dequantizes the whole history and quantizes it again with the residual",
    "queries": "fp32, not quantized",
}
LLAMA_PROTOCOL = {
    "prefill_attends_to": "the quantized cache (K/V written, then read back, incl. the token itself)",
    "quantized_when": "at write, every token, no full-precision window",
    "requantizes": "no",
    "queries": "converted to K's dot type: f16 for f16 K, q8_0 for q8_0/q4_0 K, q8_1 for q4_1 K",
}


def speed_at(speeds, depth):
    if not speeds:
        return None
    for s in speeds:
        if s["depth_requested"] == depth:
            return s["decode_tok_s_median"]
    return None


def rows_from_json(path):
    with open(path) as f:
        r = json.load(f)
    src = os.path.relpath(path, pc.HERE)
    cfg = r.get("config", {})
    row = {"tool": r["tool"], "method": r["method"], "source": src, "threads": cfg.get("threads"),
           "windows": cfg.get("windows")}
    if r["tool"] == "llama.cpp":
        m = r.get("metrics_vs_llamacpp_f16") or {}
        hf = r.get("metrics_vs_hf_fp32") or {}
        row.update(LLAMA_PROTOCOL)
        row.update(bits_k=r.get("bits_k"), bits_v=r.get("bits_v"), ppl=m.get("ppl"),
                   reference="llama.cpp f16 cache (same GGUF, Q4_1 weights)",
                   kl_mean=m.get("kl_mean"), kl_p99=m.get("kl_p99"), top1_agreement=m.get("top1_agreement"),
                   kl_mean_vs_hf_fp32=hf.get("kl_mean"), predicted_tokens=m.get("predicted_tokens"),
                   decode_tok_s_4k=speed_at(r.get("decode_speed"), 4096))
        rot = (r.get("kv_cache_log") or {}).get("attn_rot_k")
        if cfg.get("cache_type_k") != "f16" and cfg.get("hadamard_rotation_requested"):
            row["method"] += " [Hadamard rotation on]" if rot == 1 else " [no rotation]"
        row["queries"] = {"f16": "f16 (FA converts Q to K's type)", "q8_0": "quantized to q8_0",
                          "q4_0": "quantized to q8_0", "q4_1": "quantized to q8_1"}.get(cfg.get("cache_type_k"))
        ref = r.get("hf_fp32_reference")
        return [row], (ref, cfg.get("windows"))
    if r["tool"] == "transformers":
        m = r.get("metrics") or {}
        row.update(bits_k=r.get("bits_k"), bits_v=r.get("bits_v"), ppl=m.get("ppl"),
                   ppl_reference=(r.get("fp32_reference") or {}).get("ppl"),
                   kl_mean=m.get("kl_mean"), kl_p99=m.get("kl_p99"), top1_agreement=m.get("top1_agreement"),
                   kl_mean_vs_hf_fp32=m.get("kl_mean"), predicted_tokens=m.get("predicted_tokens"),
                   decode_tok_s_4k=(r.get("decode_speed") or {}).get("decode_tok_s"))
        if r.get("cache") == "dynamic":
            row["method"] += f" [{cfg.get('windows')} window(s)]"
            row.update(reference="(is the reference)", prefill_attends_to="fp32 (no cache quantization)",
                       quantized_when="never", requantizes="no", queries="fp32")
        else:
            row.update(HF_PROTOCOL, reference="HF fp32, one pass per window")
        return [row], None
    return [], None


def fmt(v):
    if v is None or v == "":
        return ""
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return v
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.4f}" if abs(v) >= 1e-3 else f"{v:.3e}"
    return str(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extra", action="append", default=[], help="CSV with more rows (same columns)")
    ap.add_argument("--out", default=os.path.join(pc.RESULTS, "peers_table"))
    args = ap.parse_args()

    rows, refs = [], []
    for path in sorted(glob.glob(os.path.join(pc.RESULTS, "*.json"))):
        got, ref = rows_from_json(path)
        rows += got
        if ref and ref[0]:
            refs.append(ref)
    for path in args.extra:
        with open(path) as f:
            rows += [dict(r) for r in csv.DictReader(f)]
    llama_f16 = next((r for r in rows if r["tool"] == "llama.cpp" and r["method"] == "llama.cpp f16"), None)
    for r in rows:
        if r["tool"] == "llama.cpp" and llama_f16:
            r["ppl_reference"] = llama_f16["ppl"]
    order = {"transformers": 0, "llama.cpp": 1}
    rows.sort(key=lambda r: (order.get(r["tool"], 2), r["method"]))

    with open(args.out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in COLUMNS})

    show = ["method", "bits_k", "bits_v", "ppl", "ppl_reference", "kl_mean", "kl_p99", "top1_agreement",
            "kl_mean_vs_hf_fp32", "decode_tok_s_4k"]
    lines = ["# Peers on SmolLM2-135M-Instruct, WikiText-2 raw test, ctx 2048", "",
             "Generated by `bench/peers/make_table.py` from the JSON files beside it (each carries its full "
             "config, package versions, thread count and windows); the CSV has more columns (protocol).", "",
             "| " + " | ".join(show) + " |", "|" + "---|" * len(show)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k)) for k in show) + " |")
    lines += ["", "Columns: bits per element actually held for K and V as each tool stores them (scales, "
              "zero points and full-precision residual included); `kl_*` and `top1_agreement` are against "
              "`reference` (HF rows: HF's own fp32 run; llama.cpp rows: llama.cpp's f16-cache run of the same "
              "GGUF); `kl_mean_vs_hf_fp32` puts every row against HF's fp32 run of the dequantized GGUF; "
              "decode tokens/s after a 4096-token prefill (median; 2 threads, measured with nothing else running; each JSON has its machine and threads).", "",
              "## Protocols", ""]
    seen = set()
    for r in rows:
        key = (r["tool"], r.get("prefill_attends_to"), r.get("queries"))
        if key in seen or not r.get("prefill_attends_to"):
            continue
        seen.add(key)
        lines.append(f"- **{r['method']}** ({r['tool']}): attention reads {r.get('prefill_attends_to')}; "
                     f"quantized {r.get('quantized_when')}; re-quantizes: {r.get('requantizes')}; "
                     f"queries: {r.get('queries')}.")
    for ref, n in refs[:1]:
        lines += ["", f"HF fp32 on the same {n} windows, computed inside the llama.cpp run: ppl {ref['ppl']:.6f}."]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.relpath(args.out, pc.REPO)}.csv and .md ({len(rows)} rows)")


if __name__ == "__main__":
    main()

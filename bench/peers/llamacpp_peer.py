"""llama.cpp (through llama-cpp-python) on SmolLM2-135M-Instruct's Q4_1 GGUF with quantized KV caches.

For each KV cache type (f16, q8_0, q4_0, q4_1; flash attention on, which quantized V requires) it
evaluates kvlab's perplexity windows (peers_common.windows) with logits for every position, and
reports ppl, KL / top-1 agreement against llama.cpp's own f16-cache run (and against HF transformers'
fp32 run of the dequantized GGUF), the bits per element llama.cpp allocates for K and V, whether it
rotated K/V with a Hadamard transform before quantizing, and decode tokens/s at several depths.
One JSON per cache type goes to results/llamacpp_<type>[_norot].json.
"""
import argparse
import json
import ctypes
import gc
import os
import re
import statistics
import sys
import time

import numpy as np

import peers_common as pc

TYPES = {"f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 8}  # ggml_type ids (ggml.h)

_log = []


def install_log_capture(llama_cpp):
    """Route llama.cpp's log through a list so the KV cache lines (rotation, sizes) can be read."""

    @llama_cpp.llama_log_callback
    def cb(level, text, user_data):
        _log.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
    return cb  # keep a reference alive


def make_llama(Llama, cache_type, rotate, n_ctx, threads, logits_all, n_batch):
    """A fresh context; returns (llm, facts parsed from llama.cpp's log while it was created)."""
    if rotate:
        os.environ.pop("LLAMA_ATTN_ROT_DISABLE", None)
    else:
        os.environ["LLAMA_ATTN_ROT_DISABLE"] = "1"  # read by llama_kv_cache's constructor
    del _log[:]
    llm = Llama(model_path=os.path.join(pc.MODEL_DIR, pc.GGUF_NAME), n_ctx=n_ctx, n_batch=n_batch,
                n_ubatch=min(512, n_batch), n_threads=threads, n_threads_batch=threads, logits_all=logits_all,
                flash_attn=True, type_k=TYPES[cache_type], type_v=TYPES[cache_type], n_gpu_layers=0,
                seed=0, verbose=False)
    os.environ.pop("LLAMA_ATTN_ROT_DISABLE", None)
    text = "".join(_log)
    facts = {}
    m = re.search(r"K \((\w+)\):\s*([\d.]+) MiB, V \((\w+)\):\s*([\d.]+) MiB", text)
    if m:
        facts.update(k_type=m.group(1), k_mib=float(m.group(2)), v_type=m.group(3), v_mib=float(m.group(4)))
    for kind in ("k", "v"):
        m = re.search(rf"attn_rot_{kind} = (\d)", text)
        facts[f"attn_rot_{kind}"] = int(m.group(1)) if m else None
    m = re.search(r"flash_attn\s*=\s*(\w+)", text)
    facts["flash_attn_log"] = m.group(1) if m else None
    m = re.search(r"kv_size\s*=\s*(\d+)|(\d+) cells", text)
    facts["kv_cells"] = int(next(g for g in m.groups() if g)) if m else None
    md = llm.metadata
    heads = int(md["llama.attention.head_count"])
    facts["kv_elements_per_cell"] = (int(md["llama.block_count"]) * int(md["llama.attention.head_count_kv"])
                                     * int(md["llama.embedding_length"]) // heads)  # layers x kv heads x head dim
    return llm, facts


def block_bits(type_name):
    """Bits per element of a ggml type from the gguf package's block table (bytes per block of n)."""
    import gguf

    if not type_name:
        return None
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name.upper()]]
    return 8.0 * size / block


def window_logits(llm, win):
    llm.reset()
    llm.eval(win)
    return np.array(llm.scores[: len(win) - 1, :], dtype=np.float32)  # positions 0..L-2


def hf_reference_model(threads):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(pc.MODEL_DIR, gguf_file=pc.GGUF_NAME, dtype=torch.float32)
    model.eval()

    def logits(win):
        with torch.no_grad():
            ids = torch.tensor([win], dtype=torch.long)
            return model(ids, use_cache=False).logits[0, : len(win) - 1].float().numpy()

    return logits


def decode_speed(Llama, cache_type, rotate, ids, depths, n_gen, repeats, threads):
    """Decode tokens/s after a prefill of `depth` tokens of the text: n_gen single-token decode steps
    (the text's next tokens, one llama_decode each), median over repeats."""
    out = []
    n_ctx = 8192
    for depth in depths:
        d = min(depth, n_ctx - n_gen)
        rates, prefill = [], []
        for _ in range(repeats):
            llm, _ = make_llama(Llama, cache_type, rotate, n_ctx, threads, False, 2048)
            llm.reset()
            t0 = time.perf_counter()
            if d > 0:
                llm.eval(ids[:d])
            t1 = time.perf_counter()
            for i in range(n_gen):
                llm.eval([ids[d + i]])
            t2 = time.perf_counter()
            rates.append(n_gen / (t2 - t1))
            if d > 0:
                prefill.append(d / (t1 - t0))
            del llm
            gc.collect()
        out.append({"depth_requested": depth, "depth": d, "n_gen": n_gen, "repeats": repeats,
                    "decode_tok_s_median": statistics.median(rates), "decode_tok_s_all": rates,
                    "prefill_tok_s_median": statistics.median(prefill) if prefill else None})
        print(f"[speed {cache_type}{'' if rotate else ' norot'}] depth {d}: decode "
              f"{statistics.median(rates):.1f} tok/s", file=sys.stderr, flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=4, help="first N windows of the text (<= 0: all)")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default="f16,q8_0,q4_0,q4_1", help="KV cache types (f16 must be first)")
    ap.add_argument("--norot-types", default="q8_0,q4_0,q4_1",
                    help="also run these with LLAMA_ATTN_ROT_DISABLE=1 (no Hadamard rotation)")
    ap.add_argument("--no-hf-ref", action="store_true", help="skip the KL against HF transformers' fp32 run")
    ap.add_argument("--depths", default="0,2048,4096,8192")
    ap.add_argument("--n-gen", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--speed-norot", action="store_true", help="also time the rotation-off configurations")
    ap.add_argument("--skip-ppl", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--tag", default="", help="suffix for the result file names")
    args = ap.parse_args()
    pc.check_inputs()

    import llama_cpp
    from llama_cpp import Llama

    keep_cb = install_log_capture(llama_cpp)  # noqa: F841
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    if types[0] != "f16":
        pc.fail("--types must start with f16 (the reference of the KL)")
    for t in types:
        if t not in TYPES:
            pc.fail(f"--types: unknown KV cache type '{t}' (known: {', '.join(TYPES)})")
    configs = [(t, True) for t in types]
    configs += [(t.strip(), False) for t in args.norot_types.split(",") if t.strip()]

    tok = pc.load_tokenizer()
    ids = pc.text_token_ids(tok)
    wins = pc.windows(ids, args.ctx, args.windows)
    # llama.cpp's own tokenizer on the same text (kvlab's and HF's ids agree; does llama.cpp's?)
    probe = Llama(model_path=os.path.join(pc.MODEL_DIR, pc.GGUF_NAME), n_ctx=64, vocab_only=True, verbose=False)
    with open(pc.TEXT, "rb") as f:
        ll_ids = probe.tokenize(f.read(), add_bos=False, special=False)
    tokenizer_match = list(ll_ids) == list(ids)
    first_diff = next((i for i, (a, b) in enumerate(zip(ll_ids, ids)) if a != b), min(len(ll_ids), len(ids)))
    tokenizer_note = {"llamacpp_tokens": len(ll_ids), "hf_tokens": len(ids), "first_difference": first_diff,
                      "hf_ids_around": list(ids[max(0, first_diff - 3):first_diff + 3]),
                      "llamacpp_ids_around": list(ll_ids[max(0, first_diff - 3):first_diff + 3])}
    del probe
    print(f"{len(ids)} tokens, {len(wins)} windows of {args.ctx}; llama.cpp tokenization equal to HF's: "
          f"{tokenizer_match}", file=sys.stderr, flush=True)

    system_info = llama_cpp.llama_print_system_info().decode()
    versions = pc.package_versions(["llama_cpp_python", "numpy", "torch", "transformers", "gguf"])
    name = lambda t, rot: f"llamacpp_{t}{'' if rot else '_norot'}{args.tag}"  # noqa: E731

    results = {}
    if not args.skip_ppl:
        hf_logits = None if args.no_hf_ref else hf_reference_model(args.threads)
        own = {c: pc.Metrics() for c in configs}
        vs_hf = {c: pc.Metrics() for c in configs}
        facts = {}
        hf_ref_metrics = pc.Metrics()
        prog = pc.Progress("llama.cpp ppl", len(wins))
        t_eval = {c: 0.0 for c in configs}
        for win in wins:
            targets = np.asarray(win[1:])
            ref_hf = hf_logits(win) if hf_logits else None
            if ref_hf is not None:
                hf_ref_metrics.add(ref_hf, targets)
            ref_own = None
            for c in configs:
                llm, f = make_llama(Llama, c[0], c[1], args.ctx, args.threads, True, args.ctx)
                facts.setdefault(c, f)
                t0 = time.perf_counter()
                lg = window_logits(llm, win)
                t_eval[c] += time.perf_counter() - t0
                del llm
                gc.collect()
                if c == ("f16", True):
                    ref_own = lg
                own[c].add(lg, targets, ref_own)
                if ref_hf is not None:
                    vs_hf[c].add(lg, targets, ref_hf)
                del lg
            prog.advance(1, "  ".join(f"{c[0]}{'' if c[1] else '/norot'} {own[c].ppl():.4f}" for c in configs))
            del ref_hf, ref_own
        for c in configs:
            f = facts[c]
            elements = (f["kv_cells"] or args.ctx) * f["kv_elements_per_cell"]  # per K or per V
            r = {"metrics_vs_llamacpp_f16": own[c].summary(),
                 "metrics_vs_hf_fp32": vs_hf[c].summary() if hf_logits else None,
                 "hf_fp32_reference": hf_ref_metrics.summary() if hf_logits else None,
                 "kv_cache_log": f,
                 "bits_k": block_bits(f.get("k_type")),
                 "bits_v": block_bits(f.get("v_type")),
                 "bits_k_from_logged_mib": f["k_mib"] * 2**20 * 8 / elements if "k_mib" in f else None,
                 "bits_v_from_logged_mib": f["v_mib"] * 2**20 * 8 / elements if "v_mib" in f else None,
                 "eval_seconds": t_eval[c],
                 "eval_tok_s": own[c].summary()["predicted_tokens"] / t_eval[c] if t_eval[c] else None}
            results[c] = r

    def earlier_ppl(c):
        """With --skip-ppl: the perplexity fields of the result file an earlier run wrote, kept."""
        path = os.path.join(pc.RESULTS, name(*c) + ".json")
        if not args.skip_ppl or not os.path.exists(path):
            return {}
        with open(path) as f:
            prev = json.load(f)
        keep = ["metrics_vs_llamacpp_f16", "metrics_vs_hf_fp32", "hf_fp32_reference", "kv_cache_log", "bits_k",
                "bits_v", "bits_k_from_logged_mib", "bits_v_from_logged_mib", "eval_seconds", "eval_tok_s"]
        out = {k: prev[k] for k in keep if k in prev}
        out["ppl_run"] = {"command": prev.get("command"), "windows": prev.get("config", {}).get("windows"),
                          "finished_at": prev.get("finished_at")}
        return out

    def write_all(speeds):
        for c in configs:
            payload = {
                "tool": "llama.cpp", "method": f"llama.cpp {c[0]}" + ("" if c[1] else " (rotation off)"),
                "config": {"cache_type_k": c[0], "cache_type_v": c[0], "flash_attn": True,
                           "hadamard_rotation_requested": c[1], "ctx": args.ctx, "windows_requested": args.windows,
                           "windows": len(wins), "tokens_in_text": len(ids), "n_batch": args.ctx,
                           "n_ubatch": min(512, args.ctx), "threads": args.threads, "gguf": pc.GGUF_NAME,
                           "text": os.path.relpath(pc.TEXT, pc.REPO),
                           "llamacpp_tokenization_equals_hf": tokenizer_match,
                           "tokenization_check": tokenizer_note,
                           "token_ids_used": "HF's (= kvlab's), fed to llama.cpp as ids"},
                "versions": versions, "llama_system_info": system_info,
            }
            payload.update(results.get(c, {}) or earlier_ppl(c))
            payload["decode_speed"] = speeds.get(c)
            pc.write_result(name(*c), payload)

    speeds = {}
    write_all(speeds)  # the perplexity results first; rewritten below once the speeds are in
    if not args.skip_speed:
        depths = [int(d) for d in args.depths.split(",")]
        for c in configs:
            if not c[1] and not args.speed_norot:
                continue
            speeds[c] = decode_speed(Llama, c[0], c[1], ids, depths, args.n_gen, args.repeats, args.threads)
            write_all(speeds)


if __name__ == "__main__":
    main()

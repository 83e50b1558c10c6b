"""HF transformers' QuantizedCache (quanto / HQQ backends) on SmolLM2-135M-Instruct, streamed token by
token over kvlab's perplexity windows, against HF's own fp32 run of the same windows.

The model is the shared Q4_1 GGUF, which transformers dequantizes to fp32 when it loads it. For each
window: one fp32 pass without a cache gives the reference logits; then each cache configuration
decodes the window one token at a time from an empty cache, so every later token attends to the
quantized history the cache holds (HF's own update(): prefill is never used). Reports ppl, KL(fp32 ||
quantized) mean / p99, top-1 agreement, the bits per element the cache holds at the end of a window
(quantized codes, scales, zero points and the full-precision residual), and decode tokens/s after a
prefill of --speed-depth tokens. One JSON per configuration: results/hf_<backend>_<bits>b_g<G>_r<R>.json,
and results/hf_fp32_w<N>.json for the reference (results/hf_fp32_all.json with --reference-only --windows 0).
"""
import argparse
import json
import statistics
import sys
import time

import numpy as np

import peers_common as pc

AXES = {"quanto": (0, 0), "hqq": (1, 1)}  # transformers' recommended axis_key / axis_value per backend
# hqq packs 2-bit codes 4 rows to a byte row (4-bit: 2), rows = kv heads x tokens x head_dim / group; with
# SmolLM2's 3 kv heads a single first token (3 rows) cannot be packed, nor can any flush after it (HF
# re-quantizes 1 + 128k tokens). The first 4 tokens go in as one chunk, so every flush holds 4 + 128k.
FIRST_CHUNK = {"quanto": 1, "hqq": 4}


def parse_configs(text):
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) != 4 or parts[0] not in AXES:
            pc.fail(f"--configs: '{item}' is not BACKEND:BITS:GROUP:RESIDUAL with BACKEND quanto or hqq")
        out.append((parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
    return out


def tensor_bytes(x):
    """Bytes held by tensors in x (tensor subclasses such as quanto's are opened up)."""
    import torch

    if isinstance(x, (list, tuple)):
        return sum(tensor_bytes(v) for v in x)
    if isinstance(x, dict):
        return sum(tensor_bytes(v) for v in x.values())
    if isinstance(x, torch.Tensor):
        if type(x) is not torch.Tensor and hasattr(x, "__tensor_flatten__"):
            names, _ = x.__tensor_flatten__()
            return sum(tensor_bytes(getattr(x, n)) for n in names)
        return x.numel() * x.element_size()
    return 0


def cache_bits(cache, cfg):
    """Bits per element held for K and V (and for the quantized part alone) over all layers."""
    kv_heads, head_dim = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    q = {"k": 0, "v": 0}
    res = {"k": 0, "v": 0}
    tokens = 0
    for layer in cache.layers:
        q["k"] += tensor_bytes(layer._quantized_keys)
        q["v"] += tensor_bytes(layer._quantized_values)
        res["k"] += tensor_bytes(layer.keys)
        res["v"] += tensor_bytes(layer.values)
        tokens = layer.cumulative_length
    residual_tokens = cache.layers[0].keys.shape[-2] if cache.layers[0].keys.dim() == 4 else 0
    elements = len(cache.layers) * kv_heads * head_dim * tokens
    quantized_elements = len(cache.layers) * kv_heads * head_dim * (tokens - residual_tokens)
    return {"tokens": tokens, "residual_tokens": residual_tokens,
            "bits_k": 8 * (q["k"] + res["k"]) / elements, "bits_v": 8 * (q["v"] + res["v"]) / elements,
            "bits_k_quantized_part": 8 * q["k"] / quantized_elements if quantized_elements else None,
            "bits_v_quantized_part": 8 * q["v"] / quantized_elements if quantized_elements else None}


def make_cache(model, backend, bits, group, residual):
    from transformers import QuantizedCache

    ak, av = AXES[backend]
    return QuantizedCache(backend=backend, config=model.config, nbits=bits, axis_key=ak, axis_value=av,
                          q_group_size=group, residual_length=residual)


def stream_logits(model, win, cache, first_chunk=1):
    """Logits at positions 0..L-2: the first `first_chunk` tokens in one forward, then one token per
    forward through `cache`; returns (logits, seconds)."""
    import torch

    out = np.empty((len(win) - 1, model.config.vocab_size), dtype=np.float32)
    ids = torch.tensor([win], dtype=torch.long)
    t0 = time.perf_counter()
    o = model(input_ids=ids[:, :first_chunk], past_key_values=cache, use_cache=True)
    out[:first_chunk] = o.logits[0].float().numpy()
    for t in range(first_chunk, len(win) - 1):
        o = model(input_ids=ids[:, t:t + 1], past_key_values=cache, use_cache=True)
        out[t] = o.logits[0, -1].float().numpy()
    return out, time.perf_counter() - t0


def decode_speed(model, ids, depth, n_gen, repeats, cache_factory):
    """Decode tokens/s: prefill `depth` tokens into a fresh cache in one pass, then time n_gen
    single-token steps (the text's next tokens); median over repeats."""
    import torch

    rates = []
    x = torch.tensor([ids[: depth + n_gen]], dtype=torch.long)
    for _ in range(repeats):
        cache = cache_factory()
        model(input_ids=x[:, :depth], past_key_values=cache, use_cache=True)
        t0 = time.perf_counter()
        for i in range(n_gen):
            model(input_ids=x[:, depth + i:depth + i + 1], past_key_values=cache, use_cache=True)
        rates.append(n_gen / (time.perf_counter() - t0))
        del cache
    return {"depth": depth, "n_gen": n_gen, "repeats": repeats, "decode_tok_s": statistics.median(rates),
            "decode_tok_s_all": rates}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=4, help="first N windows of the text (<= 0: all)")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="quanto:4:64:128,quanto:2:64:128,hqq:4:64:128,hqq:2:64:128,quanto:4:32:128,quanto:2:32:128",
                    help="comma-separated BACKEND:BITS:GROUP:RESIDUAL")
    ap.add_argument("--reference-only", action="store_true", help="only HF's fp32 ppl (results/hf_fp32_w<N>.json or hf_fp32_all.json)")
    ap.add_argument("--check-stream", type=int, default=1,
                    help="windows on which an unquantized DynamicCache is also streamed token by token, to check "
                         "the streaming harness against the one-pass reference")
    ap.add_argument("--speed-depth", type=int, default=4096)
    ap.add_argument("--n-gen", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--speed-only", action="store_true",
                    help="only decode tokens/s, added to the result files an earlier run wrote (run it on a quiet machine)")
    args = ap.parse_args()
    pc.check_inputs()

    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    configs = [] if args.reference_only else parse_configs(args.configs)

    tok = pc.load_tokenizer()
    ids = pc.text_token_ids(tok)
    wins = pc.windows(ids, args.ctx, args.windows)
    model = AutoModelForCausalLM.from_pretrained(pc.MODEL_DIR, gguf_file=pc.GGUF_NAME, dtype=torch.float32)
    model.eval()
    cfg = model.config
    print(f"{len(ids)} tokens, {len(wins)} windows of {args.ctx}; attention: {cfg._attn_implementation}",
          file=sys.stderr, flush=True)
    versions = pc.package_versions(["torch", "transformers", "optimum-quanto", "hqq", "gguf", "numpy", "tokenizers"])
    common = {"ctx": args.ctx, "windows_requested": args.windows, "windows": len(wins), "tokens_in_text": len(ids),
              "threads": args.threads, "dtype": "float32", "attn_implementation": cfg._attn_implementation,
              "gguf": pc.GGUF_NAME, "text": pc.os.path.relpath(pc.TEXT, pc.REPO), "bos": "none"}

    if args.speed_only:  # decode speed into the existing result files, perplexity untouched
        runs = [("hf_fp32_all" if args.windows <= 0 else f"hf_fp32_w{len(wins)}", lambda: DynamicCache(config=cfg))]
        runs += [(f"hf_{c[0]}_{c[1]}b_g{c[2]}_r{c[3]}", (lambda c=c: make_cache(model, *c))) for c in configs]
        for name, factory in runs:
            path = pc.os.path.join(pc.RESULTS, name + ".json")
            if not pc.os.path.exists(path):
                print(f"skip {name}: no {path} (run its perplexity first)", file=sys.stderr, flush=True)
                continue
            with open(path) as f:
                payload = json.load(f)
            payload.setdefault("ppl_command", payload.get("command"))
            payload["decode_speed"] = decode_speed(model, ids, args.speed_depth, args.n_gen, args.repeats, factory)
            payload["decode_speed"]["threads"] = args.threads
            print(f"{name}: {payload['decode_speed']['decode_tok_s']:.2f} tok/s at depth {args.speed_depth}",
                  file=sys.stderr, flush=True)
            pc.write_result(name, payload)
        return

    # HF fp32 reference: one pass per window (logits kept per window, recomputed per configuration)
    def reference(win):
        return model(torch.tensor([win]), use_cache=False).logits[0, :-1].float().numpy()

    ref = pc.Metrics()
    stream_check = pc.Metrics()
    stream_max_abs = 0.0
    t_ref = 0.0
    prog = pc.Progress("hf fp32", len(wins))
    for w, win in enumerate(wins):
        t0 = time.perf_counter()
        ref_logits = reference(win)
        t_ref += time.perf_counter() - t0
        ref.add(ref_logits, np.asarray(win[1:]))
        if w < args.check_stream and not args.reference_only:
            lg, _ = stream_logits(model, win, DynamicCache(config=cfg))
            stream_check.add(lg, np.asarray(win[1:]), ref_logits)
            stream_max_abs = max(stream_max_abs, float(np.abs(lg - ref_logits).max()))
        prog.advance(1, f"ppl {ref.ppl():.6f}")
    ref_summary = ref.summary()
    ref_payload = {"tool": "transformers", "method": "HF transformers fp32 (DynamicCache)", "cache": "dynamic",
                   "config": common, "versions": versions, "metrics": ref_summary,
                   "bits_k": 32.0, "bits_v": 32.0, "reference_seconds": t_ref,
                   "protocol": "one forward pass per window, no cache, fp32 weights dequantized from the GGUF"}
    if stream_check.windows:
        ref_payload["streaming_check"] = {"windows": stream_check.windows, "max_abs_logit_diff": stream_max_abs,
                                          **stream_check.summary()}
    if not args.skip_speed and not args.reference_only:
        ref_payload["decode_speed"] = decode_speed(model, ids, args.speed_depth, args.n_gen, args.repeats,
                                                   lambda: DynamicCache(config=cfg))
    pc.write_result("hf_fp32_all" if args.windows <= 0 else f"hf_fp32_w{len(wins)}", ref_payload)

    for c in configs:  # one configuration at a time, its JSON written as soon as it is done
        backend, nbits, group, residual = c
        ak, av = AXES[backend]
        m = pc.Metrics()
        seconds = 0.0
        prog = pc.Progress(f"hf {backend} {nbits}b g{group} r{residual}", len(wins))
        for win in wins:
            ref_logits = reference(win)
            cache = make_cache(model, *c)
            lg, sec = stream_logits(model, win, cache, FIRST_CHUNK[backend])
            seconds += sec
            m.add(lg, np.asarray(win[1:]), ref_logits)
            held = cache_bits(cache, cfg)
            del cache, lg, ref_logits
            prog.advance(1, f"ppl {m.ppl():.4f} (fp32 {ref.ppl():.4f}) {(len(win) - 1) / sec:.1f} tok/s")
        payload = {
            "tool": "transformers", "cache": "quantized",
            "method": f"HF QuantizedCache {backend} {nbits}-bit G{group} R{residual}",
            "config": dict(common, backend=backend, nbits=nbits, q_group_size=group, residual_length=residual,
                           axis_key=ak, axis_value=av, first_chunk_tokens=FIRST_CHUNK[backend]),
            "versions": versions, "metrics": m.summary(), "fp32_reference": ref_summary,
            "stream_seconds": seconds, "stream_tok_s": m.predicted / seconds if seconds else None,
        }
        payload.update(held)
        if not args.skip_speed:
            payload["decode_speed"] = decode_speed(model, ids, args.speed_depth, args.n_gen, args.repeats,
                                                   lambda: make_cache(model, *c))
        pc.write_result(f"hf_{backend}_{nbits}b_g{group}_r{residual}", payload)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Oracles for kvlab on the real SmolLM2-135M-Instruct GGUF (../shared/data/models/smollm2-135m-instruct),
from HF transformers loading the same file (`from_pretrained(folder, gguf_file=name)`: it dequantizes
to fp32 with gguf.quants and undoes llama.cpp's Q/K row permutation).

Writes under tests/data/gguf/smollm2/:
  reference.json      token ids of 145 WikiText-2 test lines (every 20th non-empty line) from
                      transformers' GGUF tokenizer; the count and SHA-256 (int32 little-endian) of the
                      ids of the whole test file from HF `tokenizers` running the pipeline that
                      tokenizer.ggml.pre = smollm names (Digits(individual_digits) then GPT-2's ByteLevel
                      regex, as llama.cpp and SmolLM2's own tokenizer.json split) over the file's
                      vocabulary and merges. transformers' GGUF tokenizer ignores `smollm` and splits by
                      GPT-2's regex alone; on this file that changes 2 of 303,415 ids (the " ½" of
                      "4 ½ months"), which the JSON records; the chat template's rendering of one user message and
                      the greedy answer (ids and text, at most 48 new tokens) to it; the 64-token
                      logits prompt.
  logits.safetensors  transformers' fp32 logits on the 64-token prompt, compactly: for every position
                      the top-16 token ids and logits and the logits of 256 fixed random token ids
                      (ids stored as F32, exact below 2^24).
With --ppl N it also computes the perplexity protocol of `kvlab eval ppl --ctx 2048 --bos none` (the
whole file's ids, no special tokens, cut into non-overlapping windows of 2048, the first N; every
token but each window's first predicted) and prints it; --ppl-out FILE writes it as JSON.
With --check-converted DIR it checks that HF `tokenizers` loads DIR/tokenizer.json (a checkpoint
from `kvlab convert gguf`) and gives the same ids as the GGUF tokenizer on the 200 lines.

Needs a venv with `pip install gguf numpy torch transformers tokenizers safetensors`.
Run: python scripts/make_smollm2_reference.py [--shared ../shared] [--ppl 16 --ppl-out FILE]
"""
import argparse
import hashlib
import json
import math
import pathlib
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "gguf" / "smollm2"
NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "What is 2+2?"


def smollm_pipeline(gguf_path):
    """HF `tokenizers` with the smollm split over the GGUF file's own vocabulary and merges."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    r = gguf.GGUFReader(str(gguf_path))

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, [tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, ty in zip(tokens, types) if ty == 3])
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--ppl", type=int, default=0, help="windows of the perplexity check (0: skip; -1: all)")
    ap.add_argument("--ppl-out", default="")
    ap.add_argument("--check-converted", default="")
    ap.add_argument("--no-fixtures", action="store_true", help="do not rewrite tests/data")
    ap.add_argument("--whole-file-only", action="store_true", help="only (re)write reference.json's whole_file entry")
    args = ap.parse_args()
    shared = pathlib.Path(args.shared)
    folder = shared / "data" / "models" / "smollm2-135m-instruct"
    text = (shared / "data" / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")
    torch.set_num_threads(int(__import__('os').environ.get('THREADS', '2')))

    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=NAME)
    lines = [(i, l) for i, l in enumerate(text.split("\n")) if l.strip()]
    picked = lines[::20][:200]
    ids_all = tok(text, add_special_tokens=False)["input_ids"]
    print(f"whole file: {len(ids_all)} tokens")
    ids_smollm = smollm_pipeline(folder / NAME).encode(text, add_special_tokens=False).ids
    differ = [i for i, (a, b) in enumerate(zip(ids_smollm, ids_all)) if a != b]
    whole = {"tokens": len(ids_smollm), "sha256": hashlib.sha256(np.asarray(ids_smollm, dtype="<i4").tobytes()).hexdigest(),
             "transformers_tokens": len(ids_all), "transformers_differs_at": differ}
    print(f"smollm pipeline: {len(ids_smollm)} tokens; transformers' GGUF tokenizer differs at {differ}")
    if args.whole_file_only:
        ref = json.loads((OUT / "reference.json").read_text(encoding="utf-8"))
        ref["whole_file"] = whole
        (OUT / "reference.json").write_text(json.dumps(ref, ensure_ascii=False) + "\n", encoding="utf-8")
        return

    if args.check_converted:
        from tokenizers import Tokenizer
        conv = Tokenizer.from_file(str(pathlib.Path(args.check_converted) / "tokenizer.json"))
        bad = [i for i, l in picked if conv.encode(l, add_special_tokens=False).ids != tok(l, add_special_tokens=False)["input_ids"]]
        whole = conv.encode(text, add_special_tokens=False).ids == ids_all
        print(f"converted tokenizer.json: {len(picked) - len(bad)}/{len(picked)} lines equal, whole file equal: {whole}")
        if bad or not whole:
            raise SystemExit("converted tokenizer differs")

    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=NAME, dtype=torch.float32)
    model.eval()

    if not args.no_fixtures:
        OUT.mkdir(parents=True, exist_ok=True)
        ref = {"transformers": __import__("transformers").__version__, "torch": torch.__version__,
               "lines": [{"line": i, "ids": tok(l, add_special_tokens=False)["input_ids"]} for i, l in picked],
               "whole_file": whole}
        # Logits on a 64-token prompt: the first 64 tokens of the test file's first article.
        prompt = ids_all[:64]
        with torch.no_grad():
            logits = model(torch.tensor([prompt])).logits[0].float()
        top = torch.topk(logits, 16, dim=-1)
        sample = torch.from_numpy(np.random.default_rng(5).choice(logits.shape[1], 256, replace=False)).long()
        from safetensors.torch import save_file
        save_file({"prompt_ids": torch.tensor(prompt, dtype=torch.float32), "top_ids": top.indices.float(),
                   "top_logits": top.values.contiguous(), "sample_ids": sample.float(),
                   "sample_logits": logits[:, sample].contiguous()}, str(OUT / "logits.safetensors"))
        ref["logits_prompt"] = prompt
        # The greedy chat answer.
        rendered = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                           add_generation_prompt=True)
        chat_ids = tok(rendered, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([chat_ids]), max_new_tokens=48, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        answer = out[0, len(chat_ids):].tolist()
        ref["chat"] = {"question": QUESTION, "rendered": rendered, "prompt_ids": chat_ids, "answer_ids": answer,
                       "answer": tok.decode(answer, skip_special_tokens=True), "max_new_tokens": 48,
                       "eos_token_id": tok.eos_token_id}
        print("chat answer:", repr(ref["chat"]["answer"]))
        (OUT / "reference.json").write_text(json.dumps(ref, ensure_ascii=False) + "\n", encoding="utf-8")

    if args.ppl:
        windows = len(ids_all) // 2048
        n = windows if args.ppl < 0 else min(args.ppl, windows)
        nll, count, per_window = 0.0, 0, []
        t0 = time.time()
        for w in range(n):
            ids = torch.tensor([ids_all[w * 2048:(w + 1) * 2048]])
            with torch.no_grad():
                logits = model(ids).logits[0].double()
            lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:].unsqueeze(1)).squeeze(1)
            per_window.append(float(-lp.sum()))
            nll += float(-lp.sum())
            count += lp.numel()
            print(f"window {w + 1}/{n}: running ppl {math.exp(nll / count):.6f} ({time.time() - t0:.0f} s)", flush=True)
            if args.ppl_out:  # after every window, so that a long run stopped early still counts
                pathlib.Path(args.ppl_out).write_text(json.dumps(
                    {"windows": w + 1, "of": windows, "ctx": 2048, "tokens_scored": count, "ppl": math.exp(nll / count),
                     "window_nll": per_window, "seconds": time.time() - t0}, indent=1) + "\n")
        print(f"HF transformers ppl over {n} of {windows} windows of 2048 (--bos none): {math.exp(nll / count):.6f}")


if __name__ == "__main__":
    main()

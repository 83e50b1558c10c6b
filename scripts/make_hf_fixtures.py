#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers for checkpoints made by `kvlab make-model`.

For each variant below this script
  1. runs `kvlab make-model` (small dims, larger init so logits and attention are far from flat),
  2. loads the checkpoint with transformers (fp32, eager attention, CPU),
  3. stores input ids and transformers' logits in <out>/<variant>/reference.safetensors.
tests/test_hf_reference.cpp loads the same checkpoint with kvlab and requires max |diff| <= 1e-4.

Needs torch, transformers and safetensors (pip; CPU is enough):
    python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch transformers safetensors
    /tmp/hfvenv/bin/python scripts/make_hf_fixtures.py --kvlab build/kvlab
"""
import argparse
import json
import pathlib
import subprocess

import torch
import transformers
from safetensors.torch import save_file

# name: make-model arguments. Dims are tiny so the fixtures stay small (~200 KB each).
COMMON = ["--shape", "tiny", "--hidden", "32", "--heads", "4", "--head-dim", "8", "--layers", "2",
          "--intermediate", "64", "--vocab", "400", "--tokenizer-vocab", "400", "--init-std", "0.25"]
VARIANTS = {
    "llama_mha": ["--model-type", "llama", "--kv-heads", "4", "--seed", "1"],
    "llama3_gqa_tied": ["--model-type", "llama", "--kv-heads", "2", "--seed", "2", "--tie-embeddings", "true",
                        "--rope-scaling", "llama3:8:1:4:16", "--rope-theta", "500000"],
    "mistral_gqa": ["--model-type", "mistral", "--kv-heads", "1", "--seed", "3", "--rope-theta", "1000"],
    "qwen2_bias": ["--model-type", "qwen2", "--kv-heads", "2", "--seed", "4", "--rope-theta", "1000000"],
}
BATCH, TOKENS = 2, 24


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvlab", default="build/kvlab")
    ap.add_argument("--out", default="tests/data/hf_reference")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    torch.manual_seed(0)
    for name, extra in VARIANTS.items():
        d = out / name
        subprocess.run([args.kvlab, "make-model", "--out", str(d), "--force", *COMMON, *extra], check=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            d, torch_dtype=torch.float32, attn_implementation="eager").eval()
        cfg = json.loads((d / "config.json").read_text())
        ids = torch.randint(0, cfg["vocab_size"], (BATCH, TOKENS), generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        save_file({"input_ids": ids.float().contiguous(),  # F32: exact for ids < 2^24
                   "logits": logits.contiguous()}, str(d / "reference.safetensors"),
                  metadata={"transformers": transformers.__version__, "torch": torch.__version__})
        print(f"{name}: logits {tuple(logits.shape)}, |logits| max {logits.abs().max():.3f}, "
              f"transformers {transformers.__version__}")


if __name__ == "__main__":
    main()

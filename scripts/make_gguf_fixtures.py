#!/usr/bin/env python3
"""Makes the GGUF fixtures of tests/test_gguf_*.cpp with llama.cpp's own Python package `gguf`
(its writer, and the reference dequantizers of `gguf.quants`) and HF transformers / tokenizers /
sentencepiece as the independent oracles.

Writes under tests/data/gguf/:
  dequant.gguf        one tensor of every type kvlab dequantizes (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
                      Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), 3 x 512 elements each, from random
                      block bytes (the f16 scales set to finite values, some subnormal; F16 and BF16
                      with zeros, subnormals, infinities and NaNs), each beside "<TYPE>.expected":
                      the F32 values gguf.quants.dequantize gives. Also one metadata key of every
                      value type (and arrays of strings, ints, floats, bools and arrays).
  tiny_llama.gguf     a 2-layer `llama` model (hidden 32, GQA 4/2 heads, head_dim 8) with a byte-level BPE
                      vocabulary (tokenizer.ggml.pre = smollm: each digit alone, then GPT-2's
                      regex) trained here with HF tokenizers, a ChatML chat template, tied
                      embeddings, Q and K rows permuted as llama.cpp's converter does, weights in
                      Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 / F16 / BF16 / F32.
  tiny_qwen2.gguf     a 2-layer `qwen2` model (q/k/v biases, separate output.weight) with a
                      byte-level BPE vocabulary split by the Qwen2 regex.
  tiny_spm.gguf       a 2-layer `llama` model with a SentencePiece BPE vocabulary (tokenizer.ggml.model
                      = llama, byte fallback) trained here with sentencepiece; separate output.weight.
  tiny_reference.json for each tiny model: token ids of test texts from the original tokenizer
                      (HF tokenizers' tokenizer.json, or sentencepiece itself) and from transformers'
                      GGUF tokenizer (which differs from sentencepiece on text that starts with a
                      space: it drops the dummy prefix there), and the ids of a fixed prompt;
  tiny_logits.safetensors  transformers' fp32 logits of that prompt for each model (its GGUF loader
                      dequantizes with gguf.quants and undoes the Q/K permutation).

With --check-convert build/kvlab it writes nothing but checks `kvlab convert gguf` on each tiny model:
HF `tokenizers` (or sentencepiece, for tokenizer.model) loads the converted tokenizer and gives the
original ids, and transformers loads the converted folder to the logits it gives for the GGUF file.

Needs a venv with `pip install gguf numpy torch transformers tokenizers sentencepiece safetensors
accelerate`. Run: python scripts/make_gguf_fixtures.py [--check-convert build/kvlab]
"""
import json
import pathlib
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "gguf"
CORPUS = (ROOT / "datasets" / "tiny" / "tokenizer_corpus.txt").read_text(encoding="utf-8")

rng = np.random.default_rng(20240715)

# Byte offsets of the f16 scale fields inside one block of each quantized type.
SCALE_FIELDS = {
    T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_blocks(qtype, n_blocks):
    """Random block bytes (every bit pattern of the codes) with finite f16 scales."""
    _, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in SCALE_FIELDS[qtype]:
        d = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
        d[0] = np.float16(6e-8)    # the smallest subnormal
        d[1] = np.float16(-3e-6)   # a negative subnormal
        raw[:, off:off + 2] = d.view(np.uint8).reshape(n_blocks, 2)
    return raw


def write_dequant_fixture():
    rows, cols = 3, 512
    w = gguf.GGUFWriter(OUT / "dequant.gguf", "kvlab-test")
    # One key of every value type.
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_uint64("test.u64", 1 << 62)
    w.add_int64("test.i64", -(1 << 62))
    w.add_float32("test.f32", 0.1)
    w.add_float64("test.f64", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo\nwörld")
    w.add_array("test.strings", ["a", "", "ünï"])
    w.add_array("test.ints", [-1, 0, 7])
    w.add_array("test.floats", [0.5, -2.0])
    w.add_array("test.bools", [True, False])
    w.add_array("test.nested", [[1, 2], [3, 4, 5]])

    f32 = rng.standard_normal((rows, cols)).astype(np.float32)
    f32[0, :4] = [0.0, -0.0, np.inf, np.nan]
    w.add_tensor("F32", f32)
    w.add_tensor("F32.expected", dequantize(f32, T.F32).reshape(rows, cols))

    special = np.array([0.0, -0.0, 1.0, -1.0, 65504.0, -65504.0, 6e-8, -6e-8, 6.1e-5, 1e-4, np.inf, -np.inf, np.nan],
                       dtype=np.float16)
    f16 = (rng.standard_normal((rows, cols)) * 10).astype(np.float16)
    f16[0, :len(special)] = special
    w.add_tensor("F16", f16)
    w.add_tensor("F16.expected", dequantize(f16.view(np.uint8), T.F16).reshape(rows, cols))

    bf16 = rng.integers(0, 1 << 16, size=(rows, cols), dtype=np.uint16)
    bf16[0, :6] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x0001]  # zeros, infinities, NaN, subnormal
    raw = bf16.view(np.uint8).reshape(rows, cols * 2)
    w.add_tensor("BF16", raw, raw_dtype=T.BF16)
    w.add_tensor("BF16.expected", dequantize(raw, T.BF16).reshape(rows, cols))

    for qtype in [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        raw = random_blocks(qtype, rows * cols // block).reshape(rows, cols // block * size)
        w.add_tensor(qtype.name, raw, raw_dtype=qtype)
        w.add_tensor(qtype.name + ".expected", dequantize(raw, qtype).reshape(rows, cols).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- tiny models ------------------------------------------------------------------------------

TEXTS = [
    "",
    "Hello world",
    " Hello world",
    "The lazy dog didn't care.",
    "In 2024 the model had 1234567 parameters, 3.14 and 1,000,000.",
    "Numbers: 1 2 3 4 8 16 32 64 128 256 512 1024 2048 4096 and 8192",
    "naïve café Ünïcödé, Привет мир, 日本語, emoji 🦙",
    "def main():\n    return 0\n\n\tTabbed\r\nWindows\n\n\n",
    "   leading and trailing   ",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "A table lists perplexity 5.47, 5.68 and 6.12; memory 13.5 GB.",
]

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_bpe(pre):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:  # qwen2
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer)
    return tok


def add_bpe_vocab(w, tok, pre):
    """The metadata llama.cpp's converter writes for a byte-level BPE vocabulary."""
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_unk_token_id(vocab["<|endoftext|>"])
    w.add_pad_token_id(vocab["<|im_end|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    return len(tokens)


def train_spm(workdir):
    import sentencepiece as spm
    prefix = str(pathlib.Path(workdir) / "spm")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS.splitlines() * 4), model_prefix=prefix,
                                   model_type="bpe", vocab_size=400, byte_fallback=True, character_coverage=1.0,
                                   add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def add_spm_vocab(w, sp):
    n = sp.get_piece_size()
    types = []
    for i in range(n):
        types.append(gguf.TokenType.CONTROL if sp.is_control(i) else gguf.TokenType.UNKNOWN if sp.is_unknown(i)
                     else gguf.TokenType.BYTE if sp.is_byte(i) else gguf.TokenType.UNUSED if sp.is_unused(i)
                     else gguf.TokenType.NORMAL)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([sp.id_to_piece(i) for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    return n


def permute(w, n_head):
    """llama.cpp's row order for the llama architecture's Q and K (adjacent-pair RoPE)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add_weights(w, arch, vocab, tied, permute_qk, types):
    H, I, L, heads, kv_heads, D = 32, 64, 2, 4, 2, 8
    prefix = arch + "."
    w.add_context_length(256)
    w.add_embedding_length(H)
    w.add_block_count(L)
    w.add_feed_forward_length(I)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(D)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)

    def tensor(name, shape, qtype, scale=0.2):
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        return name, x, qtype

    def put(name, x, qtype):
        if qtype == T.F32:
            w.add_tensor(name, x.astype(np.float32))
        elif qtype == T.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)

    put(*tensor("token_embd.weight", (vocab, H), types["embd"], 1.0))
    for l in range(L):
        b = f"blk.{l}."
        put(b + "attn_norm.weight", 1 + 0.1 * rng.standard_normal(H).astype(np.float32), T.F32)
        q = (rng.standard_normal((heads * D, H)) * 0.2).astype(np.float32)
        k = (rng.standard_normal((kv_heads * D, H)) * 0.2).astype(np.float32)
        put(b + "attn_q.weight", permute(q, heads) if permute_qk else q, types["q"])
        put(b + "attn_k.weight", permute(k, kv_heads) if permute_qk else k, types["k"])
        put(*tensor(b + "attn_v.weight", (kv_heads * D, H), types["v"]))
        if arch == "qwen2":
            put(*tensor(b + "attn_q.bias", (heads * D,), T.F32, 0.5))
            put(*tensor(b + "attn_k.bias", (kv_heads * D,), T.F32, 0.5))
            put(*tensor(b + "attn_v.bias", (kv_heads * D,), T.F32, 0.5))
        put(*tensor(b + "attn_output.weight", (H, heads * D), types["o"]))
        put(b + "ffn_norm.weight", 1 + 0.1 * rng.standard_normal(H).astype(np.float32), T.F32)
        put(*tensor(b + "ffn_gate.weight", (I, H), types["gate"]))
        put(*tensor(b + "ffn_up.weight", (I, H), types["up"]))
        put(*tensor(b + "ffn_down.weight", (H, I), types["down"]))
    put("output_norm.weight", 1 + 0.1 * rng.standard_normal(H).astype(np.float32), T.F32)
    if not tied:
        put(*tensor("output.weight", (vocab, H), types["out"]))


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def hf_reference(name, prompt_ids):
    """transformers' GGUF loader: the fp32 logits of prompt_ids and its tokenizer's ids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(str(OUT), gguf_file=name, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids])).logits[0].float().numpy()
    tok = AutoTokenizer.from_pretrained(str(OUT), gguf_file=name)
    hf_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    return logits, hf_ids


def check_convert(kvlab):
    import subprocess
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM
    ref = json.loads((OUT / "tiny_reference.json").read_text(encoding="utf-8"))
    logits = load_file(str(OUT / "tiny_logits.safetensors"))
    for name, m in ref["models"].items():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([kvlab, "convert", "gguf", "--model", str(OUT / name), "--out", tmp], check=True,
                           stdout=subprocess.DEVNULL)
            if (pathlib.Path(tmp) / "tokenizer.json").exists():
                from tokenizers import Tokenizer
                tok = Tokenizer.from_file(str(pathlib.Path(tmp) / "tokenizer.json"))
                ids = [tok.encode(t, add_special_tokens=False).ids for t in m["texts"]]
            else:
                import sentencepiece as spm
                sp = spm.SentencePieceProcessor(model_file=str(pathlib.Path(tmp) / "tokenizer.model"))
                ids = [sp.encode(t) for t in m["texts"]]
            same = sum(a == b for a, b in zip(ids, m["ids"]))
            model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
            with torch.no_grad():
                out = model(torch.tensor([m["prompt_ids"]])).logits[0].numpy()
            diff = float(np.abs(out - logits[name]).max())
            print(f"{name}: converted tokenizer gives the original ids on {same}/{len(ids)} texts; "
                  f"transformers on the converted folder: max |logit diff| {diff:.2e}")
            if same != len(ids) or diff > 1e-4:
                raise SystemExit(f"{name}: the converted checkpoint differs")


def main():
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--check-convert":
        return check_convert(sys.argv[2])
    OUT.mkdir(parents=True, exist_ok=True)
    write_dequant_fixture()
    ref = {"gguf_version": gguf.__version__ if hasattr(gguf, "__version__") else "", "models": {}}
    import tokenizers
    import transformers
    ref["tokenizers_version"] = tokenizers.__version__
    ref["transformers_version"] = transformers.__version__
    prompt_ids = [int(x) for x in rng.integers(3, 300, size=16)]
    all_logits = {}

    llama_types = {"embd": T.Q8_0, "q": T.Q4_0, "k": T.Q4_1, "v": T.Q5_0, "o": T.Q5_1, "gate": T.F16, "up": T.Q8_0,
                   "down": T.BF16, "out": T.Q8_0}
    specs = [
        ("tiny_llama.gguf", "llama", "smollm", True, llama_types),
        ("tiny_qwen2.gguf", "qwen2", "qwen2", False,
         {**llama_types, "q": T.Q8_0, "k": T.F16, "down": T.F32, "gate": T.Q4_1}),
    ]
    for name, arch, pre, tied, types in specs:
        tok = train_bpe(pre)
        w = gguf.GGUFWriter(OUT / name, arch)
        w.add_name(name)
        vocab = add_bpe_vocab(w, tok, pre)
        add_weights(w, arch, vocab, tied, permute_qk=arch == "llama", types=types)
        finish(w)
        logits, hf_ids = hf_reference(name, prompt_ids)
        ids = [tok.encode(t, add_special_tokens=False).ids for t in TEXTS]
        ref["models"][name] = {"texts": TEXTS, "ids": ids, "hf_gguf_ids": hf_ids, "prompt_ids": prompt_ids}
        all_logits[name] = logits

    with tempfile.TemporaryDirectory() as tmp:
        sp = train_spm(tmp)
        name = "tiny_spm.gguf"
        w = gguf.GGUFWriter(OUT / name, "llama")
        w.add_name(name)
        vocab = add_spm_vocab(w, sp)
        add_weights(w, "llama", vocab, False, permute_qk=True, types={**llama_types, "embd": T.F16})
        finish(w)
        logits, hf_ids = hf_reference(name, prompt_ids)
        ids = [sp.encode(t) for t in TEXTS]
        ref["models"][name] = {"texts": TEXTS, "ids": ids, "hf_gguf_ids": hf_ids, "prompt_ids": prompt_ids,
                               "decoded": [sp.decode(i) for i in ids]}
        all_logits[name] = logits

    for name, m in ref["models"].items():
        same = sum(a == b for a, b in zip(m["ids"], m["hf_gguf_ids"]))
        print(f"{name}: original tokenizer and transformers' GGUF tokenizer agree on {same}/{len(TEXTS)} texts")
        for t, a, b in zip(TEXTS, m["ids"], m["hf_gguf_ids"]):
            if a != b:
                print(f"  differ on {t!r}: {a} vs {b}")
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in all_logits.items()},
              str(OUT / "tiny_logits.safetensors"))
    (OUT / "tiny_reference.json").write_text(json.dumps(ref, ensure_ascii=False) + "\n", encoding="utf-8")
    for p in sorted(OUT.iterdir()):
        print(f"{p.name}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()

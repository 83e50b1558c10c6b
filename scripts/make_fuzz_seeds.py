#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets into tests/fuzz/corpus/<target>/.

Seeds are small valid (and a few nearly valid) inputs of each kind, so that the fuzzer starts inside
the parser instead of at its first check. Files already in the repository (configs, tokenizers,
LongBench prediction files, experiment specs) are copied; safetensors, llama2.c tokenizers, plans
and LongBench records are written here from their format. Standard library only:
    /usr/bin/python3 scripts/make_fuzz_seeds.py
"""
import json
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def out(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def copy(target, src, name):
    out(target, name, open(os.path.join(ROOT, src), "rb").read())


def safetensors(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape, raw bytes)] -> bytes of a safetensors file."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def gguf(kvs, tensors, version=3, alignment=32):
    """kvs: [(key, type id, packed value bytes)], tensors: [(name, dims (ggml order), type id, raw)]
    -> bytes of a GGUF file (header, metadata, tensor infos, data aligned to `alignment`)."""
    def string(x):
        x = x.encode()
        return struct.pack("<Q", len(x)) + x
    body = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, vtype, value in kvs:
        body += string(key) + struct.pack("<I", vtype) + value
    data, offsets = b"", []
    for _, _, _, raw in tensors:
        data += b"\0" * ((alignment - len(data) % alignment) % alignment)
        offsets.append(len(data))
        data += raw
    for (name, dims, ttype, _), off in zip(tensors, offsets):
        body += string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        body += struct.pack("<IQ", ttype, off)
    body += b"\0" * ((alignment - len(body) % alignment) % alignment)
    return body + data


def gguf_str(x):
    x = x.encode()
    return struct.pack("<Q", len(x)) + x


def gguf_array(elem_type, items):
    """An array value: element type, count, elements (each already packed)."""
    return struct.pack("<IQ", elem_type, len(items)) + b"".join(items)


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)

    # safetensors
    t = "fuzz_safetensors"
    out(t, "f32_matrix", safetensors([("w", "F32", [2, 3], f32([1, 2, 3, 4, 5, 6]))]))
    out(t, "three_dtypes", safetensors([("a", "F32", [2], f32([0.5, -1])), ("b", "F16", [3], struct.pack("<3e", 1, 2, 3)),
                                         ("c", "BF16", [1, 2], b"\x80\x3f\x00\x40")], {"format": "pt"}))
    out(t, "scalar_and_empty", safetensors([("s", "F32", [], f32([7])), ("e", "F16", [0, 4], b"")]))
    out(t, "unpadded_misaligned", safetensors([("x", "F16", [5], struct.pack("<5e", 1, 2, 3, 4, 5))], {"k": "v"}, pad=False))
    out(t, "layer_names", safetensors([("model.layers.0.input_layernorm.weight", "F32", [4], f32([1] * 4)),
                                        ("model.norm.weight", "BF16", [4], b"\x80\x3f" * 4)]))
    out(t, "unknown_dtype", safetensors([("i", "I64", [1], b"\x01" + b"\x00" * 7)]))
    copy(t, "tests/data/safetensors/py_written.safetensors", "py_written")

    # config.json
    t = "fuzz_model_config"
    for m in ("llama_mha", "llama3_gqa_tied", "mistral_gqa", "qwen2_bias"):
        copy(t, "tests/data/hf_reference/%s/config.json" % m, m + ".json")
    copy(t, "datasets/kjv-llama/config.json", "kjv_llama.json")
    out(t, "llama3_rope.json", json.dumps({
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        "bos_token_id": 128000, "eos_token_id": [128001, 128009], "tie_word_embeddings": False}, indent=2))
    out(t, "qwen2_window.json", json.dumps({
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "max_position_embeddings": 32768, "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
        "sliding_window": 4096, "use_sliding_window": True, "torch_dtype": "bfloat16"}, indent=2))

    # tokenizer.json (HF byte-level BPE) and tokenizer.model (SentencePiece)
    for d in ("tiny_bpe", "tiny_bpe_gpt2", "tiny_bpe_split"):
        copy("fuzz_bpe_tokenizer", "tests/data/tokenizers/%s/tokenizer.json" % d, d + ".json")
    copy("fuzz_sentencepiece", "tests/data/hf_reference/llama_mha/tokenizer.model", "tiny_bpe_byte_fallback.model")

    # llama2.c tokenizer.bin, prefixed by the fuzz target's two bytes of vocabulary size
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % i for i in range(256)]
    pieces += [b" ", b"e", b"t", b" t", b"th", b" the", b"an", b" a", b"in", b"\xc3\xa9"]
    body = struct.pack("<i", max(len(p) for p in pieces))
    for i, p in enumerate(pieces):
        body += struct.pack("<fi", -float(i), len(p)) + p
    out("fuzz_llama2c_tokenizer", "vocab_exact", struct.pack("<H", len(pieces)) + body)
    out("fuzz_llama2c_tokenizer", "vocab_from_file", struct.pack("<H", 0) + body)

    # llama2.c model.bin: the header and a body of the size it implies (zeros)
    def llama2c_model(dim, hidden, layers, heads, kv_heads, vocab, seq):
        hd = dim // heads
        n = abs(vocab) * dim + layers * dim + layers * dim * heads * hd + 2 * layers * kv_heads * hd * dim
        n += layers * heads * hd * dim + layers * dim + 3 * layers * hidden * dim + dim + seq * hd
        n += 0 if vocab > 0 else abs(vocab) * dim
        return struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab, seq) + b"\0" * (4 * n)
    out("fuzz_llama2c_model", "shared_classifier.bin", llama2c_model(8, 16, 1, 2, 2, 16, 4))
    out("fuzz_llama2c_model", "separate_gqa.bin", llama2c_model(8, 12, 2, 4, 2, -12, 2))

    # plan files (kvtuner / mixkvq layout, and kvmix's)
    out("fuzz_plan_file", "kvtuner.yaml", """method: kvtuner
model: /models/tiny
num_layers: 4
calibration: {calib: wiki.txt, samples: 8, max_len: 256, loss: kl, mode: kivi}
mode: kivi
group: 32
residual: 32
layers:
  - {layer: 0, k_bits: 8, v_bits: 4, k_score: 0.0123, v_score: 0.0456}
  - {layer: 1, k_bits: 4, v_bits: 4}
  - {layer: 2, k_bits: 4, v_bits: 2, loss: 0.25}
  - {layer: 3, k_bits: 2, v_bits: 2}
""")
    out("fuzz_plan_file", "mixkvq.yaml", """method: mixkvq
num_layers: 2
calibration: {fraction: 0.0625, k_bits: 2, v_bits: 2, difficulty: range}
fraction: 0.125
layers:
  - {layer: 0, k_bits: 2, v_bits: 2, heads: [{relevance: [0.5, 1.5, 0.25, 2], difficulty: [1, 2, 3, 4], salience: [0.5, 3, 0.75, 8]}]}
  - {layer: 1, k_bits: 2, v_bits: 2, heads: [{relevance: [1, 1, 1, 1], difficulty: [4, 3, 2, 1], salience: [4, 3, 2, 1]}]}
""")
    out("fuzz_kvmix_plan", "kvmix.yaml", """method: kvmix
model: /models/tiny
num_layers: 4
calibration: {calib: wiki.valid.tokens, samples: 10, max_len: 1024, data_mode: held-out}
profile: {prompts: 10, tokens: 10240}
allocation: {k_avg_bits: 2.5, v_avg_bits: 2.5}
layers:
  - {layer: 0, k_bits: 4, v_bits: 3, k_score: 0.5, v_score: 0.25, k_ratio: 0.3, v_ratio: 0.2}
  - {layer: 1, k_bits: 2, v_bits: 2, k_score: 0.01, v_score: 0.02, k_ratio: 0.2, v_ratio: 0.2}
  - {layer: 2, k_bits: 3, v_bits: 2, k_score: 0.2, v_score: 0.02, k_ratio: 0.2, v_ratio: 0.2}
  - {layer: 3, k_bits: 2, v_bits: 4, k_score: 0.02, v_score: 0.3, k_ratio: 0.2, v_ratio: 0.3}
""")
    out("fuzz_kvmix_plan", "bits_only.yaml", "method: kvmix\nnum_layers: 4\nlayers:\n" +
        "".join("  - {layer: %d, k_bits: %d, v_bits: 16}\n" % (i, b) for i, b in enumerate([1, 2, 8, 16])))

    # LongBench records and predictions
    recs = [
        {"input": "Who wrote it?", "context": "The book was written by Ann. " * 4, "answers": ["Ann"], "length": 24,
         "dataset": "qasper", "language": "en", "all_classes": None, "_id": "a1"},
        {"input": "Type:", "context": "Q: What is the capital? Type: LOC", "answers": ["LOC"], "length": 9,
         "dataset": "trec", "language": "en", "all_classes": ["LOC", "NUM", "HUM"], "_id": "b2"},
        {"input": "", "context": "Paragraph 1: a\nParagraph 2: b", "answers": [2], "length": 6,
         "dataset": "passage_count", "language": "en", "all_classes": None, "_id": "c3"},
    ]
    out("fuzz_longbench_records", "records.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    out("fuzz_longbench_records", "unicode.jsonl", json.dumps({"input": "\u00e9t\u00e9?", "context": "\u20ac \U0001F600",
                                                                "answers": ["\u00e9t\u00e9"]}, ensure_ascii=False) + "\n")
    for name in sorted(os.listdir(os.path.join(ROOT, "tests/data/longbench/preds"))):
        copy("fuzz_longbench_predictions", "tests/data/longbench/preds/" + name, name)

    # GGUF: value types 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array,
    # 10 u64, 11 i64, 12 f64; tensor types 0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0, 30 BF16
    t = "fuzz_gguf"
    every_value = [("u8", 0, b"\x07"), ("i8", 1, b"\xf9"), ("u16", 2, struct.pack("<H", 700)),
                   ("i16", 3, struct.pack("<h", -700)), ("u32", 4, struct.pack("<I", 7)), ("i32", 5, struct.pack("<i", -7)),
                   ("f32", 6, struct.pack("<f", 0.5)), ("bool", 7, b"\x01"), ("str", 8, gguf_str("caf\u00e9")),
                   ("arr.i32", 9, gguf_array(5, [struct.pack("<i", i) for i in range(3)])),
                   ("arr.str", 9, gguf_array(8, [gguf_str(w) for w in ("a", "bc", "")])),
                   ("u64", 10, struct.pack("<Q", 1 << 40)), ("i64", 11, struct.pack("<q", -(1 << 40))),
                   ("f64", 12, struct.pack("<d", 1e-6)), ("general.alignment", 4, struct.pack("<I", 32))]
    out(t, "every_value_type", gguf(every_value, []))
    q8_0 = struct.pack("<e", 0.25) + bytes(range(32))                                  # 32 values
    q4_0 = struct.pack("<e", 0.5) + bytes(range(16))
    q4_1 = struct.pack("<ee", 0.5, -1.0) + bytes(range(16, 32))
    tensors = [("f32", [4], 0, f32([1, -2, 3.5, 0])), ("f16", [2, 2], 1, struct.pack("<4e", 1, 2, -3, 0.5)),
               ("bf16", [2], 30, b"\x80\x3f\x00\x40"), ("q8_0", [32], 8, q8_0), ("q4_0", [32, 1], 2, q4_0),
               ("q4_1", [32], 3, q4_1)]
    out(t, "every_simple_type", gguf([("general.architecture", 8, gguf_str("llama"))], tensors))
    out(t, "v2_align64", gguf([("general.alignment", 4, struct.pack("<I", 64))], tensors[:2], version=2, alignment=64))
    copy(t, "tests/data/gguf/tiny_llama.gguf", "tiny_llama.gguf")

    # GGUF model metadata and vocabularies: the tiny fixtures (llama + smollm BPE, qwen2, SentencePiece-style)
    for name in ("tiny_llama", "tiny_qwen2", "tiny_spm"):
        copy("fuzz_gguf_model", "tests/data/gguf/%s.gguf" % name, name + ".gguf")

    # experiment specs
    for name in sorted(os.listdir(os.path.join(ROOT, "experiments"))):
        if name.endswith(".yaml"):
            copy("fuzz_experiment_spec", "experiments/" + name, name)
    out("fuzz_experiment_spec", "made_model.yaml", """name: fuzz-seed
include: presets/paper.yaml
models:
  - {name: tiny, make: {shape: tiny, seed: 3}}
tasks:
  - {name: passkey, params: {lengths: "256", depths: "0,0.5", samples: 1}}
methods:
  - fp16
  - kivi-2
  - {name: uniform, params: {group: 16}, sweep: {bits: [2, 4]}}
sweep:
  "uniform.k_bits,uniform.v_bits": [[4, 2], [2, 4]]
  seed: [0, 1]
""")


if __name__ == "__main__":
    main()

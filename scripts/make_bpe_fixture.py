#!/usr/bin/env python3
"""Makes the tiny byte-level BPE fixtures for tests/test_bpe_tokenizer.cpp with HF `tokenizers`.

Writes under tests/data/tokenizers/:
  tiny_bpe/       Llama-3 style: NFC normalizer, Split with the Llama-3 regex then ByteLevel
                  (use_regex false), ignore_merges, merges as [a, b] pairs, special tokens and a
                  BOS TemplateProcessing; tokenizer_config.json names BOS/EOS.
  tiny_bpe_gpt2/  GPT-2 style: no normalizer, ByteLevel(add_prefix_space, use_regex), merges as
                  "a b" strings, ByteLevel post-processor, no tokenizer_config.json.
  tiny_bpe_split/ tiny_bpe_gpt2's model behind a Sequence of Split steps with every split
                  behavior, with and without invert, then ByteLevel(add_prefix_space, no regex),
                  so that the pieces the behaviors make reach BPE as they are.
Each directory also gets cases.json: inputs with the ids HF encodes them to (without and with
special tokens) and what HF decodes those ids back to, plus decode-only cases whose ids end in
the middle of a UTF-8 character.

Needs `pip install tokenizers` (the fixtures in the repo were made with the version recorded in
cases.json). Run: python3 scripts/make_bpe_fixture.py
"""
import json
import pathlib

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "tokenizers"

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Training text: enough repetition for a few hundred merges of English, digits and some
# non-Latin words.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog didn't care; it's a lazy dog.",
    "I'm sure they'll say we've been there, and you're right: she'd know.",
    "In 2024 the model had 1234567 parameters and scored 98.6 on the test, up from 87.",
    "Numbers like 3.14159, 2718 and 1,000,000 appear in tables of the report.",
    "Unicode: naïve café, Ünïcödé, Привет мир, 日本語のテキスト, and emoji 🦙🚀 too.",
    "def main():\n    return 0\n\nif __name__ == '__main__':\n    main()\n",
    "    indented line\n\tTabbed line\r\nWindows line\n\n\nthree blank lines",
    "the the the there these those then than that this",
] * 20

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>"]

CASES = [
    "",
    "Hello world",
    " Hello world",
    "The lazy dog didn't care.",
    "I'm, you're, they'll, we've, she'd, it's, don't",
    "I'M YOU'RE THEY'LL WE'VE SHE'D IT'S DON'T",
    "'s 'S 'sa 'ſ 'x",
    "1234567 89 3.14159 1,000,000 007",
    "naïve café Ünïcödé",
    "Привет мир",
    "日本語のテキスト",
    "emoji 🦙🚀 and 👍🏽 and ✅",
    "a  b   c    d",
    "   leading and trailing   ",
    "\t\ttabs\tinside\t",
    "line1\nline2\r\n\r\nline3\n\n\n",
    "  \n  \n x",
    "end with newline\n",
    "<|begin_of_text|>Hello<|end_of_text|>",
    "text <|end_of_text|> more <|begin_of_text|><|begin_of_text|>",
    "<|begin_of_text|",
    "e\u0301 and cafe\u0301 (combining accent, NFC composes it)",
    "K\u212a \u00c5\u212b",
    "def main():\n    return 0\n",
    "!!!??? ... --- ===",
    "x" * 40,
    # NFC: Hangul jamo, reordering of marks, singletons, composition exclusions, blocked marks.
    "\u1100\u1161\u11a8 \u1100\u1161 \uac00\u11a8",
    "e\u0302\u0323 e\u0323\u0302 a\u0316\u0301 a\u0301\u0301",
    "\u212b \u0344 \u0958 \u2126 \u0f73",
    # tokenizers' NFC knows Unicode 9.0 only: U+0898 (14.0) and U+09FE (11.0) stay starters there.
    "a\u0898\u0316 \u09fe\u0316 e\u0316\u0301",
    # ... while its regexes know Unicode 16.0: letters from 15.0 and 16.0, then one unassigned.
    "\U0001E4D0're \U00010D50's \u1C89'd \U000323B0'll",
    # Split pieces (tiny_bpe_split): - , ; :: | #
    "well-known, long-term; a::b::::c | x|y #tag a#b ##",
    "-start, ,end; ;; -- ::: |#| #-#",
]


def train(regex_split: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=regex_split))
    if regex_split:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=360, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=SPECIALS if regex_split else ["<|endoftext|>"])
    tok.train_from_iterator(CORPUS, trainer=trainer)
    if regex_split:
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                          special_tokens=[("<|begin_of_text|>", bos)]),
        ])
        # A non-special added token, matched after normalization.
        tok.add_tokens(["<think>"])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
        # RoBERTa-style <mask> swallows the whitespace around it; "zz" only counts as a word.
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True)])
        tok.add_tokens([AddedToken("zz", single_word=True)])
    return tok


def split_steps(tok: Tokenizer) -> Tokenizer:
    """tiny_bpe_gpt2's tokenizer with a pre-tokenizer that uses every Split behavior."""
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("-", behavior="merged_with_next"),
        pre_tokenizers.Split(",", behavior="merged_with_previous"),
        pre_tokenizers.Split(";", behavior="removed"),
        pre_tokenizers.Split("::", behavior="contiguous"),
        pre_tokenizers.Split("|", behavior="isolated", invert=True),
        pre_tokenizers.Split("#", behavior="merged_with_previous", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False),
    ])
    return tok


def write(name: str, tok: Tokenizer, string_merges: bool, config: dict | None):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    data = json.loads(tok.to_str())
    if string_merges:  # the older "a b" spelling of merges
        data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]
    (d / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
    if config is not None:
        (d / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    # Re-load what was written, so the expectations come from the file the test reads.
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    cases = list(CASES)
    if name == "tiny_bpe":
        cases += ["<think>reasoning</think>", "a<think>b"]
    elif name == "tiny_bpe_gpt2":
        cases += ["a <mask> b", "a<mask>b", " \t<mask>\n x", "<mask><mask>", "zz azz zz! zzz (zz) é́zz 1zz",
                  "zz"]
    encode_cases = []
    for text in cases:
        ids = tok.encode(text, add_special_tokens=False).ids
        encode_cases.append({
            "text": text,
            "ids": ids,
            "ids_special": tok.encode(text, add_special_tokens=True).ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    # Decoding byte tokens that stop inside a character: HF substitutes U+FFFD.
    byte_id = {b: tok.token_to_id(c) for b, c in zip(range(256), byte_level_chars())}
    decode_cases = []
    for raw in [b"\xe6\x97", b"ok\xe6\x97\xa5", b"\xf0\x9f\xa6", b"\xff\xfe", b"a\x80b", b"\xed\xa0\x80",
                b"\xc3"]:
        ids = [byte_id[b] for b in raw]
        decode_cases.append({"ids": ids, "decoded": tok.decode(ids)})
    # One case per line keeps the file small and its diffs readable.
    def rows(items):
        return ",\n".join("  " + json.dumps(item, ensure_ascii=False) for item in items)
    (d / "cases.json").write_text(
        f'{{"tokenizers_version": "{tokenizers.__version__}",\n"encode": [\n{rows(encode_cases)}\n],\n'
        f'"decode": [\n{rows(decode_cases)}\n]}}\n')


def byte_level_chars():
    """GPT-2's bytes_to_unicode, in byte order."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + n))
            n += 1
    return out


if __name__ == "__main__":
    write("tiny_bpe", train(regex_split=True), string_merges=False,
          config={"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>"},
                  "tokenizer_class": "PreTrainedTokenizerFast"})
    write("tiny_bpe_gpt2", train(regex_split=False), string_merges=True, config=None)
    write("tiny_bpe_split", split_steps(train(regex_split=False)), string_merges=False, config=None)
    for name in ("tiny_bpe", "tiny_bpe_gpt2", "tiny_bpe_split"):
        for f in sorted((OUT / name).iterdir()):
            print(f"{f.relative_to(OUT.parent.parent.parent)}: {f.stat().st_size} bytes")

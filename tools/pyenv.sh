#!/usr/bin/env bash
# tools/pyenv.sh [DIR]: makes (once) the git-ignored Python environment of the CPU oracles:
# a CPU build of torch, transformers, gguf and accelerate (transformers needs it to load GGUF
# files), pinned so goldens do not move under us. Prints the environment's python on stdout.
# Idempotent: a stamp holding this file's hash marks a finished install, so a change of the
# pins rebuilds it. On our machines `pip install torch==2.13.0` takes the CPU wheel lying on
# disk; elsewhere pip downloads it (plain `torch` would take a CUDA build of several GB).
# Exit 2 (with the reason on stderr) when no environment can be made: callers skip then.
set -eu
dir=${1:-build/pyenv}
pins="torch==2.13.0 transformers==5.25.0 gguf==0.19.0 accelerate==1.16.0 numpy==2.4.6"
stamp="$dir/.zipage-stamp"
want=$(echo "$pins" | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$dir/bin/python"
    exit 0
fi
command -v python3 >/dev/null || { echo "pyenv: python3 not found" >&2; exit 2; }
rm -rf "$dir"
python3 -m venv "$dir" >&2 || { echo "pyenv: python3 -m venv failed" >&2; exit 2; }
# shellcheck disable=SC2086
"$dir/bin/pip" install -q --disable-pip-version-check $pins >&2 ||
    { echo "pyenv: pip install $pins failed" >&2; exit 2; }
echo "$want" >"$stamp"
echo "$dir/bin/python"

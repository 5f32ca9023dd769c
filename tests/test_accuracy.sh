#!/usr/bin/env bash
# test_accuracy: the engine end to end on the shipped reasoning model (CPU backend, the
# optimised build, block size 32, the default compression configuration with the prompt
# protected; docs/ACCURACY.md, "The check in CI"; about 4 minutes on 2 cores):
#   family 1 (reverse running sum, models/zipage-reasoner/test.jsonl), first 20 problems: 20
#     blocks (640 tokens, 25% of the trace + the prompt) >= 80%, and the reference's selection
#     (carried score, no recent window) at 20 blocks below 50%, so that losing the default's
#     window or turning the carried score back on fails;
#   family 2 (rule machine, tools/task/data/task2-test.jsonl), first 10 problems: 17 blocks (544
#     tokens, 25% of the mean trace) >= 90%.
# A regression in the forward pass, the scheduler or the compression path fails here.
set -u
ZP=${ZP_BUILD:-build}/zipage
M=models/zipage-reasoner
c1=(bench accuracy --model "$M" --data "$M/test.jsonl" --n 20 --set block_size=32
    --set protect_prompt=400 --set protect_prompt_max=400 --budgets 20b)
"$ZP" "${c1[@]}" --min-accuracy 0.8 || exit 1
out=$("$ZP" "${c1[@]}" --set protect_recent=0 --set use_global_score=true \
    --min-accuracy 0.5 2>&1) && { echo "$out"; echo "the reference's selection reached 50%"; exit 1; }
echo "$out" | grep -E '^20b '
"$ZP" bench accuracy --model "$M" --data tools/task/data/task2-test.jsonl --n 10 \
    --set block_size=32 --set protect_prompt=256 --set protect_prompt_max=256 --budgets 17b \
    --min-accuracy 0.9 || exit 1

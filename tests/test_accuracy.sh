#!/usr/bin/env bash
# test_accuracy: the engine end to end on the shipped reasoning model (CPU backend, the
# optimised build): 50 test problems at full KV must score >= 90% (measured 100%), at a
# budget of 46 blocks of 32 (about one compression per request) >= 90% (measured 100%), and
# at 40 blocks (about 6 compressions per request) >= 30% (measured 46%, docs/ACCURACY.md). A
# regression in the forward pass, the scheduler or the compression path fails here.
set -u
ZP=${ZP_BUILD:-build}/zipage
M=models/zipage-reasoner
common=(bench accuracy --model "$M" --data "$M/test.jsonl" --n 50 --set block_size=32)
"$ZP" "${common[@]}" --budgets full,46b --min-accuracy 0.9 || exit 1
"$ZP" "${common[@]}" --budgets 40b --min-accuracy 0.3 || exit 1

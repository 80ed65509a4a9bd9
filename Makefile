# One command sets up and runs each job; everything lands in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch (a bare `torch` pulls a multi-GB CUDA build on Linux).
# GPU users: make install TORCH='torch'
TORCH ?= torch==2.13.0
MINUTES ?= 1

.PHONY: install demo demo-midi test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e . -r requirements-dev.txt
	touch $@

# The demo fine-tunes the shipped starter model (English, from tiny-shakespeare) on the fables for a minute:
# from scratch a minute writes letters, from the starter words of the fables (README, "Two commands").
demo: install
	$(BIN)/chargen train corpora/fables.txt --init-from starter --minutes $(MINUTES) --run-name demo-$$(date +%Y%m%d-%H%M%S)
	$(BIN)/chargen sample --len 500 --temperature 0.7 --top-p 0.9 --prime "The "

demo-midi: install
	$(BIN)/chargen train corpora/midi-basics --size small --minutes $(MINUTES) --transpose -3..3 --run-name demo-midi-$$(date +%Y%m%d-%H%M%S)
	$(BIN)/chargen sample --len 1500 --temperature 0.9 -o demo.mid

test: install
	@scripts/ensure_chromium.sh
	@scripts/ensure_postgres.sh
	@scripts/ensure_fluidsynth.sh
	$(BIN)/ruff check chargen tests benchmarks scripts
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist worksteal --cov=chargen --cov-report=term:skip-covered

# The quick loop before a commit: everything but the tests of real processes, servers, the browser and
# PostgreSQL (marked slow / postgres), without coverage.
test-fast: install
	$(BIN)/ruff check chargen tests benchmarks scripts
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 -m "not slow and not postgres"

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

# Developer entry points. `make run` and `make test` install what they need.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help install build run test test-rust test-python lint fmt bench fuzz proto clean

help:
	@echo "make run    - install, build and run the gateway with examples/aimesh.toml (offline simulators)"
	@echo "make test   - install, build, lint and run every test suite"
	@echo "make bench  - run the benchmarks, print a table, write bench-results/results.json"
	@echo "make fuzz   - atheris: ten minutes on the frame decoders, ten on the HTTP entry points"
	@echo "make lint   - cargo fmt --check, clippy, ruff, mypy, generated-code check"
	@echo "make fmt    - format Rust and Python"

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Python dependencies (re-run when pyproject.toml changes).
$(VENV)/.deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "maturin>=1.7,<2"
	# The venv's maturin builds the editable install (no isolated build env).
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pip install -q -e ".[dev]" --no-build-isolation
	touch $@

install: $(VENV)/.deps build

# The native module, optimised, into the venv (incremental).
build: $(VENV)/.deps
	. $(BIN)/activate && maturin develop --release -q

run: install
	AIMESH_BIND_ADDR=$${AIMESH_BIND_ADDR:-127.0.0.1:9000} \
	AIMESH_DATA_DIR=$${AIMESH_DATA_DIR:-.aimesh-data} \
	$(BIN)/aimesh serve --config examples/aimesh.toml

test: install lint test-rust test-python

test-rust:
	cargo test --quiet

test-python:
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: build
	cargo fmt --check
	cargo clippy --quiet --all-targets -- -D warnings
	$(BIN)/ruff check python tests benches scripts fuzz
	$(BIN)/ruff format --check python tests benches scripts fuzz
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest aimesh._native --allowlist scripts/stubtest-allowlist.txt
	$(BIN)/python scripts/gen_proto.py --check

fmt: $(VENV)/.deps
	cargo fmt
	$(BIN)/ruff format python tests benches scripts fuzz
	$(BIN)/ruff check --fix python tests benches scripts fuzz

bench: install
	$(BIN)/python benches/run.py

# Ten minutes of atheris on the frame decoders, seeded with the golden frames.
fuzz: install
	mkdir -p .fuzz-corpus && cp proto/testdata/*.bin .fuzz-corpus/
	$(BIN)/python fuzz/fuzz_frames.py -max_total_time=600 -max_len=65536 .fuzz-corpus
	$(BIN)/python fuzz/fuzz_http.py -write_seeds=.fuzz-corpus/http && $(BIN)/python fuzz/fuzz_http.py -max_total_time=600 -max_len=65536 .fuzz-corpus/http

proto: $(VENV)/.deps
	$(BIN)/python scripts/gen_proto.py
	$(BIN)/python scripts/gen_golden.py

clean:
	rm -rf target $(VENV) bench-results .fuzz-corpus .pytest_cache .mypy_cache .ruff_cache

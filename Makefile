# Two entry points for a fresh machine (see README):
#   make demo   set up, train the default preset on the bundled corpus, export, generate
#   make test   set up, lint (ruff, ESLint), type-check (mypy), run the tests (node, pytest)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    ?= runs/demo
EXPORT ?= exported/demo

.PHONY: setup demo test lint web-test bench site clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# onnxruntime-web for the browser site, pinned by web/package-lock.json.
web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error

demo: setup
	@if [ -f $(RUN)/run.json ] && grep -q '"status": "finished"' $(RUN)/run.json; then \
		echo "$(RUN) is already trained (delete it to train again)"; \
	elif [ -f $(RUN)/checkpoints/last.npz ]; then \
		$(BIN)/toolkit train --resume $(RUN); \
	else \
		$(BIN)/toolkit train --out $(RUN); \
	fi
	$(BIN)/toolkit export $(RUN) --format all --quantize all --out $(EXPORT) --force
	@echo; echo "=== sample 1: onnx, prompt 'ROMEO:', temperature 0.5 ==="
	$(BIN)/toolkit generate $(EXPORT) --runtime onnx --prompt "ROMEO:" --temperature 0.5 --length 400 --seed 1
	@echo; echo "=== sample 2: tflite int8, prompt 'JULIET:', temperature 1.0 ==="
	$(BIN)/toolkit generate $(EXPORT) --runtime tflite --variant int8 --prompt "JULIET:" --temperature 1.0 --length 400 --seed 2

lint: setup
	$(BIN)/ruff check toolkit tests benchmarks
	$(BIN)/ruff format --check toolkit tests benchmarks
	$(BIN)/mypy toolkit

web-test: web/node_modules/.package-lock.json
	cd web && npm run lint --silent && npm test --silent

test: lint web-test
	$(BIN)/python -m pytest -q -n 2

# The committed model as a web page: http://127.0.0.1:8000/
site: setup web/node_modules/.package-lock.json
	$(BIN)/toolkit web --out site --force --serve

bench: setup
	$(BIN)/toolkit bench runs/shakespeare --model exported/shakespeare

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache web/node_modules site

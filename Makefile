# Two commands: `make demo` (the main job on generated data) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN := runs/demo

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[plots]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,plots]'
	touch $@

# The main job on generated data: CICIDS2017-style CSV -> Parquet -> LSTM-AE (stage 1),
# latent classifier (stage 2) -> detector artifact -> evaluation report -> the artifact
# scores held-back flows (another seed, never seen in training). Re-running resumes.
DEMO_FLOWS ?= 100000
DEMO_TRAIN := --data=$(RUN)/parquet --workdir=$(RUN) --batch_size=512 --learning_rate=0.003 --log_every_steps=100
demo: $(VENV)/.demo-installed
	$(BIN)/python launch/synth.py --output=$(RUN)/raw/synthetic.csv --style=cicids2017 --flows=$(DEMO_FLOWS)
	$(BIN)/python launch/convert.py --input=$(RUN)/raw/synthetic.csv --output=$(RUN)/parquet
	$(BIN)/python launch/train.py $(DEMO_TRAIN) --stage=1
	$(BIN)/python launch/train.py $(DEMO_TRAIN) --stage=2
	$(BIN)/python launch/export.py --workdir=$(RUN) --output=$(RUN)/scorer
	$(BIN)/python launch/evaluate.py --workdir=$(RUN) --data=$(RUN)/parquet --output=$(RUN)/report.json
	$(BIN)/python launch/synth.py --output=$(RUN)/held_back/flows.csv --style=cicids2017 --flows=20000 --seed=1
	$(BIN)/python launch/score.py --model=$(RUN)/scorer --input=$(RUN)/held_back/flows.csv --output=$(RUN)/alerts.parquet

test: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q

lint: $(VENV)/.test-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) runs

# Set-up and entry points. `make demo` and `make test` work on a fresh machine: they create the
# virtual environment when it is missing and install seqpipe into it (editable).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEPS_KEY := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
DEPS_STAMP := $(VENV)/.deps-$(DEPS_KEY)
DEMO_DIR := demo_data
DEMO_RUN := runs/demo
DEMO_CKPT := $(DEMO_RUN)/lightning_logs/version_0/checkpoints/best.ckpt

.PHONY: install test test-slow demo clean

$(DEPS_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.deps-* && touch $@

# The editable install must point at this checkout (a cached venv may have served another clone).
install: $(DEPS_STAMP)
	@$(BIN)/python -c "import seqpipe, pathlib, sys; sys.exit(pathlib.Path(seqpipe.__file__).parent != pathlib.Path('seqpipe').resolve())" 2>/dev/null \
		|| $(BIN)/python -m pip install -q --no-deps -e .

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

demo: install
	rm -rf $(DEMO_DIR) $(DEMO_RUN)
	$(BIN)/python -m seqpipe.data.synthetic dna-motifs --out $(DEMO_DIR)/dna --seed 0 --n-train 1200 --length 100
	$(BIN)/seqpipe fit --config configs/demo.yaml --data.train $(DEMO_DIR)/dna/train \
		--data.test $(DEMO_DIR)/dna/test --trainer.default_root_dir $(DEMO_RUN)
	$(BIN)/seqpipe test --config configs/demo.yaml --data.train $(DEMO_DIR)/dna/train \
		--data.test $(DEMO_DIR)/dna/test --ckpt_path $(DEMO_CKPT) \
		--trainer.default_root_dir $(DEMO_RUN)/test
	$(BIN)/seqpipe predict --config configs/demo.yaml --data.predict $(DEMO_DIR)/dna/unlabelled.fasta \
		--ckpt_path $(DEMO_CKPT) --trainer.default_root_dir $(DEMO_RUN)/predict \
		--prediction.path $(DEMO_RUN)/predictions.csv
	@echo "first predictions ($(DEMO_RUN)/predictions.csv):" && head -n 6 $(DEMO_RUN)/predictions.csv

clean:
	rm -rf $(DEMO_DIR) runs

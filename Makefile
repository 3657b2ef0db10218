# Set-up and entry points. `make demo` and `make test` work on a fresh machine: they create the
# virtual environment when it is missing and install seqpipe into it (editable), with the exact versions
# of constraints.txt (the resolved set for CPython 3.11 on Linux x86-64; `make lock` regenerates it).
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu   CPU-only torch (no CUDA wheels)
#   make install CONSTRAINTS=                                       another Python: pyproject.toml's ranges
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints.txt
TORCH_INDEX ?=
# the venv is rebuilt when the dependency list, the lock or the torch index changes
DEPS_KEY := $(shell { cat pyproject.toml $(CONSTRAINTS); echo '$(TORCH_INDEX)'; } | sha1sum | cut -c1-12)
DEPS_STAMP := $(VENV)/.deps-$(DEPS_KEY)
PIP_CONSTRAINTS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
LOCK_VENV ?= /tmp/seqpipe-lock-venv
DEMO_DIR := demo_data
DEMO_RUN := runs/demo

.PHONY: install test test-slow demo lock clean

$(DEPS_STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifneq ($(TORCH_INDEX),)
	$(BIN)/python -m pip install -q --no-deps --index-url $(TORCH_INDEX) $(PIP_CONSTRAINTS) torch torchaudio
endif
	$(BIN)/python -m pip install -q $(PIP_CONSTRAINTS) -e '.[dev]'
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
	$(BIN)/seqpipe synthetic dna-motifs --out $(DEMO_DIR)/dna --seed 0 --n_train 1200 --length 100
	$(BIN)/seqpipe fit --config configs/demo.yaml --data.train $(DEMO_DIR)/dna/train \
		--data.test $(DEMO_DIR)/dna/test --trainer.default_root_dir $(DEMO_RUN)
	$(BIN)/seqpipe test --config configs/demo.yaml --data.train $(DEMO_DIR)/dna/train \
		--data.test $(DEMO_DIR)/dna/test --ckpt_path best --trainer.default_root_dir $(DEMO_RUN)
	$(BIN)/seqpipe predict --config configs/demo.yaml --data.predict $(DEMO_DIR)/dna/unlabelled.fasta \
		--ckpt_path best --trainer.default_root_dir $(DEMO_RUN) --prediction.path $(DEMO_RUN)/predictions.csv
	@echo "first predictions ($(DEMO_RUN)/predictions.csv):" && head -n 6 $(DEMO_RUN)/predictions.csv

# Regenerate constraints.txt: install into a fresh venv without constraints and freeze what resolved.
lock:
	@$(PYTHON) -c "import platform, sys; sys.exit(sys.version_info[:2] != (3, 11) or platform.system() != 'Linux' or platform.machine() != 'x86_64')" \
		|| { echo "make lock: the lock is for CPython 3.11 on Linux x86-64; PYTHON=$(PYTHON) is not"; exit 2; }
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | sort -f; } > constraints.txt.partial
	mv constraints.txt.partial constraints.txt && rm -rf $(LOCK_VENV)
	@echo "constraints.txt: $$(grep -c '==' constraints.txt) pins"

clean:
	rm -rf $(DEMO_DIR) runs

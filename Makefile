# ecg-forecast: `make demo` runs the main job end to end, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
# Raw MIT-BIH: $MITBIH_DIR, else data/mitdb if it has records, else the shared copy beside the repo,
# else data/mitdb (prepare_mitbih.py then downloads it from PhysioNet).
MITBIH_DIR ?= $(if $(wildcard data/mitdb/*.hea),data/mitdb,$(if $(wildcard ../shared/data/mitdb/*.hea),../shared/data/mitdb,data/mitdb))
export MITBIH_DIR

.PHONY: setup prepare vqvae demo test clean-results

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

prepare: setup
	$(PY) prepare_mitbih.py

# A short VQ-VAE training (2 epochs of 60 steps) so the whole pipeline runs in a few minutes.
vqvae: prepare
	$(PY) vqvae_train.py --epochs 2 --max-steps 60
	$(PY) vqvae_eval.py --split validation

demo: vqvae

test: setup
	$(PY) -m pytest -q tests

clean-results:
	rm -rf results checkpoints

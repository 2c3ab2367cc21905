# ecg-forecast: `make demo` runs the main job end to end, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
# A path from the environment with its leading ~/ made $HOME/, as paths.py expands it: recipes quote paths, and
# the shell expands no ~ inside quotes.
home = $(if $(filter ~/%,$(firstword $(1))),$(subst ~/,$(HOME)/,$(1)),$(1))
# Raw MIT-BIH: $MITBIH_DIR, else data/mitdb if it has records, else the shared copy beside the repo,
# else data/mitdb (prepare_mitbih.py then downloads it from PhysioNet). Set but empty is unset, as in paths.py.
override MITBIH_DIR := $(call home,$(or $(MITBIH_DIR),$(if $(wildcard data/mitdb/*.hea),data/mitdb,$(if \
	$(wildcard ../shared/data/mitdb/*.hea),../shared/data/mitdb,data/mitdb))))
export MITBIH_DIR
# Where the trainers keep checkpoints, preparation writes its tensors and runs their results: $ECG_CHECKPOINTS_DIR,
# $ECG_PREPARED_DIR and $ECG_RESULTS_DIR when set, as paths.py reads them, so that the targets below find what the
# scripts wrote. Recipes quote these paths, and `exists` escapes spaces for make's wildcard (a folder named
# "my data" is two names to it).
CHECKPOINTS := $(call home,$(or $(ECG_CHECKPOINTS_DIR),checkpoints))
PREPARED := $(call home,$(or $(ECG_PREPARED_DIR),data/prepared))
RESULTS := $(call home,$(or $(ECG_RESULTS_DIR),results))
space := $(subst ,, )
exists = $(wildcard $(subst $(space),\$(space),$(1)))

.PHONY: setup prepare forecast demo test clean-results clean-cache pretrained pretrained-sde pretrained-report

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

prepare: setup
	$(PY) prepare_mitbih.py

# The fast path: the shipped Transformer (pretrained/forecaster.pt) forecasts record 100 from 60 s; no training,
# and no network once MIT-BIH is there (without it, the first step downloads it, as `make prepare` would).
forecast: setup
	$(PY) prepare_mitbih.py --fetch-only
	$(PY) forecast.py --record "$(MITBIH_DIR)/100" --start 60

# The whole pipeline in a few minutes: short trainings (far from the documented recipe; no augmented
# copies), then a forecast plot of record 100 and the evaluation report against every baseline.
newest = "$$(ls -t "$(or $(2),$(CHECKPOINTS))"/$(1)-*/best.pt 2>/dev/null | head -1 | grep . || echo "$(or $(2),$(CHECKPOINTS))/$(1)-*/best.pt")"
demo: forecast prepare
	$(PY) vqvae_train.py --epochs 2 --max-steps 60
	$(PY) vqvae_eval.py --split validation
	$(PY) transformer_train.py --epochs 2 --max-steps 60 --augment-copies 0
	$(PY) forecast.py --checkpoint $(call newest,transformer) --record "$(MITBIH_DIR)/100" --start 60
	$(PY) evaluate.py --model $(call newest,transformer) baselines --split test --max-windows-per-record 10 --samples 50

# Retrain a shipped model from scratch on the training patients, pack it into pretrained/ with its reference
# forecasts, and write the model card's DS2 report. `pretrained` is the default recipe (about 44 min of training
# and encoding on one thread, then the report): the VQ-VAE of config_vqvae.json, then the beat-drafted Transformer
# of config_transformer.json.
# `pretrained-sde` is the latent SDE's (about 35 min of training on one thread, then the report): the VQ-VAE of
# config_vqvae_sde.json, the latent SDE of config_sde.json, then its fine-tuning on its forecasts' CRPS.
PRE := $(CHECKPOINTS)/pretrained
pretrained: prepare
	$(PY) vqvae_train.py --checkpoints "$(PRE)"
	$(PY) transformer_train.py --checkpoints "$(PRE)" --vqvae $(call newest,vqvae,$(PRE))
	$(PY) pretrained.py --checkpoint $(call newest,transformer,$(PRE))
	$(MAKE) pretrained-report

pretrained-sde: prepare
	$(PY) vqvae_train.py --config config_vqvae_sde.json --checkpoints "$(PRE)"
	$(PY) latent_sde_train.py --checkpoints "$(PRE)" --vqvae $(call newest,vqvae,$(PRE))
	$(PY) latent_sde_train.py --checkpoints "$(PRE)" --crps-from $(call newest,latent_sde,$(PRE))
	$(PY) pretrained.py --checkpoint $(call newest,latent_sde_crps,$(PRE))
	$(MAKE) pretrained-report

# The model card's run (40 windows per record), then the README's Results table's (10 per record, 100 paths); both
# run before either is copied into pretrained/, so that neither names its commit -dirty for the other's copy.
SHIPPED := pretrained $(if $(wildcard pretrained/latent_sde.pt),pretrained_sde) baselines --split test --samples 100
newest_report = "$$(ls -td "$(RESULTS)/pretrained/$(1)"/evaluate-*/ | head -1)"
pretrained-report: setup $(if $(call exists,$(PREPARED)/test.pt),,prepare)
	$(PY) evaluate.py --model $(SHIPPED) --max-windows-per-record 40 --results "$(RESULTS)/pretrained/card"
	$(PY) evaluate.py --model $(SHIPPED) --max-windows-per-record 10 --results "$(RESULTS)/pretrained/readme"
	rm -rf pretrained/evaluation && cp -r $(call newest_report,card) pretrained/evaluation
	rm -rf pretrained/evaluation-readme && cp -r $(call newest_report,readme) pretrained/evaluation-readme

test: setup
	$(PY) -m pytest -q tests

# The repository's own results/ and checkpoints/ only: never a folder that $ECG_RESULTS_DIR or
# $ECG_CHECKPOINTS_DIR names (it may hold more than these runs).
clean-results:
	rm -rf results checkpoints

# The forecasters' encodings of the prepared windows (recomputed when needed; see paths.cache_dir).
clean-cache:
	rm -rf "$(call home,$(or $(ECG_CACHE_DIR),$(PREPARED)))/encodings"

# Benchmarks on this machine (scripts in bench/ print one JSON line each), tabulated in bench/results.md.
.PHONY: bench
bench: setup $(if $(call exists,$(PREPARED)/train.pt),,prepare)
	rm -f bench/results.jsonl
	$(PY) bench/prepare_time.py >> bench/results.jsonl
	$(PY) bench/train_speed.py vqvae >> bench/results.jsonl
	$(PY) bench/train_speed.py transformer >> bench/results.jsonl
	$(PY) bench/train_speed.py latent_sde >> bench/results.jsonl
	$(PY) bench/forecast_latency.py >> bench/results.jsonl
	$(PY) bench/sde_latency.py >> bench/results.jsonl
	$(PY) bench/rhythm_bound.py >> bench/results.jsonl
	$(PY) bench/past_only.py >> bench/results.jsonl
	$(PY) bench/report.py bench/results.jsonl bench/results.md

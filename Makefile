# The project's two entry points (see README.md). Each creates or updates the venv itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo bench test lint format venv

# Re-runs whenever pyproject.toml changes. torch/torchvision are pinned to the pair this kind of machine serves
# from local disk (a newer pip-resolved torch would be a multi-GB download).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[assets,train,dev]"
	@# Fashion-MNIST (real images, offline) comes from Debian; elsewhere pass its folder (see lang2net.data)
	test -d /usr/share/datasets/fashion-mnist || apt-get install -y -q dataset-fashion-mnist \
		|| echo "note: could not install dataset-fashion-mnist; Fashion-MNIST runs need its folder"
	@# Emoji benchmark: Unicode CLDR names/keywords from Debian; Twemoji + Noto PNGs and OpenMoji + Fluent SVGs
	@# (rendered to 64 px PNGs) from npm, once, into a cache
	test -d /usr/share/unicode/cldr/common/annotations || apt-get install -y -q unicode-cldr-core \
		|| echo "note: could not install unicode-cldr-core; emoji runs need it"
	$(PY) -m lang2net.data.emoji fetch || echo "note: could not fetch the emoji images (npm); emoji runs need them"
	touch $@

venv: $(VENV)/.installed

# Main job: the published emoji generator writes classifiers for the 215 classes it never saw, from their names and
# keywords, measured on their icons next to the classic baselines (ARGS='--describe "name: text"' for your own).
demo: venv
	$(PY) -m lang2net.apps.cli demo $(ARGS)

# The injection benchmark on small backbones (CPU here; pass ARGS="--device cuda ..." on a GPU).
bench: venv
	$(PY) -m lang2net.apps.bench $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q $(ARGS)

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

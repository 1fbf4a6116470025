# CAP companion. `make book` and `make test` are all a newcomer needs; both set up .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
GEN := book/_generated
PRESETS := flowers102 resisc45 dtd eurosat cub fgvc_aircraft
SIM_PAGES := $(PRESETS:%=$(GEN)/sim/%.ipynb)
LIBRARY := $(shell find cap -name '*.py' -o -name '*.yml' -o -name '*.txt') pyproject.toml
BOOK_SOURCES := $(wildcard book/*.md book/*.yml)
HTML := book/_build/html/index.html

.PHONY: help setup book sim-pages test clean clean-book
.DELETE_ON_ERROR:

help:
	@echo "make book   install into .venv, run the default study, build book/_build/html"
	@echo "make test   install into .venv and run the test suite"
	@echo "make clean  remove generated notebooks, records and the built site (keeps .venv)"

# Installs once; reinstalls when the package metadata or the pins change.
setup: $(STAMP)
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[book,test]'
	touch $@

# One papermill execution per simulator preset; redone only when the notebook or library changes.
$(GEN)/sim/%.ipynb: notebooks/sim_zero_shot.md $(LIBRARY) | $(STAMP)
	$(PY) -m cap notebook run $< $@ -p preset $* -p seed 0 -p record_dir $(GEN)/records

$(GEN)/status.ipynb: notebooks/status.md $(SIM_PAGES) | $(STAMP)
	$(PY) -m cap notebook run $< $@ -p generated_dir $(GEN)

sim-pages: $(SIM_PAGES)

$(HTML): $(GEN)/status.ipynb $(SIM_PAGES) $(BOOK_SOURCES) | $(STAMP)
	$(VENV)/bin/jupyter-book build book --warningiserror --keep-going

book: $(HTML)
	@echo "Open book/_build/html/index.html"

test: $(STAMP)
	$(PY) -m pytest

clean-book:
	rm -rf book/_build

clean: clean-book
	rm -rf $(GEN)

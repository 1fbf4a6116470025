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
BOOK_SOURCES := $(wildcard book/*.md book/*.yml book/_static/*)
HTML := book/_build/html/index.html
RECORDS := $(GEN)/records
# Result pages: one notebook each, or one template notebook per kind of page.
PAGES := claims table1 table4 figure1_2 figure8_alignment figure9_calibration appendix divergences
ABLATION_PAGES := table2 table3
SWEEP_PAGES := figure6_k figure7_tau figure10_margin_scale figure11_unlabelled_fraction
PAGE_NOTEBOOKS := $(foreach p,$(PAGES) $(ABLATION_PAGES) $(SWEEP_PAGES),$(GEN)/pages/$(p).ipynb)
SIM_RUNS := $(GEN)/sim-runs.done
PARADIGMS := ssl ul trzsl
# The book's training-run pages: one executed run notebook per dataset and paradigm of the sim profile.
SIM_RUN_PAGES := $(foreach d,$(PRESETS),$(foreach p,$(PARADIGMS),$(GEN)/runs/sim/$(d)-$(p).ipynb))
FIGURES := $(GEN)/figures.ipynb
PAPER_RECORDS := $(wildcard $(RECORDS)/paper/*.json)
CHROMIUM_STAMP := $(VENV)/.chromium-stamp
SLURM_STAMP := $(VENV)/.slurm-stamp

# make runs: PROFILE (sim or paper), MATRIX, DATASET, PARADIGM, METHOD, SEEDS="1 2 3", FORCE=1, SET="epochs=2";
# EXECUTOR=inprocess (default) | local GPUS=0,1,2,3 | slurm SLURM_OPTIONS=slurm.yml SLURM="partition=gpu time=90"
# DETACH=1 (slurm: return once submitted); STATUS=1 (show progress, run nothing); WATCH=1 (follow progress)
PROFILE ?= sim

.PHONY: help setup book runs sim-pages test clean clean-book clean-paper-records
.DELETE_ON_ERROR:

help:
	@echo "make book   install into .venv, run the default study, build book/_build/html"
	@echo "            (STRICT=1: exit non-zero if a run or page failed; the site is built either way)"
	@echo "make test   install into .venv and run the test suite"
	@echo "make runs   run experiment matrices: make runs PROFILE=paper MATRIX=table1 DATASET=eurosat PARADIGM=ul METHOD=cap SEEDS=\"1 2 3\""
	@echo "make clean  remove generated notebooks, simulator records and the built site (keeps .venv and real-data records)"

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

# Every matrix in the simulator. Finished runs are skipped; failed runs are recorded and the
# pages mark them, so the book still builds.
$(SIM_RUNS): $(LIBRARY) notebooks/run.md | $(STAMP)
	$(PY) -m cap runs --profile sim || echo "some simulator runs have no result: the pages mark them"
	touch $@

# The verdicts of every claim, added to the committed history book/verdicts.json when a verdict,
# the rule or the code changed (the claims page shows its changelog).
VERDICTS := $(GEN)/verdicts.done
$(VERDICTS): $(SIM_RUNS) $(PAPER_RECORDS) $(LIBRARY) | $(STAMP)
	$(PY) -m cap book verdicts --records $(RECORDS) --history book/verdicts.json
	touch $@

runs: | $(STAMP)
	$(PY) -m cap runs --profile $(PROFILE) $(if $(MATRIX),--matrix $(MATRIX)) $(if $(DATASET),--dataset $(DATASET)) \
		$(if $(PARADIGM),--paradigm $(PARADIGM)) $(if $(METHOD),--method $(METHOD)) $(if $(SEEDS),--seeds $(SEEDS)) \
		$(if $(FORCE),--force) $(if $(SET),--set $(SET)) $(if $(EXECUTOR),--executor $(EXECUTOR)) \
		$(if $(GPUS),--gpus $(GPUS)) $(if $(SLURM_OPTIONS),--slurm-options $(SLURM_OPTIONS)) \
		$(if $(SLURM),--slurm $(SLURM)) $(if $(DETACH),--detach) $(if $(STATUS),--status) $(if $(WATCH),--watch)

# A page notebook that fails leaves a stand-in page saying so, and the book still builds.
$(PAGES:%=$(GEN)/pages/%.ipynb): $(GEN)/pages/%.ipynb: notebooks/pages/%.md $(SIM_RUNS) $(PAPER_RECORDS) | $(STAMP)
	$(PY) -m cap notebook run --stand-in-on-failure $< $@ -p records_root $(RECORDS)

$(GEN)/pages/claims.ipynb: $(VERDICTS)

$(ABLATION_PAGES:%=$(GEN)/pages/%.ipynb): $(GEN)/pages/%.ipynb: notebooks/pages/ablation.md $(SIM_RUNS) $(PAPER_RECORDS) | $(STAMP)
	$(PY) -m cap notebook run --stand-in-on-failure $< $@ -p matrix $* -p records_root $(RECORDS)

$(SWEEP_PAGES:%=$(GEN)/pages/%.ipynb): $(GEN)/pages/%.ipynb: notebooks/pages/sweep.md $(SIM_RUNS) $(PAPER_RECORDS) | $(STAMP)
	$(PY) -m cap notebook run --stand-in-on-failure $< $@ -p matrix $* -p records_root $(RECORDS)

# `make runs` leaves each group's executed run notebook (re-executed only for groups with runs to
# do); this re-executes it (its records exist, so nothing trains) when it is missing or older than
# notebooks/run.md or the library (matrix labels, page code).
$(SIM_RUN_PAGES): $(GEN)/runs/sim/%.ipynb: notebooks/run.md $(LIBRARY) | $(SIM_RUNS)
	$(PY) -m cap notebook run --stand-in-on-failure $< $@ -p profile sim -p dataset $(word 1,$(subst -, ,$*)) \
		-p paradigm $(word 2,$(subst -, ,$*)) -p records_dir $(RECORDS)/sim

# The figures page (every figure's thumbnail), and the landing page's headline figure and claims.
$(FIGURES): notebooks/figures.md $(PAGE_NOTEBOOKS) | $(STAMP)
	$(PY) -m cap notebook run $< $@ -p generated_dir $(GEN)

$(GEN)/status.ipynb: notebooks/status.md $(SIM_PAGES) $(PAGE_NOTEBOOKS) $(SIM_RUN_PAGES) $(FIGURES) | $(STAMP)
	$(PY) -m cap notebook run $< $@ -p generated_dir $(GEN)

sim-pages: $(SIM_PAGES)

$(HTML): $(GEN)/status.ipynb $(SIM_PAGES) $(PAGE_NOTEBOOKS) $(SIM_RUN_PAGES) $(FIGURES) $(BOOK_SOURCES) | $(STAMP)
	rm -rf book/_build/html/records  # Sphinx adds the extra path's files but never removes old ones
	$(VENV)/bin/jupyter-book build book --warningiserror --keep-going

# The runs use both cores themselves; the page notebooks after them run two at a time. Failed runs
# and pages do not stop the build; the summary at the end lists them (STRICT=1: and exits 1).
book: | $(STAMP)
	$(MAKE) $(SIM_RUNS)
	$(MAKE) -j2 $(SIM_PAGES) $(PAGE_NOTEBOOKS) $(SIM_RUN_PAGES)
	$(MAKE) $(HTML)
	@echo "Open book/_build/html/index.html"
	$(PY) -m cap book summary --generated $(GEN) $(if $(STRICT),--strict)

# The site test opens the built pages in Debian's headless Chromium.
$(CHROMIUM_STAMP): | $(STAMP)
	command -v chromium >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } \
		|| { echo "could not install Debian's chromium (needs apt-get as root): install it and rerun"; exit 1; }
	touch $@

# The executor tests bring up a real single-node Slurm from Debian's slurm-wlm and munge.
$(SLURM_STAMP): | $(STAMP)
	command -v slurmctld >/dev/null && command -v munged >/dev/null || { apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge; } \
		|| { echo "could not install Debian's slurm-wlm and munge (needs apt-get as root): install them and rerun"; exit 1; }
	touch $@

test: $(STAMP) $(CHROMIUM_STAMP) $(SLURM_STAMP)
	$(PY) -m pytest

clean-book:
	rm -rf book/_build

# Real-data records (records/paper) cost GPU hours: only `make clean-paper-records` deletes them.
clean: clean-book
	find $(GEN) -mindepth 1 -maxdepth 1 ! -name records -exec rm -rf {} + 2>/dev/null || true
	find $(RECORDS) -mindepth 1 -maxdepth 1 ! -name paper -exec rm -rf {} + 2>/dev/null || true

clean-paper-records:
	rm -rf $(RECORDS)/paper

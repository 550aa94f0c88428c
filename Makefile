# One command each: `make run` starts the bot, `make test` runs the tests,
# `make check` proves the ComfyUI server works. Each sets up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: run check smoke test bench
run: $(VENV)/.installed
	$(PY) bot.py

check: $(VENV)/.installed
	$(PY) bot.py check

smoke: $(VENV)/.installed
	$(PY) bot.py check --smoke

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) bench/engine_latency.py
	$(PY) bench/bot_latency.py
	$(PY) bench/pool_makespan.py
	$(PY) bench/input_latency.py

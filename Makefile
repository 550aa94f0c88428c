# One command each: `make run` starts the bot, `make test` runs the tests,
# `make check` proves the ComfyUI server works. Each sets up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: run check smoke test bench browser postgres
run: $(VENV)/.installed
	$(PY) bot.py

check: $(VENV)/.installed
	$(PY) bot.py check

smoke: $(VENV)/.installed
	$(PY) bot.py check --smoke

test: $(VENV)/.installed browser postgres
	$(PY) -m pytest

# The browser tests (tests/web/test_web_browser.py) drive Debian's Chromium: installed once, when missing.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	fi

# The store's tests start a throwaway PostgreSQL server (tests/postgres.py) from Debian's package: installed once, when missing.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; \
	fi

bench: $(VENV)/.installed
	$(PY) bench/engine_latency.py
	$(PY) bench/bot_latency.py
	$(PY) bench/pool_makespan.py
	$(PY) bench/input_latency.py
	$(PY) bench/gallery.py
	$(PY) bench/eta.py
	$(PY) bench/metrics.py
	$(PY) bench/runpod_overflow.py
	$(PY) bench/logs.py
	$(PY) bench/cluster.py
	$(PY) bench/s3.py
	$(PY) bench/workflow_binding.py
	$(PY) bench/credits.py
	$(PY) bench/workflow_convert.py
	$(PY) bench/moderation.py
	$(PY) bench/shares.py

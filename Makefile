# Meridian: `make demo` runs the whole thing, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint format bench clean image wheelhouse system-packages

# `make image`: the control-plane image, named as the chart's default controlPlane.image.
APP_VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$$/\1/p' charts/meridian/Chart.yaml)
IMAGE ?= localhost/meridian/controlplane:$(APP_VERSION)
PODMAN ?= podman
# Empty: the Dockerfile's default (a slim CPython image). Any image with python3 and its venv module.
BASE_IMAGE ?=
# 1: install only from wheelhouse/ (`make wheelhouse` first), for builds without network.
PIP_NO_INDEX ?= 0
# More `podman build` flags, e.g. --network none.
PODMAN_BUILD_FLAGS ?=
# Debian packages the tests need, installed by `make test` when missing and run as root: podman, runc
# and mmdebstrap for the image test (tests/image), Debian's headless browser and its driver for the
# console test (tests/e2e/test_console.py); nothing downloads a browser.
SYSTEM_PACKAGES := podman runc mmdebstrap chromium chromium-driver libpcre3

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# The image tests build a container (~40 s of a full core and ~1.4 GB written): they run on their
# own after the rest, so they never share the two cores with end-to-end tests' bounded waits.
test: $(STAMP) system-packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -n 2 --dist loadfile -p no:cacheprovider --ignore=tests/image
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/image

lint: $(STAMP)
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .

# The benchmarks that fit in ~10 minutes (bench/suite.py); results in bench/results/<time>/.
# BEFORE=DIR: another checkout run interleaved with this one where a benchmark can (before/after).
bench: $(STAMP)
	$(PY) -m bench.suite $(if $(BEFORE),--compare-with $(BEFORE))

image:
	$(PODMAN) build $(PODMAN_BUILD_FLAGS) $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
		--build-arg PIP_NO_INDEX=$(or $(PIP_NO_INDEX),0) -t $(IMAGE) .

# Every wheel the image needs (setuptools too: it builds Meridian itself), for PIP_NO_INDEX=1.
# Made by $(PYTHON)'s pip: the wheels fit that Python's version, so pick a base image that has it.
wheelhouse:
	$(PYTHON) -m pip wheel --quiet --wheel-dir wheelhouse . setuptools

# Idempotent and fast once installed: dpkg-query only; apt-get runs only for what is missing.
system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -qx 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $$missing (for the image and console tests)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else \
		echo "note: the tests need $$missing (apt-get install $$missing); without them the image or console test is skipped" >&2; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache wheelhouse

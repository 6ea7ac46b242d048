# The README's two commands. Both create (or reuse) .venv, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pip on this project's machines is capped at these (a local CUDA build); override elsewhere.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.featx-installed
# The demo runs all 2,624 ELPV images (about 25 s of extraction on 2 CPU cores with ONNX
# Runtime); `make demo DEMO_SAMPLES=480` takes a stratified subset instead.
DEMO_SAMPLES ?= all
DEMO_VIEWS ?= 2
DEMO_OUT ?= runs/demo
ifeq ($(DEMO_SAMPLES),all)
SUBSET :=
DEMO_DATA := elpv
else
SUBSET := --subset $(DEMO_SAMPLES)
DEMO_DATA := elpv-sub$(DEMO_SAMPLES)
endif
DEMO_STORE := $(DEMO_OUT)/stores/$(DEMO_DATA)_efficientnet_lite0_224px_mildx$(DEMO_VIEWS).h5
DEMO_HEAD := $(DEMO_OUT)/heads/$(basename $(notdir $(DEMO_STORE))).linear.safetensors

.PHONY: demo test wheel-smoke venv browser clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(MAKE) --no-print-directory browser
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/featx scan elpv
	$(BIN)/featx backbones --family packaged
	$(BIN)/featx extract elpv --backbone efficientnet_lite0 $(SUBSET) \
		--views $(DEMO_VIEWS) --aug mild --out $(DEMO_OUT)/stores
	$(BIN)/featx info $(DEMO_STORE)
	$(BIN)/featx train-head $(DEMO_STORE) --kind linear --out $(DEMO_OUT)/heads
	$(BIN)/featx predict $(DEMO_STORE) --head $(DEMO_HEAD) --out $(DEMO_OUT)/predictions.csv
	head -4 $(DEMO_OUT)/predictions.csv
	$(BIN)/featx compare elpv $(SUBSET) -b efficientnet_lite0 -b efficientnet_lite1 \
		-b efficientnet_lite2 --kind linear --kind logreg --out $(DEMO_OUT)/compare
	@echo "open $(DEMO_OUT)/compare/report.html to compare the backbones"

# One pytest worker per core (tests and their subprocesses run torch on one thread, tests/conftest.py):
# much of the suite waits on interpreter starts, which one worker leaves the other core idle for.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The built wheel, installed alone into a clean venv, runs the main commands (CI runs it after test).
wheel-smoke: $(STAMP)
	TORCH_SPEC="$(TORCH_SPEC)" PYTHON=$(PYTHON) .ci/wheel_smoke.sh

# The report test renders HTML in headless Chromium (Debian's package); without it, it is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || \
		{ APT="apt-get"; [ "$$(id -u)" = 0 ] || APT="sudo -n apt-get"; \
		  $$APT install -y --no-install-recommends chromium >/dev/null 2>&1 || \
		  { $$APT update >/dev/null 2>&1 && $$APT install -y --no-install-recommends chromium >/dev/null 2>&1; }; } || \
		echo "note: could not install chromium; the HTML render test will be skipped"

clean:
	rm -rf $(DEMO_OUT) .pytest_cache

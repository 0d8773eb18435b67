# Two commands matter: `make demo` and `make test`. Both create .venv when it is absent.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# torch/torchvision pinned for this environment's local wheels; setup.py itself asks for a range.
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv test test-slow demo bench clean

$(STAMP): setup.py
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_PKGS)
	$(VPY) -m pip install -q -e '.[test,faces]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -q -m "not slow" tests

test-slow: $(STAMP)
	$(VPY) -m pytest -q -m slow tests

demo: $(STAMP)
	$(VPY) demo.py --outdir demo-out

bench: $(STAMP)
	$(VPY) benchmarks/bench_generate.py
	$(VPY) benchmarks/bench_degradations.py

clean:
	rm -rf out demo-out .pytest_cache

# Two commands matter: `make demo` and `make test`. Both create .venv when it is absent.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# torch/torchvision pinned for this environment's local wheels; setup.py itself asks for a range.
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv test test-isa test-slow demo explore bench clean

$(STAMP): setup.py
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_PKGS)
	$(VPY) -m pip install -q -e '.[test,faces]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -q -m "not slow" tests

# The numerics-heavy tests again under capped kernels (ATen and oneDNN pick kernels by CPU
# capability): AVX2, then the plain non-vectorised ATen path with oneDNN at SSE4.1. Any machine
# then also runs the kernels of the other CPUs this project meets (tests/test_isa.py).
ISA_TESTS := tests/test_isa.py tests/test_networks_fixtures.py tests/test_ops.py \
             tests/test_checkpoint.py tests/test_generate.py tests/test_training.py tests/test_loss.py \
             tests/test_loss_impls.py tests/test_inversion_batch.py tests/test_networks_per_image.py
ISA_CAPS  := avx2:AVX2 default:SSE41
# Then the tests of the default precision (marker precision_auto) with `auto` forced to bf16
# (QC_AUTO_PRECISION, docs/training-speed.md#precision) at the CPU's own kernels: the branch that
# CPUs with native bf16 (AMX, AVX-512 BF16) take, run on every CPU (emulated, slower, on AVX2).
AUTO_TESTS := tests/test_generate.py tests/test_training.py tests/test_restore.py

test-isa: $(STAMP)
	@for cap in $(ISA_CAPS); do \
	  aten=$${cap%%:*}; onednn=$${cap##*:}; \
	  echo "== ATEN_CPU_CAPABILITY=$$aten ONEDNN_MAX_CPU_ISA=$$onednn"; \
	  ATEN_CPU_CAPABILITY=$$aten ONEDNN_MAX_CPU_ISA=$$onednn QC_EXPECT_ATEN_CAPABILITY=$$aten \
	    $(VPY) -m pytest -q -m "not slow" -k "not trains_a_few_kimg" $(ISA_TESTS) || exit 1; \
	done
	@echo "== QC_AUTO_PRECISION=bf16 (auto's bf16 branch)"
	QC_AUTO_PRECISION=bf16 $(VPY) -m pytest -q -m "precision_auto and not slow" $(AUTO_TESTS)

test-slow: $(STAMP)
	$(VPY) -m pytest -q -m slow tests

demo: $(STAMP)
	$(VPY) demo.py --outdir demo-out

# The interactive page on http://127.0.0.1:8765/ (shipped model; Ctrl-C stops it). ARGS="--network FILE ..."
explore: $(STAMP)
	$(VPY) explore.py $(ARGS)

bench: $(STAMP)
	$(VPY) benchmarks/bench_generate.py
	$(VPY) benchmarks/bench_degradations.py

clean:
	rm -rf out demo-out .pytest_cache

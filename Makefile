# Two commands for users: `make demo` and `make test`. Each creates the virtual environment and
# installs the pinned stack plus covidxr (editable) when they are missing.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.covidxr-installed
export HF_HUB_OFFLINE ?= 1
export OMP_NUM_THREADS ?= 2

.PHONY: install dev demo test test-fast clean-nbs export

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)                ## also install jupyter, to run the notebooks yourself
	$(PY) -m pip install -q -e '.[dev]'

demo: $(STAMP)               ## train a small model on cxr-mini, evaluate it, write the report
	$(VENV)/bin/covidxr demo

test: $(STAMP)               ## sync check, every notebook, then tests/
	$(PY) -m pytest -p no:cacheprovider -ra

export: $(STAMP)             ## regenerate covidxr/ from nbs/ and clean the notebooks
	$(VENV)/bin/nbdev-export && $(VENV)/bin/nbdev-clean

index: $(STAMP)              ## regenerate nbs/index.ipynb from README.md
	$(PY) -c "import json,pathlib; t=pathlib.Path('README.md').read_text(); nb={'cells':[{'cell_type':'markdown','id':'readme','metadata':{},'source':t.splitlines(True)}],'metadata':{'kernelspec':{'display_name':'python3','language':'python','name':'python3'}},'nbformat':4,'nbformat_minor':5}; pathlib.Path('nbs/index.ipynb').write_text(json.dumps(nb,indent=1,ensure_ascii=False)+'\n')"
	$(VENV)/bin/nbdev-clean --fname nbs/index.ipynb

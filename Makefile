# Two commands for users: `make demo` and `make test`. Each creates the virtual environment and installs covidxr
# (editable, with its test extra) constrained to the exact tested versions in constraints.txt, when they are missing.
# pyproject.toml declares supported ranges; constraints.txt is the one tested set (`make lock` rewrites it).
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.covidxr-installed
LOCK   := constraints.txt
export HF_HUB_OFFLINE ?= 1
export OMP_NUM_THREADS ?= 2

.PHONY: install dev demo test test-fast clean-nbs export outputs lock index

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)                ## also install jupyter, to run the notebooks yourself
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'

demo: $(STAMP)               ## train a small model on cxr-mini, evaluate it, write the report
	$(VENV)/bin/covidxr demo

test: $(STAMP)               ## sync check, every notebook, then tests/
	$(PY) -m pytest -p no:cacheprovider -ra

outputs: $(STAMP)            ## run every notebook and store its outputs
	$(PY) tools/save_outputs.py

lock:                        ## rewrite constraints.txt from the environment (after a deliberate upgrade; then run make test)
	{ echo '# The exact, tested versions (pip freeze of the reference environment, covidxr itself left out).'; \
	  echo '# Used as pip constraints by make and CI: pip install -c constraints.txt -e ".[test]"'; \
	  echo '# Regenerate with `make lock`; tests/test_install.py checks it against the ranges in pyproject.toml.'; \
	  $(PY) -m pip freeze --exclude-editable --all | grep -v -i -E '^(covidxr|pip|setuptools|wheel)(==| @)'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

export: $(STAMP)             ## regenerate covidxr/ from nbs/ and clean the notebooks
	$(VENV)/bin/nbdev-export && $(VENV)/bin/nbdev-clean

index: $(STAMP)              ## regenerate nbs/index.ipynb from README.md
	$(PY) -c "import json,pathlib; t=pathlib.Path('README.md').read_text(); nb={'cells':[{'cell_type':'markdown','id':'readme','metadata':{},'source':t.splitlines(True)}],'metadata':{'kernelspec':{'display_name':'python3','language':'python','name':'python3'}},'nbformat':4,'nbformat_minor':5}; pathlib.Path('nbs/index.ipynb').write_text(json.dumps(nb,indent=1,ensure_ascii=False)+'\n')"
	$(VENV)/bin/nbdev-clean --fname nbs/index.ipynb

"Shared pytest setup: offline, CPU, small thread counts, and fixtures for the real sample data."
import os, shutil
os.environ.setdefault('HF_HUB_OFFLINE', '1')        # never let timm retry downloads for ~46 s
os.environ.setdefault('COVIDXR_OFFLINE', '1')       # the weights resolver fails fast instead of downloading
os.environ.setdefault('OMP_NUM_THREADS', '2')
os.environ.setdefault('MPLBACKEND', 'Agg')
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent

@pytest.fixture(autouse=True)
def _private_tmp(tmp_path_factory, monkeypatch):
    """Every temporary file of a test (notebooks' `tempfile.mkdtemp()` too, and child processes') goes into a folder of
    its own under pytest's base temp, deleted when the test ends; pytest deletes the tests' `tmp_path` folders once they
    pass (`tmp_path_retention_policy` in pyproject.toml). A full run writes ~11 GB: it leaves none of it behind."""
    d = tmp_path_factory.mktemp('tmp')
    monkeypatch.setattr('tempfile.tempdir', str(d))
    monkeypatch.setenv('TMPDIR', str(d))
    yield d
    shutil.rmtree(d, ignore_errors=True)

@pytest.fixture(scope='session')
def root(): return ROOT

@pytest.fixture(scope='session')
def mini():
    "The real sample set ../shared/data/cxr-mini (found through the dataset lookup)"
    from covidxr.core import find_dataset
    return find_dataset('cxr-mini')

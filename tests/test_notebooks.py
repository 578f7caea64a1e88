"""Run every notebook in nbs/ top to bottom, as `nbdev-test` would, one pytest test per notebook.

Cells flagged with a `tst_flags` flag (`#| slow`, `#| cuda`) are skipped unless named in
`$COVIDXR_NB_FLAGS` (e.g. `COVIDXR_NB_FLAGS="slow cuda"` on a GPU machine)."""
import os
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev import test as nbtest

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_'))

@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    cfg = get_config(ROOT)
    skip = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags)
    force = os.environ.get('COVIDXR_NB_FLAGS', '').split()
    ok, secs = nbtest.test_nb(nb, skip_flags=skip, force_flags=force, basepath=str(ROOT))
    assert ok, f"notebook {nb.name} failed (see the cell error above)"

def test_there_are_notebooks():
    assert any(p.name == '00_core.ipynb' for p in NBS), NBS

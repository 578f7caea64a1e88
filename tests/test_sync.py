"The library is exported from the notebooks, and the notebooks are clean: checked on a copy, never in place."
import shutil, subprocess, sys, filecmp
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def _copy(tmp_path):
    dst = tmp_path/'proj'
    dst.mkdir()
    for n in ('pyproject.toml', 'README.md'): shutil.copy(ROOT/n, dst/n)
    shutil.copytree(ROOT/'nbs', dst/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_*'))
    shutil.copytree(ROOT/'covidxr', dst/'covidxr', ignore=shutil.ignore_patterns('__pycache__'))
    return dst

def _diff(a:Path, b:Path, pattern):
    fa = {p.relative_to(a) for p in a.rglob(pattern) if '__pycache__' not in p.parts}
    fb = {p.relative_to(b) for p in b.rglob(pattern) if '__pycache__' not in p.parts}
    out = sorted(str(p) for p in fa ^ fb)
    out += sorted(str(p) for p in fa & fb if (a/p).read_bytes() != (b/p).read_bytes())
    return out

def test_nbdev_export_leaves_library_unchanged(tmp_path):
    dst = _copy(tmp_path)
    subprocess.run([str(BIN/'nbdev-export')], cwd=dst, check=True, capture_output=True)
    changed = _diff(ROOT/'covidxr', dst/'covidxr', '*.py')
    assert not changed, f"nbdev-export would change {changed}: run `nbdev-export` and commit (never edit covidxr/ by hand)"

def test_notebooks_are_clean(tmp_path):
    dst = _copy(tmp_path)
    subprocess.run([str(BIN/'nbdev-clean')], cwd=dst, check=True, capture_output=True)
    changed = _diff(ROOT/'nbs', dst/'nbs', '*.ipynb')
    assert not changed, f"nbdev-clean would change {changed}: run `nbdev-clean` and commit"

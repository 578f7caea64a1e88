"""Run notebooks top to bottom (as `make test` does, skipping `#| slow`/`#| cuda` cells) and store their outputs, so that
they read as documentation on GitHub: `python tools/save_outputs.py [nbs/01_images.ipynb ...]` (default: every notebook).

Outputs are made stable and machine-neutral afterwards: absolute paths of this checkout become relative ones, execution
counts and timing metadata are dropped (by `nbdev-clean`), and fastai's per-epoch `time` column is blanked."""
import json, os, re, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault('MPLBACKEND', 'Agg'); os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('COVIDXR_OFFLINE', '1'); os.environ.setdefault('OMP_NUM_THREADS', '2')
MAX_OUT = 600_000   # bytes of stored output per notebook, above which the notebook is reported

def _neutral(s:str)->str:
    for p, r in ((str(ROOT.parent/'shared'), '../shared'), (str(ROOT.resolve()), '.'), (str(Path.home()), '~')):
        s = s.replace(p, r)
    s = re.sub(r'/tmp/[A-Za-z0-9_./-]*?(tmp[a-z0-9_]{6,})', r'/tmp/\1', s)
    return re.sub(r'(<td>)\d\d:\d\d(</td>)', r'\1--:--\2', s)   # fastai's epoch time column

def neutralise(fn:Path):
    nb = json.loads(fn.read_text())
    for c in nb['cells']:
        for o in c.get('outputs', []):
            if 'text' in o: o['text'] = [_neutral(t) for t in o['text']]
            for k, v in o.get('data', {}).items():
                if k.startswith('text/'): o['data'][k] = [_neutral(t) for t in v] if isinstance(v, list) else _neutral(v)
    fn.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def main(args):
    from nbdev.test import test_nb
    from nbdev.config import get_config
    cfg = get_config(ROOT)
    skip = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags)
    nbs = [Path(a).resolve() for a in args] or sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_'))
    bad = []
    for fn in nbs:
        with tempfile.TemporaryDirectory(prefix='covidxr-nb-') as d:   # the notebook's mkdtemp() folders go with it
            old = os.environ.get('TMPDIR'); tempfile.tempdir = os.environ['TMPDIR'] = d
            try: ok, secs = test_nb(fn, skip_flags=skip, basepath=str(ROOT), save=True)
            finally:
                tempfile.tempdir = None
                if old is None: os.environ.pop('TMPDIR', None)
                else: os.environ['TMPDIR'] = old
        print(f"{fn.name}: {'ok' if ok else 'FAILED (outputs not saved)'} in {secs:.0f} s", flush=True)
        if not ok: bad.append(fn.name); continue
        neutralise(fn)
    subprocess.run([str(Path(sys.executable).parent/'nbdev-clean')], cwd=ROOT, check=True)
    for fn in nbs:
        n = sum(len(json.dumps(c.get('outputs', []))) for c in json.loads(fn.read_text())['cells'])
        if n > MAX_OUT: print(f"{fn.name}: {n/1e3:.0f} kB of outputs (large: shrink its plots)")
    if bad: sys.exit(f"failed: {', '.join(bad)}")

if __name__ == '__main__': main(sys.argv[1:])

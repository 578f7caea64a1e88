"""`covidxr bench --quick` end to end: it writes bench.json with the ratios and the hardware (no timing assertions)."""
import json, math, subprocess, sys
from pathlib import Path
import pytest
from covidxr.cli import main

ROOT = Path(__file__).resolve().parent.parent

def test_quick_bench_writes_json(tmp_path):
    # 12 images instead of --quick's 32 keeps the test short; the command and the file are the same
    assert main(['bench', '--quick', '--n-images', '12', '--out', str(tmp_path)]) == 0
    j = json.loads((tmp_path/'bench.json').read_text())
    for k in ('data_pass_ratio', 'train_epoch_ratio'):
        assert isinstance(j[k], float) and math.isfinite(j[k]) and j[k] > 0, (k, j[k])
    h = j['hardware']
    assert h['cores'] >= 1 and h['torch_threads'] >= 1 and h['cpu'] and 'gpu' in h
    assert len(j['load_before']) == len(j['load_after']) == 3
    secs = {(r['section'], r['pipeline']) for r in j['rows']}
    for s in ('data pass', 'train epoch'): assert {(s, 'plain fastai'), (s, 'covidxr')} <= secs
    inf = [r for r in j['rows'] if r['section'] == 'inference']
    assert {r['pipeline'] for r in inf if r['target'] == 'cpu'} == {'eager fp32', 'channels_last', 'onnxruntime'}
    assert all(r['img_s'] > 0 for r in inf if r['target'] == 'cpu')
    assert 'covidxr ÷ plain fastai' in (tmp_path/'bench.md').read_text()

def test_bench_rejects_unknown_setting():
    from covidxr.bench import run_bench
    with pytest.raises(TypeError, match='n_imagez'): run_bench(quick=True, n_imagez=3)

def test_wrapper_script_help():
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'bench.py'), '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and '--quick' in r.stdout, r.stderr

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
    for k in ('data_pass_cpu', 'train_epoch_cpu'):   # images per CPU second, covidxr over plain fastai
        v = j['ratios']['1024'][k]; assert math.isfinite(v) and v > 0, (k, v)
    h = j['hardware']
    assert h['cores'] >= 1 and h['torch_threads'] >= 1 and h['cpu'] and 'gpu' in h
    assert len(j['load_before']) == len(j['load_after']) == 3
    secs = {(r['section'], r['pipeline']) for r in j['rows']}
    for s in ('data pass', 'train epoch'): assert {(s, 'plain fastai'), (s, 'covidxr')} <= secs
    inf = [r for r in j['rows'] if r['section'] == 'inference']
    assert {r['pipeline'] for r in inf if r['target'] == 'cpu'} == {'eager fp32', 'channels_last', 'bf16 autocast (channels_last)', 'onnxruntime'}
    assert all(r['img_s'] > 0 for r in inf if r['target'] == 'cpu')
    assert 'covidxr ÷ plain fastai' in (tmp_path/'bench.md').read_text()

def test_bench_rejects_unknown_setting():
    from covidxr.bench import run_bench
    with pytest.raises(TypeError, match='n_imagez'): run_bench(quick=True, n_imagez=3)

def test_wrapper_script_help():
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'bench.py'), '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and '--quick' in r.stdout, r.stderr

def _fit_preds(df, **kw):
    "Train a tiny ResNet-18 one epoch (SGD, so that rounding differences stay small) on CPU with `cxr_learner(**kw)`; validation probabilities"
    import torch
    from fastai.optimizer import SGD
    from covidxr.core import seed_everything
    from covidxr.data import cxr_dls
    from covidxr.learn import cxr_learner
    seed_everything(0)
    dls = cxr_dls(df, size=32, bs=8, device='cpu', seed=0)
    learn = cxr_learner(dls, 'resnet18', pretrained=False, opt_func=SGD, **kw)
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-2)
        return learn.get_preds(dl=dls.valid)[0], learn

def test_channels_last_and_mixed_precision_keep_cpu_results():
    "The speed options change memory layout / precision only: on a CPU the trained model predicts the same"
    import torch
    from covidxr.data import read_dataset, sample_per_class
    df = read_dataset('cxr-mini', check='none')
    df = sample_per_class(df[df.split.isin(['train', 'test'])].assign(split=lambda d: d.split.replace({'test': 'valid'})), 8, seed=0)
    p0, l0 = _fit_preds(df)
    p1, l1 = _fit_preds(df, channels_last=True)
    with pytest.warns(UserWarning, match='needs CUDA'): p2, l2 = _fit_preds(df, mixed_precision='bf16')
    assert (l0.cxr.precision, l1.cxr.channels_last, l2.cxr.precision) == ('fp32', True, 'fp32')
    assert p0.shape == (len(df[df.split == 'valid']), 3) and not torch.allclose(p0, p0.new_full(p0.shape, 1/3))
    torch.testing.assert_close(p1, p0, atol=1e-4, rtol=0)   # channels_last: other conv kernels, same maths
    torch.testing.assert_close(p2, p0, atol=1e-6, rtol=0)   # bf16 requested on CPU: fp32 training, the same run

"""Reliability of run folders and model cards (issue #13): one writer per run folder (two processes), a tampered card
is refused with a message naming the field, a damaged model gives an error row (never NaN reported as a result),
and a failed evaluation leaves the earlier report whole. One tiny run (resnet18 from scratch, 32 px, 1 epoch, a few
real cxr-mini images) is trained once for the module."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from covidxr.core import load_json, save_json

torch.set_num_threads(2)
ENV = dict(os.environ, HF_HUB_OFFLINE='1', COVIDXR_OFFLINE='1', OMP_NUM_THREADS='1')

from covidxr.test_utils import cli_call as call

def tiny_recipe(epochs=1):
    from covidxr.learn import Recipe, Stage, Step
    return Recipe('tiny', 'resnet18', [Stage('s', 32, [Step('whole', epochs, 1e-3)])], bs=8, pretrained=False, aug='none')

@pytest.fixture(scope='module')
def data(mini):
    from covidxr.data import read_dataset, make_splits, sample_per_class
    return sample_per_class(make_splits(read_dataset(mini), seed=42), 4)

@pytest.fixture(scope='module')
def run(data, tmp_path_factory):
    from covidxr.learn import train_recipe
    out = tmp_path_factory.mktemp('rel')/'run'
    train_recipe(tiny_recipe(), data, out, show=False, device='cpu')
    return out

def copy_run(run, d, **card_changes):
    shutil.copytree(run, d)
    c = load_json(d/'card.json'); c.update(card_changes)
    save_json({k: v for k, v in c.items() if v is not None}, d/'card.json')
    return d

def test_card_has_one_format_and_a_signature(run):
    from covidxr.inference import read_card, card_signature, weight_shapes
    c = load_json(run/'card.json')
    assert c['format'] == 'covidxr-card/1' and c['size'] == [32, 32] and c['n_out'] == len(c['classes']) == 3
    assert c['signature'] == card_signature(c['classes'], weight_shapes(run/'weights.safetensors'))
    assert read_card(run)['recipe'] == 'tiny'

@pytest.mark.parametrize('change, needles', [
    (dict(classes=['normal', 'COVID-19', 'pneumonia']), ['does not belong', 'class list']),      # order swapped
    (dict(classes=['COVID-19', 'normal', 'pneumonia', 'TB'], n_out=4), ['does not belong']),
    (dict(classes=['a', 'a', 'b']), ['distinct']),
    (dict(size=[60000, 60000]), ['size [60000, 60000] is outside 16..2048']),
    (dict(size=32), ['must be [height, width]']),
    (dict(mean=[float('nan')]*3), ['mean [nan, nan, nan]']),
    (dict(std=[0.0, 0.2, 0.2]), ['std [0.0, 0.2, 0.2] must be 3 finite numbers']),
    (dict(std=[-1, 1, 1]), ['std']),
    (dict(weights='../../elsewhere.safetensors'), ['inside the run folder']),
    (dict(weights='/etc/passwd'), ['inside the run folder']),
    (dict(arch='resnet9000'), ["arch 'resnet9000' is not one of"]),
    (dict(signature=None), ['signature is missing']),
    (dict(format='other/2'), ["format is 'other/2'"]),
])
def test_tampered_card_is_refused(run, tmp_path, change, needles):
    from covidxr.inference import load_run, RunError
    d = copy_run(run, tmp_path/'t', **change)
    with pytest.raises(RunError) as e: load_run(d)
    msg = str(e.value)
    assert str(d) in msg, msg
    for n in needles: assert n in msg, (n, msg)

def test_tampered_card_on_the_command_line(run, tmp_path, data):
    d = copy_run(run, tmp_path/'t', size=[99999, 99999])
    img = data.path.iloc[0]
    code, _, err = call('predict', '--model', d, img, '--out', tmp_path/'p.csv')
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and 'Traceback' not in err, err
    assert 'cannot be trusted' in lines[0] and 'size [99999, 99999]' in lines[0] and not (tmp_path/'p.csv').exists()

def test_non_finite_probabilities_are_row_errors(run, tmp_path, data):
    from safetensors.torch import load_file, save_file
    from covidxr.inference import predict_paths
    d = copy_run(run, tmp_path/'nan')
    sd = load_file(str(d/'weights.safetensors'))
    k = [n for n, v in sd.items() if v.dtype.is_floating_point and v.ndim == 2][-1]   # the classifier
    sd[k] = torch.full_like(sd[k], float('nan')); save_file(sd, str(d/'weights.safetensors'))
    files = list(data.path[:3])
    p = predict_paths(d, files)
    assert list(p.columns) == ['path', 'p_COVID-19', 'p_normal', 'p_pneumonia', 'pred', 'error']
    assert (p.pred == '').all() and p.error.str.startswith('non-finite probabilities').all(), p
    ok = predict_paths(run, files)                               # the intact run: finite, no errors
    assert (ok.error == '').all() and np.isfinite(ok.filter(like='p_').to_numpy()).all()
    code, _, err = call('predict', '--model', d, *files, '--out', tmp_path/'p.csv')
    assert code == 1 and err.count('non-finite probabilities') == 3, err

def test_failed_external_evaluation_keeps_the_old_report(run, data, tmp_path):
    from covidxr.report import evaluate_run
    test = data[data.split == 'test']
    out = tmp_path/'eval'
    evaluate_run(run, test, out, n_boot=20)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    assert {'metrics.json', 'preds.csv', 'report.html', 'reliability.png'} <= set(before)
    bad = test.head(4).assign(label='TB')                        # a label the model does not know: fails mid-report
    with pytest.raises(ValueError, match='outside the classes'): evaluate_run(run, test, out, external=bad, n_boot=20)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before            # no mix of old and new files
    assert sorted(p.name for p in tmp_path.iterdir()) == ['eval']                # no half-built folder left
    evaluate_run(run, test, out, external=test.head(4), n_boot=20)              # a good one replaces it whole
    m = load_json(out/'metrics.json')
    assert m['external']['n_images'] == 4 and sorted(m['files']) == sorted(f.name for f in out.iterdir())

def test_report_refuses_a_folder_with_other_files(run, data, tmp_path):
    from covidxr.report import evaluate_run
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match=r"not part of a covidxr report \(notes.txt\)"):
        evaluate_run(run, data[data.split == 'test'], tmp_path/'mine', n_boot=10)
    assert [f.name for f in (tmp_path/'mine').iterdir()] == ['notes.txt']

WAITER = """
import sys, time, pandas as pd
from pathlib import Path
from fastai.callback.core import Callback
from covidxr.learn import train_recipe
sys.path.insert(0, {tests!r}); from test_reliability import tiny_recipe
class Wait(Callback):
    def before_fit(self):
        t0 = time.time()
        while not Path({go!r}).exists() and time.time() - t0 < 240: time.sleep(0.2)
train_recipe(tiny_recipe(2), pd.read_pickle({df!r}), {out!r}, show=False, device='cpu', cbs=[Wait()])
"""

def test_two_trains_into_one_folder(data, tmp_path, mini):
    "Process A trains (held inside its first fit); `covidxr train --overwrite` into the same --out, and `covidxr evaluate` of it (from this process), are refused, naming A"
    out, go = tmp_path/'run', tmp_path/'go'
    data.to_pickle(tmp_path/'df.pkl')
    a = subprocess.Popen([sys.executable, '-c', WAITER.format(tests=str(Path(__file__).parent), go=str(go),
                          df=str(tmp_path/'df.pkl'), out=str(out))], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not (out/'history.csv').exists() and not (out/'state.json').exists() and a.poll() is None and time.time() - t0 < 240:
            time.sleep(0.2)
        assert (out/'.lock').exists(), a.communicate()[1] if a.poll() is not None else 'A never took the lock'
        code, _, err = call('train', '--data', mini, '--arch', 'resnet18', '--recipe', 'cxr_scratch', '--quick',
                            '--no-pretrained', '--max-per-class', 2, '--out', out, '--overwrite')   # this pytest process
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1, err
        assert f'is in use by pid {a.pid} ' in lines[0] and '--out' in lines[0], lines[0]
        code, _, err = call('evaluate', '--model', out)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1, err
        assert f'is in use by pid {a.pid} ' in lines[0] and 'wait until it finishes, then evaluate' in lines[0], lines[0]
    finally:
        go.touch()
        _, err = a.communicate(timeout=300)
    assert a.returncode == 0, err
    h = pd.read_csv(out/'history.csv')
    assert len(h) == 2 and list(h['stage']) == ['s', 's']          # A's two epochs only, nothing of B
    assert load_json(out/'config.json')['recipe']['name'] == 'tiny' and not (out/'.lock').exists()

def test_card_loader_fuzzed(run, tmp_path):
    "Any JSON in any field of card.json, or any bytes as the file: a usable card or a RunError naming the file, nothing else"
    from hypothesis import given, settings, strategies as st, HealthCheck
    from hypothesis.configuration import set_hypothesis_home_dir
    set_hypothesis_home_dir(tmp_path/'hypothesis')   # its caches stay out of the checkout
    from covidxr.inference import read_card, RunError, SIZE_RANGE
    good = load_json(run/'card.json')
    d = tmp_path/'f'; d.mkdir(); shutil.copy(run/'weights.safetensors', d)
    scalars = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
    values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8)
    def check():
        try: c = read_card(d)
        except RunError as e: assert str(d/'card.json') in str(e) or str(d) in str(e); return
        assert all(SIZE_RANGE[0] <= s <= SIZE_RANGE[1] for s in c['size']) and len(c['classes']) == c['n_out'] >= 2
        assert all(0 < s <= 1 for s in c['std']) and Path(c['_dir'], c['weights']).resolve().is_relative_to(d.resolve())
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(st.sampled_from(sorted(good)), values, min_size=1, max_size=3))
    def fields(change):
        (d/'card.json').write_text(json.dumps(dict(good, **change))); check()
    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=200))
    def raw(b):
        (d/'card.json').write_bytes(b); check()
    fields(); raw()

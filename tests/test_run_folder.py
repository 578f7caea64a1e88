"""Run folders (issue #13): `--overwrite` replaces the old run whole, a folder of weights without state.json is not
overwritten silently, a failed train leaves nothing that blocks a plain rerun, a SIGKILLed run resumed with `--resume`
ends bit-equal to the uninterrupted one (weights, stage weights, history, best), `--resume` refuses other data or
another recipe, Ctrl-C says how to resume, and every file of a run folder has the same permissions (the umask's).
Tiny runs: resnet18 from scratch, 32-48 px, a few real cxr-mini images per class, on the CPU."""
import os, re, shlex, shutil, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd, pytest, torch
from fastai.callback.core import Callback
from covidxr.core import load_json, load_state_file

torch.set_num_threads(1)
ENV = dict(os.environ, HF_HUB_OFFLINE='1', COVIDXR_OFFLINE='1', OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
HERE = Path(__file__).parent
COVIDXR = Path(sys.executable).parent/'covidxr'

from covidxr.test_utils import cli_call as call

def recipe():
    "2 stages x 2 epochs, random augmentation (the generators matter), best epoch by valid_loss"
    from covidxr.learn import Recipe, Stage, Step
    return Recipe('tiny2', 'resnet18', [Stage('a', 32, [Step('whole', 2, 1e-3)]), Stage('b', 48, [Step('whole', 2, 5e-4)])],
                  bs=8, pretrained=False, aug='fastai')

@pytest.fixture(scope='module')
def data(mini):
    from covidxr.data import read_dataset, make_splits, sample_per_class
    return sample_per_class(make_splits(read_dataset(mini), seed=42), 6)

def weights_equal(a, b):
    a, b = load_state_file(a), load_state_file(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

def history(run): return pd.read_csv(run/'history.csv').drop(columns='seconds')   # seconds: wall time, never equal

class Boom(Callback):
    "Raise after the `at`-th epoch of the run has been committed"
    order = 100
    def __init__(self, at): self.at, self.n = at, 0
    def after_epoch(self):
        self.n += 1
        if self.n == self.at: raise RuntimeError('boom')

class BoomBatch(Callback):
    "Raise in the first training batch"
    def before_batch(self): raise RuntimeError('boom')

# ---- 1. --overwrite, weights without state, failed runs

def test_overwrite_removes_the_old_run(data, tmp_path):
    from covidxr.learn import train_recipe
    from covidxr.report import evaluate_run
    out = tmp_path/'run'
    train_recipe(recipe(), data, out, show=False, device='cpu')
    evaluate_run(out, data[data.split == 'test'], out/'report', n_boot=10)
    shutil.copytree(out/'report', out/'eval-other'); (out/'notes.txt').write_text('mine')
    old = pd.read_csv(out/'history.csv')
    with pytest.raises(FileExistsError, match=r"already holds a run \(stages done: \['a', 'b'\], 4 epochs\): pass resume=True \(--resume\)"):
        train_recipe(recipe(), data, out, show=False, device='cpu')
    one = recipe(); one.stages = one.stages[:1]                         # the new run: one stage only
    train_recipe(one, data, out, show=False, device='cpu', overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ['card.json', 'config.json', 'history.csv', 'notes.txt', 'splits.csv',
                                                     'stages', 'state.json', 'weights.safetensors']   # no report/, eval-other/
    assert [p.name for p in (out/'stages').iterdir()] == ['a.safetensors']                      # no stage b of the old run
    assert len(old) == 4 and list(pd.read_csv(out/'history.csv')['stage']) == ['a', 'a']
    assert load_json(out/'state.json')['done'] == ['a'] and (out/'notes.txt').read_text() == 'mine'

def test_weights_without_state_are_not_overwritten(tmp_path, mini):
    out = tmp_path/'model'; out.mkdir()
    (out/'weights.safetensors').write_bytes(b'w'); (out/'card.json').write_text('{}')
    code, _, err = call('train', '--data', mini, '--recipe', 'cxr_scratch', '--arch', 'resnet18', '--quick', '--no-pretrained',
                        '--max-per-class', 2, '--out', out)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert f"{str(out)!r} holds files of a run (card.json, weights.safetensors) but no usable state.json" in lines[0], lines[0]
    assert '--overwrite' in lines[0] and sorted(p.name for p in out.iterdir()) == ['card.json', 'weights.safetensors']

def test_failed_train_leaves_nothing_behind(data, tmp_path, mini):
    from covidxr.learn import train_recipe
    new = tmp_path/'new'                                               # --out did not exist: it does not exist after
    code, _, err = call('train', '--data', tmp_path/'nowhere', '--recipe', 'cxr_scratch', '--quick', '--no-pretrained', '--out', new)
    assert code == 1 and 'nowhere' in err and not new.exists(), err
    with pytest.raises(RuntimeError, match='boom'):                    # an exception in the first epoch
        train_recipe(recipe(), data, new, show=False, device='cpu', cbs=[BoomBatch()])
    assert not new.exists()
    mine = tmp_path/'mine'; mine.mkdir()                               # a folder the user made stays, empty
    with pytest.raises(Exception, match='resnet50'):                  # pretrained weights missing offline
        train_recipe('covid_resnet', data, mine, pretrained=True, quick=True, show=False, device='cpu')
    assert list(mine.iterdir()) == []
    # a run SIGKILLed before its first epoch ended (state.json, config.json, splits.csv; no checkpoint): a plain rerun replaces it
    (mine/'config.json').write_text('{}'); (mine/'splits.csv').write_text('path\n')
    (mine/'state.json').write_text('{"done": [], "run_epoch": 0}')
    train_recipe(recipe(), data, mine, show=False, device='cpu')
    assert load_json(mine/'state.json')['done'] == ['a', 'b'] and not (mine/'checkpoint.pth').exists()
    # a run that failed after an epoch is kept: it is resumable, so a plain rerun is refused
    kept = tmp_path/'kept'
    with pytest.raises(RuntimeError, match='boom'): train_recipe(recipe(), data, kept, show=False, device='cpu', cbs=[Boom(1)])
    assert (kept/'checkpoint.pth').exists() and load_json(kept/'state.json')['run_epoch'] == 1
    with pytest.raises(FileExistsError, match='resume=True'): train_recipe(recipe(), data, kept, show=False, device='cpu')

# ---- 2. resume fidelity

SCRIPT = """
import sys, torch, pandas as pd
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_run_folder import recipe
from fastai.callback.core import Callback
from covidxr.learn import train_recipe, save_weights
class Snap(Callback):   # the reference run keeps the weights after every epoch: snaps/<run epoch>.safetensors
    order, n = 99, 0
    def after_epoch(self): save_weights(self.learn.model, {snaps!r} + f'/{{Snap.n}}.safetensors'); Snap.n += 1
train_recipe(recipe(), pd.read_pickle({df!r}), {out!r}, show=False, device='cpu', resume={resume}, cbs=[Snap()] if {snap} else None)
"""

def run_script(tmp_path, out, resume=False, snap=False, wait_for=None):
    src = SCRIPT.format(tests=str(HERE), snaps=str(tmp_path/'snaps'), df=str(tmp_path/'df.pkl'),
                        out=str(out), resume=resume, snap=snap)
    p = subprocess.Popen([sys.executable, '-c', src], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait_for is None:
        _, err = p.communicate(timeout=300); assert p.returncode == 0, err
        return p
    t0 = time.time()
    while not wait_for() and p.poll() is None and time.time() - t0 < 300: time.sleep(0.01)
    p.send_signal(signal.SIGKILL); _, err = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err}"
    return p

def _committed(run)->bool:
    "The first epoch's commit is complete: state.json, written last (after checkpoint.pth and the best weights), says so"
    try: return load_json(run/'state.json')['run_epoch'] >= 1
    except (OSError, ValueError, KeyError): return False

def test_killed_run_resumes_to_the_uninterrupted_result(data, tmp_path):
    data.to_pickle(tmp_path/'df.pkl'); (tmp_path/'snaps').mkdir()
    ref, run = tmp_path/'ref', tmp_path/'run'
    run_script(tmp_path, ref, snap=True)                             # uninterrupted, with each epoch's weights in snaps/
    run_script(tmp_path, run, wait_for=lambda: _committed(run))       # SIGKILL right after the first commit
    st = load_json(run/'state.json')
    assert 1 <= st['run_epoch'] < 4 and st['best'] is not None, st
    # the recorded best and the weights file agree: they are the weights of the epoch the best names
    assert weights_equal(run/'weights.safetensors', tmp_path/'snaps'/f"{st['best']['run_epoch']}.safetensors"), st['best']
    assert len(history(run)) >= st['run_epoch']
    run_script(tmp_path, run, resume=True)
    assert weights_equal(run/'weights.safetensors', ref/'weights.safetensors')          # the best weights
    for s in ('a', 'b'): assert weights_equal(run/'stages'/f'{s}.safetensors', ref/'stages'/f'{s}.safetensors')
    pd.testing.assert_frame_equal(history(run), history(ref), check_exact=True)          # every logged value, bit for bit
    a, b = load_json(run/'state.json'), load_json(ref/'state.json')
    assert a['best'] == b['best'] and a['done'] == b['done'] == ['a', 'b'] and a['run_epoch'] == 4
    assert not (run/'checkpoint.pth').exists() and not (run/'.best.safetensors').exists()

@pytest.fixture(scope='module')
def ref(data, tmp_path_factory):
    "The uninterrupted run"
    from covidxr.learn import train_recipe
    out = tmp_path_factory.mktemp('ref')/'run'
    train_recipe(recipe(), data, out, show=False, device='cpu')
    return out

@pytest.mark.parametrize('at', [1, 2, 3])   # after: epoch 1 of stage a (mid-step), stage a's end, epoch 1 of stage b
def test_crashed_run_resumes_bit_equal(data, ref, tmp_path, at):
    from covidxr.learn import train_recipe
    run = tmp_path/'run'
    with pytest.raises(RuntimeError, match='boom'): train_recipe(recipe(), data, run, show=False, device='cpu', cbs=[Boom(at)])
    ck = torch.load(run/'checkpoint.pth', weights_only=True)
    assert set(ck) == {'format', 'state', 'model', 'opt', 'fit', 'rng'} and ck['state']['run_epoch'] == at
    assert {'python', 'numpy', 'torch', 'cuda', 'loaders'} <= set(ck['rng']) and ck['opt']['state']   # optimizer moments, RNGs
    train_recipe(recipe(), data, run, show=False, device='cpu', resume=True)
    for f in ('weights.safetensors', 'stages/a.safetensors', 'stages/b.safetensors'): assert weights_equal(run/f, ref/f), f
    pd.testing.assert_frame_equal(history(run), history(ref), check_exact=True)

class LRs(Callback):
    "The LR of the head group after each epoch"
    order = 99
    def __init__(self): self.lrs = []
    def after_epoch(self): self.lrs.append(self.opt.hypers[-1]['lr'])

def test_plateau_run_resumes_bit_equal(data, tmp_path):
    "ReduceLROnPlateau's tracker and its LR cut belong to the epoch the checkpoint commits"
    from covidxr.learn import train_recipe, Recipe, Stage, Step
    r = Recipe('plateau', 'resnet18', [Stage('a', 32, [Step('whole', 4, 1e-3, schedule='plateau', patience=0, factor=0.5)])],
               bs=8, pretrained=False, aug='fastai', monitor='accuracy')
    a, b = LRs(), LRs()
    train_recipe(r, data, tmp_path/'ref', show=False, device='cpu', cbs=[a])
    assert a.lrs[0] == 1e-3 and min(a.lrs) < 1e-3, a.lrs                # the plateau did cut the LR
    with pytest.raises(RuntimeError, match='boom'): train_recipe(r, data, tmp_path/'run', show=False, device='cpu', cbs=[Boom(3)])
    train_recipe(r, data, tmp_path/'run', show=False, device='cpu', resume=True, cbs=[b])
    assert b.lrs == a.lrs[3:], (a.lrs, b.lrs)
    assert weights_equal(tmp_path/'run'/'stages'/'a.safetensors', tmp_path/'ref'/'stages'/'a.safetensors')
    pd.testing.assert_frame_equal(history(tmp_path/'run'), history(tmp_path/'ref'), check_exact=True)

def test_resume_refuses_other_data_and_recipe(data, tmp_path):
    from covidxr.learn import train_recipe
    out = tmp_path/'run'
    train_recipe(recipe(), data, out, show=False, device='cpu', stop_after='a')
    row = data[data.split == 'train'].iloc[0]
    other = data.copy(); other.loc[row.name, 'label'] = 'pneumonia' if row.label != 'pneumonia' else 'normal'
    with pytest.raises(ValueError, match='the data differs') as e: train_recipe(recipe(), other, out, show=False, device='cpu', resume=True)
    assert f"1 images with another label (e.g. {row.path}: {row.label} -> " in str(e.value), e.value
    with pytest.raises(ValueError, match="1 of the run's images missing"):
        train_recipe(recipe(), data.drop(index=row.name), out, show=False, device='cpu', resume=True)
    r = recipe(); r.bs = 4
    with pytest.raises(ValueError, match=r'recipe differs .*\(bs: 8 -> 4\)'): train_recipe(r, data, out, show=False, device='cpu', resume=True)
    assert load_json(out/'state.json')['done'] == ['a']                 # refused: nothing changed
    good = (out/'checkpoint.pth').read_bytes(); (out/'checkpoint.pth').write_bytes(good[:1000])   # a damaged checkpoint
    with pytest.raises(ValueError, match=re.escape(f"Checkpoint {str(out/'checkpoint.pth')!r} cannot be read")):
        train_recipe(recipe(), data, out, show=False, device='cpu', resume=True)
    (out/'checkpoint.pth').write_bytes(good)
    train_recipe(recipe(), data, out, show=False, device='cpu', resume=True)
    assert load_json(out/'state.json')['done'] == ['a', 'b']

# ---- 3. Ctrl-C

def test_ctrl_c_says_how_to_resume(tmp_path, mini):
    out = tmp_path/'run'
    args = ['train', '--data', str(mini), '--recipe', 'cxr_scratch', '--arch', 'resnet18', '--scale', '0.25', '--max-epochs', '2',
            '--no-pretrained', '--max-per-class', '3', '--out', str(out)]   # two epochs: the Ctrl-C lands after the first
    p = subprocess.Popen([str(COVIDXR), *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out/'checkpoint.pth').exists() and p.poll() is None and time.time() - t0 < 300: time.sleep(0.01)
    p.send_signal(signal.SIGINT); _, err = p.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert p.returncode == 130 and len(lines) == 1 and 'Traceback' not in err, err
    m = re.fullmatch(rf"covidxr train: interrupted: (\d+) completed epochs are kept in {re.escape(str(out))}; resume with: (.*)", lines[0])
    assert m and int(m[1]) >= 1, lines[0]
    cmd = shlex.split(m[2])
    assert cmd[:2] == ['covidxr', 'train'] and cmd[-1] == '--resume' and '--overwrite' not in cmd
    for a in ('--max-per-class', '--no-pretrained', '--scale', '--max-epochs', str(out)): assert a in cmd, (a, cmd)
    code, so, err = call(*cmd[1:])                                     # the printed command finishes the run
    assert code == 0 and (out/'report'/'metrics.json').exists(), err
    assert not (out/'checkpoint.pth').exists() and len(pd.read_csv(out/'history.csv')) == len(set(pd.read_csv(out/'history.csv').run_epoch))

def test_ctrl_c_before_the_first_epoch_keeps_nothing(tmp_path, mini):
    out = tmp_path/'run'                                               # the lock appears before the data is read
    p = subprocess.Popen([str(COVIDXR), 'train', '--data', str(mini), '--recipe', 'cxr_scratch', '--arch', 'resnet18', '--quick',
                          '--no-pretrained', '--max-per-class', '3', '--out', str(out)], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out/'.lock').exists() and p.poll() is None and time.time() - t0 < 300: time.sleep(0.01)
    p.send_signal(signal.SIGINT); _, err = p.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert p.returncode == 130 and len(lines) == 1 and 'Traceback' not in err, err
    assert lines[0].startswith('covidxr train: interrupted: stopped before the first epoch ended, nothing was kept; '
                               'start again with: covidxr train --data '), lines[0]
    assert '--resume' not in lines[0] and not out.exists()

# ---- 4. permissions

def test_run_folder_files_share_the_umask_permissions(tmp_path, mini):
    out = tmp_path/'run'
    old = os.umask(0o027)
    try:
        code, _, err = call('train', '--data', mini, '--recipe', 'cxr_scratch', '--arch', 'resnet18', '--quick', '--no-pretrained',
                            '--max-per-class', 2, '--out', out)
        assert code == 0, err
        code, _, err = call('evaluate', '--model', out)                 # RUN/eval-splits
        assert code == 0, err
        code, _, err = call('export', '--model', out, '--onnx', out/'model.onnx')   # onnx written aside, then renamed
        assert code == 0, err
    finally: os.umask(old)
    modes = {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in [out, *out.rglob('*')]}
    assert {'weights.safetensors', 'state.json', 'history.csv', 'report/metrics.json', 'report/roc.png', 'eval-splits/preds.csv', 'model.onnx'} <= set(modes)
    bad = {k: v for k, v in modes.items() if v != (oct(0o750) if (out/k).is_dir() or k == '.' else oct(0o640))}
    assert not bad, bad
    # the same through the CLI: --overwrite takes the old evaluation away too; files that are not the run's stay
    (out/'report'/'old.txt').write_text('old')
    code, _, err = call('train', '--data', mini, '--recipe', 'cxr_scratch', '--arch', 'resnet18', '--quick', '--no-pretrained',
                        '--max-per-class', 2, '--out', out, '--overwrite')
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ['card.json', 'config.json', 'history.csv', 'model.json', 'model.onnx',
                                                     'report', 'splits.csv', 'stages', 'state.json', 'weights.safetensors']
    assert not (out/'report'/'old.txt').exists()

PARSE_CTRL_C = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)   # as in a terminal (a background job starts with SIGINT ignored)
import pandas as pd
from covidxr import readers
orig = pd.read_csv
def parser_like(*a, **k):   # pandas' C parser: a KeyboardInterrupt inside it becomes a ParserError
    try: os.kill(os.getpid(), signal.SIGINT); time.sleep(0.2)
    except KeyboardInterrupt: raise pd.errors.ParserError("Error tokenizing data. C error: Calling read(nbytes) on source failed.") from None
    return orig(*a, **k)
readers.pd.read_csv = parser_like if sys.argv[2] == 'ctrl-c' else orig
try: print('read', len(readers.read_csv_dataset(sys.argv[1], check='none')))
except KeyboardInterrupt: print('KeyboardInterrupt', signal.getsignal(signal.SIGINT) is signal.default_int_handler)
except Exception as e: print(type(e).__name__, ' '.join(str(e).split()))
"""

def test_ctrl_c_inside_the_csv_parse_stays_a_keyboard_interrupt(mini):
    """pandas' C parser turns a Ctrl-C that lands inside it into a ParserError ('Calling read(nbytes) on source failed'),
    which once made `covidxr train` report 'cannot parse the CSV' instead of being interrupted (CI, 2026-11-29). In a
    child process a stand-in parser does the same: the reader defers the Ctrl-C to the end of the parse, so it arrives
    as itself, and the handler is back afterwards; without a Ctrl-C the file reads as before"""
    run = lambda how: subprocess.run([sys.executable, '-c', PARSE_CTRL_C, str(Path(mini)/'labels.csv'), how], env=ENV,
                                     capture_output=True, text=True, timeout=120).stdout.strip().splitlines()[-1]
    assert run('ctrl-c') == 'KeyboardInterrupt True'
    assert run('none') == 'read 1354'

COMMIT_CTRL_C = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)   # as in a terminal (a background job starts with SIGINT ignored)
import covidxr.resume as R
from covidxr.core import load_json
from covidxr.runfolder import load_checkpoint
from covidxr.learn import train_recipe, get_recipe
from covidxr.data import read_dataset, make_splits, sample_per_class
orig = R.save_checkpoint
def ctrl_c_after(*a, **k):   # the Ctrl-C lands once checkpoint.pth is written, before the weights and state.json
    orig(*a, **k); os.kill(os.getpid(), signal.SIGINT)
R.save_checkpoint = ctrl_c_after
r = get_recipe('cxr_scratch').scaled(size=0.25, max_epochs=2)
df = sample_per_class(make_splits(read_dataset(sys.argv[1]), valid_pct=r.valid_pct, seed=42), 2)
try: train_recipe(r, df, sys.argv[2], show=False, device='cpu'); print('not interrupted')
except KeyboardInterrupt:
    st, ck = load_json(os.path.join(sys.argv[2], 'state.json')), load_checkpoint(os.path.join(sys.argv[2], 'checkpoint.pth'))
    print('KeyboardInterrupt', st.get('run_epoch'), ck['state']['run_epoch'])
"""

def test_ctrl_c_during_the_epoch_commit_waits_for_state_json(mini, tmp_path):
    """A Ctrl-C that lands between checkpoint.pth and state.json once left state.json an epoch behind, so `covidxr train`
    said '0 completed epochs are kept' of a run whose checkpoint held one (CI, 2026-11-29; resuming was right, it reads the
    checkpoint). `RunCheckpoint` defers it to the end of the commit: the run stops with both files at epoch 1"""
    out = subprocess.run([sys.executable, '-c', COMMIT_CTRL_C, str(mini), str(tmp_path/'run')], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == 'KeyboardInterrupt 1 1', out.stdout + out.stderr

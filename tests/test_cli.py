"""The `covidxr` console script end to end on the real cxr-mini images: train -> evaluate -> predict -> export,
run as subprocesses (the installed console script) and as functions (`covidxr.cli.main`), plus the error cases."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent/'covidxr'

def cli(*args, timeout=900, cwd=None):
    "Run the installed console script; (exit code, stdout, stderr)"
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='2')
    p = subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    return p.returncode, p.stdout, p.stderr

from covidxr.test_utils import cli_call as call

def one_line_error(code, err, *needles):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in err, err
    for n in needles: assert n in lines[0], (n, lines[0])

@pytest.fixture(scope='module')
def run(tmp_path_factory, mini):
    "`covidxr train` (subprocess) on cxr-mini: quick covid_resnet recipe, resnet18 from scratch, 6 images per class"
    d = tmp_path_factory.mktemp('cli')
    t0 = time.time()
    code, out, err = cli('train', '--data', mini, '--arch', 'resnet18', '--recipe', 'covid_resnet', '--quick',
                         '--no-pretrained', '--max-per-class', 6, '--bs', 6, '--workers', 1, '--out', d/'run', cwd=d)
    print(f'covidxr train: {time.time()-t0:.0f}s\n{out}\n{err[-2000:]}')
    assert code == 0, err
    assert 'Run folder:' in out and 'Report:' in out
    # not a terminal: one plain line per epoch, no progress bars
    lines = [l for l in out.splitlines() if l.startswith('  epoch ')]
    assert len(lines) == 5 and lines[0].startswith('  epoch 1/1, 32 px, head only: train_loss ') and 'whole net' in lines[1]
    assert '|███' not in out
    assert json.loads((d/'run'/'config.json').read_text())['num_workers'] == 1   # --workers reaches the DataLoaders' record
    assert 'vs the hospital-only baseline (macro_f1 ' in out   # the report compared it with the run's training rows, paired
    return d/'run'

def test_train_writes_run_folder_and_report(run):
    names = {p.name for p in run.iterdir()}
    assert {'card.json', 'config.json', 'history.csv', 'weights.safetensors', 'stages', 'report'} <= names
    cfg = json.loads((run/'config.json').read_text())
    assert cfg['recipe']['name'] == 'covid_resnet' and cfg['quick'] and cfg['data']['max_per_class'] == 6
    assert cfg['recipe']['arch'] == 'resnet18' and cfg['recipe']['pretrained'] is False
    h = pd.read_csv(run/'history.csv')
    assert list(h['size']) == [32, 32, 56, 56, 57]   # the recipe's three stages, scaled, not another code path
    rep = run/'report'
    for f in ('metrics.json', 'per_class.csv', 'confusion.png', 'roc.png', 'reliability.png', 'report.md', 'report.html'):
        assert (rep/f).stat().st_size > 0, f
    m = json.loads((rep/'metrics.json').read_text())
    assert m['n_images'] == 18   # 6 test images per class
    # the run saved the split and subset it trained on; the report covers exactly its test rows
    sp = pd.read_csv(run/'splits.csv', keep_default_na=False)
    assert list(sp.columns) == ['path', 'label', 'patient_id', 'source', 'split'] and not sp.path.duplicated().any()
    assert (sp.groupby(['split', 'label']).size() == 6).all() and set(sp.split) == {'train', 'test'}   # covid_resnet: valid_pct=0
    assert sorted(pd.read_csv(rep/'preds.csv').path) == sorted(sp[sp.split == 'test'].path)
    vs = m['vs_source_prior']; assert vs['n_train'] == 18 and set(vs) >= {'accuracy', 'macro_f1', 'macro_auc'}   # the run's 18 training rows

def test_evaluate_defaults_to_the_runs_own_split(run, tmp_path):
    sp = pd.read_csv(run/'splits.csv', keep_default_na=False)
    for split in ('test', 'train'):
        code, out, err = call('evaluate', '--model', run, '--split', split, '--out', tmp_path/split)
        assert code == 0, err
        assert sorted(pd.read_csv(tmp_path/split/'preds.csv').path) == sorted(sp[sp.split == split].path), split
        assert 'its own split (splits.csv)' in out
    # the same test rows give the same numbers as the report `train` wrote
    a = json.loads((tmp_path/'test'/'metrics.json').read_text())['overall']['accuracy']['value']
    assert a == json.loads((run/'report'/'metrics.json').read_text())['overall']['accuracy']['value']
    old = tmp_path/'old'; shutil.copytree(run, old, ignore=shutil.ignore_patterns('stages', 'report', 'splits.csv'))
    code, _, err = call('evaluate', '--model', old)
    one_line_error(code, err, 'splits.csv', '--data')

def test_rerun_into_same_folder_needs_resume_or_overwrite(run, mini):
    code, out, err = call('train', '--data', mini, '--arch', 'resnet18', '--quick', '--no-pretrained', '--out', run)
    one_line_error(code, err, 'already holds a run', '--resume', '--overwrite')

def test_evaluate_with_external_set(run, mini, tmp_path):
    # the external set: the CSV view of cxr-mini's test split, evaluated in full
    df = pd.read_csv(mini/'labels.csv')
    ext = df[df.split == 'test'].groupby('label').head(4).assign(split='')
    ext['filename'] = [str(mini/f) for f in ext.filename]
    ext.to_csv(tmp_path/'ext.csv', index=False)
    code, out, err = call('evaluate', '--model', run, '--data', mini, '--split', 'test', '--external', tmp_path/'ext.csv',
                          '--out', tmp_path/'eval')
    assert code == 0, err
    m = json.loads((tmp_path/'eval'/'metrics.json').read_text())
    assert m['n_images'] == int((df.split == 'test').sum())
    assert 'Report:' in out
    assert m['external']['n_images'] == len(ext) == 12
    assert len(pd.read_csv(tmp_path/'eval'/'external_preds.csv')) == 12
    assert 'External test set' in (tmp_path/'eval'/'report.md').read_text()

def test_predict_batch_with_a_bad_image_and_cams(run, mini, tmp_path):
    imgs = tmp_path/'imgs'; imgs.mkdir()
    src = sorted((mini/'images'/'COVID-19').glob('*.jpg'))[:3] + sorted((mini/'images'/'normal').glob('*.jpg'))[:2]
    for p in src: shutil.copy(p, imgs/p.name)
    (imgs/'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    code, out, err = cli('predict', '--model', run, imgs, '--out', tmp_path/'preds.csv', '--cam', tmp_path/'cams', '--bs', 2)
    assert code == 1   # one image failed: reported, the others predicted
    assert err.strip().splitlines() == [f"covidxr predict: {imgs/'broken.png'}: " + err.split(': ', 2)[2].strip()], err
    assert 'cannot decode' in err and 'Grad-CAM overlays: 5 PNGs' in out, (out, err)
    p = pd.read_csv(tmp_path/'preds.csv'); p['error'] = p['error'].fillna('')
    card = json.loads((run/'card.json').read_text())
    assert len(p) == 6 and list(p.columns) == ['path'] + [f'p_{c}' for c in card['classes']] + ['pred', 'error']
    ok = p[p.error == '']
    assert len(ok) == 5 and set(ok.pred) <= set(card['classes'])
    np.testing.assert_allclose(ok[[f'p_{c}' for c in card['classes']]].sum(axis=1), 1, atol=1e-5)
    assert p.loc[p.path.str.endswith('broken.png'), [f'p_{c}' for c in card['classes']]].isna().all(axis=None)
    assert p.loc[p.path.str.endswith('broken.png'), 'error'].item().startswith('cannot decode')
    cams = sorted((tmp_path/'cams').glob('*.png'))
    assert len(cams) == 5 and all(Image.open(c).size == Image.open(imgs/(c.name.replace('.cam.png', '.jpg'))).size for c in cams)
    # the same numbers in-process
    code2, _, _ = call('predict', '--model', run, *src, '--out', tmp_path/'p2.csv')
    assert code2 == 0
    q = pd.read_csv(tmp_path/'p2.csv')
    name = lambda d: d.assign(name=d.path.map(lambda s: Path(s).name)).set_index('name').sort_index()
    np.testing.assert_allclose(name(q).iloc[:, 1:4].values, name(ok).iloc[:, 1:4].values, atol=1e-5)
    # --bf16: the same rows, probabilities close to fp32 (not equal), and the output says so
    code3, out3, _ = call('predict', '--model', run, *src, '--out', tmp_path/'p3.csv', '--bf16')
    assert code3 == 0 and '(bf16)' in out3, out3
    b = pd.read_csv(tmp_path/'p3.csv')
    np.testing.assert_allclose(name(b).iloc[:, 1:4].values, name(q).iloc[:, 1:4].values, atol=0.03)

def test_export_onnx_parity(run, mini, tmp_path):
    code, out, err = cli('export', '--model', run, '--onnx', tmp_path/'m.onnx', '--images', mini/'images'/'normal')
    assert code == 0, err
    diff = float(out.split('max |diff| = ')[1].split()[0])
    assert diff <= 1e-4, out
    assert (tmp_path/'m.onnx').stat().st_size > 1e6 and json.loads((tmp_path/'m.json').read_text())['classes']

def test_missing_pretrained_weights_fail_fast_naming_the_file(mini, tmp_path):
    t0 = time.time()
    env_home = tmp_path/'torch'   # an empty TORCH_HOME: no cached weights
    env = dict(os.environ, HF_HUB_OFFLINE='1', TORCH_HOME=str(env_home))
    p = subprocess.run([str(EXE), 'train', '--data', mini, '--arch', 'resnet18', '--out', tmp_path/'run'],
                       capture_output=True, text=True, env=env, timeout=120)
    dt = time.time() - t0
    one_line_error(p.returncode, p.stderr, 'resnet18', '.pth', str(env_home), '--no-pretrained')
    assert dt < 60, dt
    assert not (tmp_path/'run'/'history.csv').exists()

@pytest.mark.parametrize('args,needles', [
    (['train', '--data', 'no-such-dataset', '--no-pretrained'], ['--data', 'no-such-dataset', 'Looked in']),
    (['train', '--recipe', 'seed999'], ['Unknown recipe', 'covid_resnet']),
    (['train', '--format', 'xml', '--no-pretrained'], ['Unknown format']),
    (['train', '--quick', '--scale', '0.5', '--no-pretrained'], ['--quick already means --scale 0.25 --max-epochs 1']),
    (['evaluate'], ['--model']),
    (['evaluate', '--model', '/no/such/run'], ['does not exist']),
    (['export', '--model', '/no/such/run'], ['does not exist']),
    (['predict', '--model', '/no/such/run', 'x.png'], ['does not exist']),
])
def test_error_cases_one_line(args, needles, tmp_path):
    code, out, err = call(*args, '--out', tmp_path/'o') if args[0] == 'train' else call(*args)
    one_line_error(code, err, *needles)

def test_errors_against_a_real_run(run, tmp_path):
    code, _, err = call('evaluate', '--model', run, '--external', tmp_path/'no-such-set')
    one_line_error(code, err, '--external', 'no-such-set', 'not found')
    code, _, err = call('predict', '--model', run, tmp_path/'nothing-here.png')
    one_line_error(code, err, 'No such file')
    blocker = tmp_path/'a-file'; blocker.write_text('x')   # a folder that cannot be created, even by root
    code, _, err = call('predict', '--model', run, run.parent, '--out', blocker/'sub'/'p.csv')
    one_line_error(code, err, 'Cannot write', '--out')
    bad = tmp_path/'badrun'; shutil.copytree(run, bad, ignore=shutil.ignore_patterns('stages', 'report'))
    (bad/'weights.safetensors').write_bytes(b'garbage')
    code, _, err = call('predict', '--model', bad, run.parent)
    one_line_error(code, err, 'weights.safetensors')

def test_subprocess_help_and_version():
    code, out, err = cli('--help')
    assert code == 0 and all(c in out for c in ('train', 'evaluate', 'predict', 'export', 'compare', 'demo'))
    code, out, err = cli('train', '--help')
    assert code == 0 and '--max-per-class' in out and '--resume' in out
    code, out, err = cli('--version')
    assert code == 0 and out.startswith('covidxr ')

def test_compare_runs_table(run, mini, tmp_path):
    # a second "run": the same model evaluated on its training images, so the two rows differ
    code, _, err = call('evaluate', '--model', run, '--data', mini, '--split', 'train', '--out', tmp_path/'on-train')
    assert code == 0, err
    code, out, err = cli('compare', run, tmp_path/'on-train', '--names', 'test-split,train-split', '--out', tmp_path/'cmp')
    assert code == 0, err
    c = pd.read_csv(tmp_path/'cmp'/'compare.csv')
    assert list(c.model) == ['test-split', 'train-split']
    m = json.loads((run/'report'/'metrics.json').read_text())['overall']['accuracy']
    assert np.isclose(c.accuracy[0], 100*m['value']) and np.isclose(c.accuracy_lo[0], 100*m['lo'])
    assert 'test-split' in out and '95% CI' in (tmp_path/'cmp'/'compare.md').read_text()
    # different images: no paired comparison, and the table says why
    assert 'No paired comparison: on-train vs ' in out and 'only in A' in out and not (tmp_path/'cmp'/'paired.csv').exists()
    # the same test images scored single-pass and with test-time augmentation: each metric's difference with a paired CI
    for f in ('--no-tta', '--tta'):
        code, _, err = call('evaluate', '--model', run, '--data', mini, f, '--out', tmp_path/f[2:])
        assert code == 0, err
    code, out, err = cli('compare', tmp_path/'no-tta', tmp_path/'tta', '--names', 'single,tta', '--out', tmp_path/'cmp2')
    assert code == 0, err
    pt = pd.read_csv(tmp_path/'cmp2'/'paired.csv')
    assert list(pt.metric) == ['accuracy', 'balanced_accuracy', 'macro_f1', 'macro_auc'] and set(pt.model) == {'tta'}
    acc = lambda f: json.loads((f/'metrics.json').read_text())['overall']['accuracy']['value']
    assert np.isclose(pt['diff'][0], acc(tmp_path/'tta') - acc(tmp_path/'no-tta'))
    # `covidxr evaluate --data` scores the test split and takes the hospital-only baseline from the data's train rows
    n_train = (pd.read_csv(Path(mini)/'labels.csv').split == 'train').sum() if Path(mini).is_dir() else None
    vs = json.loads((tmp_path/'tta'/'metrics.json').read_text())['vs_source_prior']
    assert 'skipped' not in vs and (n_train is None or vs['n_train'] == n_train), vs
    assert 'Each run minus single, on the same' in out and 'paired.csv' in out
    code, _, err = call('compare', run, tmp_path/'nothing')
    one_line_error(code, err, 'nothing', 'metrics.json')
    code, _, err = call('compare', run, '--names', 'a,b')
    one_line_error(code, err, '--names has 2 names for 1 runs')

def test_train_scale_and_max_epochs_use_the_archs_recipe(mini, tmp_path):
    code, out, err = call('train', '--data', mini, '--recipe', 'seed002', '--arch', 'squeezenet1_1', '--scale', 0.125,
                          '--max-epochs', 1, '--no-pretrained', '--max-per-class', 3, '--bs', 3, '--out', tmp_path/'run')
    assert code == 0, err
    r = json.loads((tmp_path/'run'/'config.json').read_text())['recipe']
    st = r['stages'][0]; step = st['steps'][0]
    assert (r['arch'], st['size'], step['epochs']) == ('squeezenet1_1', 28, 1)   # 227 px (squeezenet's own) x 0.125
    np.testing.assert_allclose(step['milestones'], [5/9, 8/9])                   # Table 3: 9 epochs, milestones 5, 8
    assert '28 px' in out and 'from scratch' in out

def test_train_without_arch_uses_the_recipes_own(mini, tmp_path, monkeypatch):
    "No --arch: the recipe's architecture (seed000: EfficientNet-B7, seed003: EfficientNetV2-S); pretrained by default, so offline it names those weights"
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    for recipe, needle in (('seed000', 'tf_efficientnet_b7'), ('seed003', 'tf_efficientnetv2_s.in1k'), ('covid_resnet', 'resnet50-0676ba61.pth')):
        code, out, err = call('train', '--data', mini, '--recipe', recipe, '--quick', '--out', tmp_path/recipe)
        one_line_error(code, err, needle)

def test_train_cxr_cnn_implies_no_pretrained_and_the_recipes_split(mini, tmp_path):
    "seed002 with cxr_cnn: trained from scratch without --no-pretrained, on the same 80/20 then 90/10 split as train_recipe"
    from covidxr.data import read_dataset
    from covidxr.learn import get_recipe, data_fingerprint, _prepare_df
    code, out, err = call('train', '--data', mini, '--recipe', 'seed002', '--arch', 'cxr_cnn', '--quick',
                          '--max-per-class', 3, '--out', tmp_path/'run')
    assert code == 0, err
    cfg = json.loads((tmp_path/'run'/'config.json').read_text())
    assert (cfg['recipe']['arch'], cfg['recipe']['pretrained'], cfg['recipe']['valid_pct']) == ('cxr_cnn', False, 0.1)
    assert 'from scratch' in out
    r = get_recipe('seed002', arch='cxr_cnn')
    py = _prepare_df(read_dataset(mini), r, max_per_class=3)   # the Python path's split and subset
    assert cfg['data']['fingerprint'] == data_fingerprint(py)
    sp = pd.read_csv(tmp_path/'run'/'splits.csv', keep_default_na=False)   # what the CLI evaluates: the same rows
    assert sp.equals(py[list(sp.columns)].drop_duplicates().reset_index(drop=True).astype(str))
    full = _prepare_df(read_dataset(mini), r)   # 90/10 of the training pool (patient-disjoint, stratified)
    n = full[full.split != 'test'].drop_duplicates('path').split.value_counts()
    assert abs(n['valid']/(n['valid'] + n['train']) - 0.1) < 0.03, n
    code, out, err = call('train', '--data', mini, '--arch', 'cxr_cnn', '--recipe', 'seed002', '--pretrained', '--out', tmp_path/'o')
    one_line_error(code, err, 'cxr_cnn', 'no ImageNet weights')

def test_train_unknown_arch_for_seed002_is_one_line(mini, tmp_path):
    code, out, err = call('train', '--data', mini, '--recipe', 'seed002', '--arch', 'resnet50', '--no-pretrained', '--out', tmp_path/'o')
    one_line_error(code, err, 'seed002', 'resnet50')

"""The `cxr_scratch` recipe (issue #11; what `covidxr demo` trains): its fields are as documented in
nbs/03a_recipes.ipynb, and it trains end to end at quick scale on a few real cxr-mini images: on every training
patient (no valid split carved), at its (scaled) size from scratch, in bf16 on a CPU that has bf16 kernels,
history.csv has one row per epoch, and the final weights are the ones kept."""
import pandas as pd, torch
from covidxr.core import load_json, load_state_file

torch.set_num_threads(2)

def test_fields():
    from covidxr.learn import get_recipe, RECIPES
    assert 'cxr_scratch' in RECIPES
    r = get_recipe('cxr_scratch')
    assert (r.name, r.arch, r.pretrained, r.head, r.aug, r.resize, r.opt, r.bs, r.wd) == \
           ('cxr_scratch', 'resnet18', False, 'fastai', 'fastai_noflip', 'crop', 'adam', 32, 0.1)
    assert [(s.name, s.size) for s in r.stages] == [('main', 160)]
    steps = [t for s in r.stages for t in s.steps]
    assert [(t.epochs, t.lr, t.lr_lo, t.frozen, t.schedule) for t in steps] == [(16, 2e-3, None, False, 'one_cycle')]
    assert (r.evaluate, r.valid_pct, r.cpu_bf16, r.channels_last, r.tta) == ('final', 0, True, True, False)
    assert 'validation split' in r.notes and 'never on test' in r.notes and 'issue #11' in r.source
    assert r.provenance('ours') and r.provenance('fastai')   # every choice labelled

def test_trains_end_to_end(mini, tmp_path):
    from covidxr.data import read_dataset, make_splits, sample_per_class
    from covidxr.learn import train_recipe, get_recipe, cpu_bf16_supported
    r = get_recipe('cxr_scratch').scaled(size=0.25, max_epochs=2)   # 160 -> 40 px, two epochs
    df = sample_per_class(make_splits(read_dataset(mini), valid_pct=r.valid_pct, seed=42), 4)
    assert not (df.split == 'valid').any()
    learn = train_recipe(r, df, tmp_path/'run', show=False, device='cpu')
    run = tmp_path/'run'
    h = pd.read_csv(run/'history.csv')
    assert list(h['stage']) == ['main', 'main'] and list(h['size']) == [40, 40]
    assert h[['train_loss', 'valid_loss', 'accuracy', 'f1_macro']].notna().all().all()
    sp = pd.read_csv(run/'splits.csv')
    assert set(sp.split) == {'train', 'test'} and (sp.split == 'train').sum() == (df.split == 'train').sum()
    prec = 'bf16-cpu' if cpu_bf16_supported() else 'fp32'
    assert learn.cxr.precision == prec and load_json(run/'config.json')['precision'] == prec
    card = load_json(run/'card.json')
    assert (card['recipe'], card['arch'], card['pretrained']) == ('cxr_scratch', 'resnet18', False)
    sd = load_state_file(run/'weights.safetensors')
    assert set(sd) == set(learn.model.state_dict())
    final = {k: v.float() for k, v in learn.model.state_dict().items()}
    assert all(torch.equal(sd[k].float(), final[k]) for k in sd)   # evaluate='final': the last epoch's weights
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float32}   # bf16 autocast only: fp32 weights
    assert (card['aug'], card['tta']) == ('fastai_noflip', False)

def test_report_scores_with_tta_as_the_recipe_says(mini, tmp_path):
    """A recipe with tta=True (cxr_scratch until 2026-11-30) writes it in the card: `evaluate_run` then scores fastai's `learn.tta` with the run's training augmentations, seeded
    (same numbers twice, global generators untouched); tta=False scores one plain pass; a card without `tta` means no TTA"""
    import random
    from covidxr.data import read_dataset, make_splits, sample_per_class
    from covidxr.learn import train_recipe, get_recipe
    from covidxr.inference import run_learner
    from covidxr.report import evaluate_run, get_preds_df
    from covidxr.core import save_json
    r = get_recipe('cxr_scratch', tta=True).scaled(size=0.25, max_epochs=1)
    df = sample_per_class(make_splits(read_dataset(mini), valid_pct=r.valid_pct, seed=42), 3)
    train_recipe(r, df, tmp_path/'run', show=False, device='cpu')
    run, test = tmp_path/'run', df[df.split == 'test']
    tfms = lambda aug: [type(t).__name__ for t in run_learner(run, test, device='cpu', aug=aug).dls.after_batch]
    assert 'CoarseGridAffine' not in tfms('none') and 'CoarseGridAffine' in tfms('card')   # the card's aug preset: fastai's aug_transforms (its affine+warp as CoarseGridAffine)
    learn = run_learner(run, test, device='cpu', aug='card')
    state = random.getstate(), torch.random.get_rng_state()
    get_preds_df(learn, test, tta=True)
    assert random.getstate() == state[0] and torch.equal(torch.random.get_rng_state(), state[1])
    a = evaluate_run(run, test, tmp_path/'a', device='cpu', n_boot=50)
    b = evaluate_run(run, test, tmp_path/'b', device='cpu', n_boot=50)
    c = evaluate_run(run, test, tmp_path/'c', device='cpu', tta=False, n_boot=50)
    assert a['tta'] and b['tta'] and not c['tta']
    pa, pb, pc = (pd.read_csv(tmp_path/k/'preds.csv') for k in 'abc')
    cols = [k for k in pa if k.startswith('p_')]
    pd.testing.assert_frame_equal(pa, pb)                        # seeded: the same numbers
    assert (pa[cols] - pc[cols]).abs().to_numpy().max() > 1e-4   # TTA changed the probabilities
    from covidxr.inference import predict_paths
    pp = predict_paths(run, list(test.path), tta=True)           # `covidxr predict --tta`: the report's probabilities
    assert list(pp.path) == list(pa.path) and (pp.error == '').all()
    assert abs(pp[cols].to_numpy() - pa[cols].to_numpy()).max() < 1e-6
    assert abs(predict_paths(run, list(test.path))[cols].to_numpy() - pc[cols].to_numpy()).max() < 1e-5   # single-pass: the --no-tta report
    card = load_json(run/'card.json'); card.pop('tta'); save_json(card, run/'card.json')
    assert not evaluate_run(run, test, tmp_path/'d', device='cpu', n_boot=50)['tta']

def test_cli_says_when_valid_columns_are_the_test_split(mini, tmp_path):
    "`covidxr train` with cxr_scratch (no valid split) says its per-epoch valid values are the test split's; with --valid-pct it does not"
    from covidxr.test_utils import cli_call as call
    say = "no validation split: the recipe trains on every training patient and keeps its final weights"
    common = ('train', '--data', mini, '--recipe', 'cxr_scratch', '--quick', '--no-pretrained', '--max-per-class', 2)
    code, out, err = call(*common, '--out', tmp_path/'a')
    assert code == 0 and say in out, out + err
    assert set(pd.read_csv(tmp_path/'a'/'splits.csv').split) == {'train', 'test'}
    code, out, err = call(*common, '--valid-pct', 0.2, '--out', tmp_path/'b')
    assert code == 0 and say not in out, out + err
    assert 'valid' in set(pd.read_csv(tmp_path/'b'/'splits.csv').split)

"""Each seed recipe against its paper (issue #9): the numbers as data (sizes, epochs, LRs per parameter group, frozen
steps, batch sizes, head layers, ImageNet weights file, evaluated checkpoint, split), every recipe read back from a
real run on a 4-class subset of cxr-mini (config.json, history.csv, card.json), and the provenance labels."""
import json, os, time
import numpy as np, pandas as pd, pytest, torch
from fastai.torch_core import even_mults
from covidxr.core import load_json, load_state_file, weights_source, MissingWeightsError
from covidxr.recipes import get_recipe, RECIPES, seed002_grid, SEED002_TABLE3

torch.set_num_threads(2)

# (stage size, stage batch size, [(epochs, frozen, lr, lr_lo)]) as each paper (or the author's code) gives them
PAPER = {
    'covid_resnet': [(128, 32, [(3, True, 1e-3, None), (5, False, 5e-4, 5e-6)]),      # seed 004 II.D, stage I
                     (224, 32, [(3, True, 1e-4, None), (5, False, 5e-5, 5e-7)]),      # stage II
                     (229, 32, [(25, False, 1e-4, 1e-6)])],                            # stage III: slice(1e-6, 1e-4)
    'seed001': [(224, 128, [(5, True, 2e-3, None), (5, False, 4e-4, 1e-6)]),           # blog + notebook, bs 128
                (448, 16, [(5, True, 4e-4, None), (5, False, 8e-5, 1e-5)])],           # notebook: (5, 4e-4), (5, slice(1e-5, 8e-5)), bs 16
    'seed002': [(224, 32, [(10, False, 1e-4, None)])],                                 # Table 3, ResNet18
    'seed003': [(224, 32, [(3, True, 1e-3, None), (10, False, 1e-3, 1e-5)])],          # ours (the write-up gives none)
    'seed000': [(256, 8, [(30, False, 1e-4, None)])],                                  # repository config.py (300 capped to 30)
}
WEIGHTS = {'covid_resnet': ('IMAGENET1K_V1', 'resnet50-0676ba61.pth'), 'seed001': ('IMAGENET1K_V1', 'resnet50-0676ba61.pth'),
           'seed002': ('IMAGENET1K_V1', 'resnet18-f37072fd.pth')}
EVALUATE = {'covid_resnet': 'final', 'seed001': 'final', 'seed002': 'best', 'seed003': 'best', 'seed000': 'best'}

@pytest.mark.parametrize('name', list(PAPER))
def test_recipe_numbers_are_the_papers(name):
    r = get_recipe(name)
    got = [(s.size, s.bs or r.bs, [(t.epochs, t.frozen, t.lr, t.lr_lo) for t in s.steps]) for s in r.stages]
    assert got == PAPER[name]
    assert r.evaluate == EVALUATE[name]
    if name in WEIGHTS:
        tag, fn = WEIGHTS[name]
        assert r.imagenet_weights == tag and weights_source(get_arch_model(r), tag)['file'] == fn

def get_arch_model(r):
    from covidxr.models import get_arch
    return get_arch(r.arch).model

def test_recipe_details():
    c, s1, s2, s3, s0 = (get_recipe(n) for n in ('covid_resnet', 'seed001', 'seed002', 'seed003', 'seed000'))
    assert (c.valid_pct, c.aug, c.stats, c.opt) == (0.0, 'covid_resnet', 'pretrained', 'adam')   # whole training split
    assert (s1.stats, s1.aug, s1.valid_pct) == ('batch', 'fastai', 0.2)                         # .normalize() without stats
    assert (s2.train_copies, s2.valid_pct, s2.test_pct, s2.monitor, s2.head, s2.wd) == (2, 0.1, 0.2, 'accuracy', 'torchvision', 0.0)
    assert (s3.imagenet_weights, s3.aug, s3.head, s3.test_pct) == ('in1k', 'none', 'seed003', 0.1)
    assert (s0.stats, s0.aug, s0.head, s0.opt, s0.wd, s0.class_weights) == ('none', 'seed000', 'seed000', 'radam', 1e-3, None)
    from covidxr.learn import _opt_func
    names = lambda r: [getattr(c, '__name__', '') for c in _opt_func(r)([torch.nn.Parameter(torch.zeros(1))], lr=1e-4).cbs]
    assert 'l2_reg' in names(s0) and 'weight_decay' not in names(s0)      # the repository's RAdam: L2 in the gradient
    assert 'weight_decay' in names(c) and c.decouple_wd                    # fastai v1's true_wd (AdamW)
    t = s0.stages[0].steps[0]
    assert (t.schedule, t.factor, t.patience, t.min_lr) == ('plateau', 0.7, 5, 1e-7)
    assert [(a, get_recipe('seed002', arch=a).stages[0].steps[0].milestones) for a in SEED002_TABLE3] == \
           [(a, m) for a, (_, m) in SEED002_TABLE3.items()]

@pytest.mark.parametrize('name', list(PAPER))
def test_provenance_is_labelled(name):
    r = get_recipe(name)
    assert r.source and r.notes
    tags = {n.split(']')[0] + ']' for n in r.notes.split(' | ')}
    assert tags <= {'[paper]', '[code]', '[fastai v1]', '[ours]'}, tags
    assert r.provenance('paper') and r.provenance('ours')   # every recipe says what is the paper's and what is assumed
    if name == 'seed002': assert any('gamma' in n for n in r.provenance('ours'))   # the MultiStepLR gamma is an assumption
    if name == 'seed000': assert any('30 epochs, not 300' in n for n in r.provenance('ours'))
    if name in ('covid_resnet', 'seed001'): assert any('19c8e357' in n for n in r.provenance('fastai v1'))

def test_heads_keep_the_library_classifier():
    "seed 002's networks keep their own classifier with the last layer replaced; seed 000 keeps B7's 2560->1000 fc"
    from covidxr.models import create_cxr_model
    import torchvision
    m = create_cxr_model('vgg19', 4, head=get_recipe('seed002', arch='vgg19').head)
    lin = [x for x in m[1] if isinstance(x, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lin] == [(25088, 4096), (4096, 4096), (4096, 4)]   # fc6, fc7, new fc8
    m = create_cxr_model('resnet18', 4, head=get_recipe('seed002').head)
    assert [type(x).__name__ for x in m[1]] == ['AdaptiveAvgPool2d', 'Flatten', 'Linear'] and m[1][-1].out_features == 4
    m = create_cxr_model('efficientnet_b7', 4, head=get_recipe('seed000').head)
    lin = [x for x in m[1] if isinstance(x, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lin] == [(2560, 1000), (1000, 4)]
    assert [x.p for x in m[1] if isinstance(x, torch.nn.Dropout)] == [0.5]

@pytest.mark.parametrize('name', ['covid_resnet', 'seed001', 'seed002', 'seed003', 'seed000'])
def test_missing_weights_name_the_recipes_file(name, tmp_path, monkeypatch, mini):
    "Offline with an empty cache, every pretrained recipe stops before training and names the weights it needs"
    from covidxr.learn import train_recipe
    from covidxr.test_utils import cxr_mini_4class
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    r = get_recipe(name)
    want = {'covid_resnet': ['resnet50-0676ba61.pth', 'resnet50-19c8e357.pth'], 'seed001': ['resnet50-0676ba61.pth', 'resnet50-19c8e357.pth'],
            'seed002': ['resnet18-f37072fd.pth'], 'seed003': ['tf_efficientnetv2_s.in1k'], 'seed000': ['tf_efficientnet_b7']}[name]
    from covidxr.models import get_arch, arch_weights
    try: found = arch_weights(get_arch(r.arch), None, r.imagenet_weights)
    except MissingWeightsError: found = None
    if found is not None: pytest.skip(f'{found} is cached on this machine')
    with pytest.raises(MissingWeightsError) as e: train_recipe(r, cxr_mini_4class(max_per_class=2), tmp_path/'run', show=False)
    for w in want: assert w in str(e.value), (w, str(e.value))
    assert not (tmp_path/'run'/'history.csv').exists()

def test_seed002_grid_is_tables_4_and_5():
    g = seed002_grid()
    assert len(g) == 17
    aug = {k for k, r in g.items() if r.aug == 'seed002'}
    assert all(g[k].train_copies == 2 for k in aug) and all(r.train_copies == 1 for k, r in g.items() if k not in aug)
    assert {k for k, r in g.items() if not r.pretrained} == {'cxr_cnn', 'cxr_cnn_aug'} | {f'{a}_aug_scratch' for a in SEED002_TABLE3 if a != 'cxr_cnn'}

@pytest.fixture(scope='module')
def four(mini):
    "cxr-mini as 4 classes (normal / bacteria / viral / COVID-19), 3 images per class and split, with a valid split"
    from covidxr.test_utils import cxr_mini_4class
    from covidxr.splits import make_splits, sample_per_class
    df = make_splits(cxr_mini_4class(), valid_pct=0.3, seed=42)
    return sample_per_class(df, 3)

# what each run is read back against: (arch used for the CPU run, frozen per step at full scale)
RUNS = {'covid_resnet': 'resnet18', 'seed001': 'resnet18', 'seed002': 'vgg19', 'seed003': 'efficientnetv2_s', 'seed000': 'efficientnet_b7'}

@pytest.mark.parametrize('name', list(RUNS))
def test_recipe_read_back_from_a_run(name, four, tmp_path):
    "Train each recipe at 32 px, 1 epoch per step, from scratch on 4 real classes; read config, history and card back"
    from covidxr.learn import train_recipe
    r = get_recipe(name, arch=RUNS[name], pretrained=False)
    q = r.scaled(size=32/r.stages[0].size, max_epochs=1)
    t0 = time.time()
    learn = train_recipe(q, four, tmp_path/'run', show=False, device='cpu', max_per_class=1 if 'efficientnet' in name or name == 'seed000' else None)
    print(f'{name}: {time.time()-t0:.1f}s')
    run = tmp_path/'run'
    cfg, card, h = load_json(run/'config.json'), load_json(run/'card.json'), pd.read_csv(run/'history.csv')
    back = get_recipe(cfg['recipe']['name']).from_dict(cfg['recipe'])
    assert back == q   # the resolved recipe is saved whole
    # stages, steps, batch sizes, frozen flags and LRs per group as the paper's, one row per epoch
    want = [(s.size, s.bs or q.bs, t) for s in q.stages for t in s.steps]
    assert len(h) == len(want)
    for (_, row), (size, bs, t) in zip(h.iterrows(), want):
        assert (row['size'], row['bs'], bool(row['frozen'])) == (size, bs, t.frozen)
        assert row['trainable_groups'] == (1 if t.frozen else 3)
        lrs = [t.lr] if t.frozen or t.lr_lo is None else list(even_mults(t.lr_lo, t.lr, 3))
        np.testing.assert_allclose([row['lr_hi']] if t.frozen else [row['lr_lo'], row['lr_hi']],
                                   [lrs[-1]] if t.frozen else [lrs[0], lrs[-1]], rtol=1e-6)
    assert [s for s in PAPER[name]][0][0] == r.stages[0].size   # the run's sizes are the paper's, scaled
    # 4 classes from the data, the recipe's head, the evaluated checkpoint
    assert card['classes'] == ['COVID-19', 'bacteria', 'normal', 'viral'] and learn.cxr.n_out == 4
    assert card['head'] == (r.head or 'fastai') and card['arch'] == RUNS[name]
    if r.evaluate == 'final':
        assert card['best']['monitor'] == 'final' and card['best']['stage'] == q.stages[-1].name
        final = load_state_file(run/'stages'/f'{q.stages[-1].name}.safetensors')
        kept = load_state_file(run/'weights.safetensors')
        assert all(torch.equal(final[k], kept[k]) for k in final)   # the final weights are the evaluated ones
    else: assert card['best']['monitor'] == r.monitor
    if name == 'seed002': assert cfg['data']['n']['COVID-19']['train'] == 2*3   # originals + one augmented copy each
    if name == 'seed002':   # only the copies are augmented: an item-level CopyAug, no augmentation among the batch transforms
        from covidxr.data import CopyAug, VFlip
        assert [type(t).__name__ for t in learn.dls.train.after_item.fs if isinstance(t, CopyAug)] == ['CopyAug']
        assert not any(isinstance(t, VFlip) for t in learn.dls.train.after_batch.fs)
    if name == 'seed000': np.testing.assert_allclose(card['mean'], [0, 0, 0]); np.testing.assert_allclose(card['std'], [1, 1, 1])
    if name == 'seed001': assert card['mean'] != [0.485, 0.456, 0.406]   # one training batch's statistics

def test_evaluate_best_needs_a_valid_split(four, tmp_path):
    from covidxr.learn import train_recipe
    r = get_recipe('seed002', arch='cxr_cnn', valid_pct=0.0).scaled(quick=True)
    with pytest.raises(ValueError, match="evaluate='final'"):
        train_recipe(r, four[four.split != 'valid'], tmp_path/'run', show=False)

def test_seed003_on_a_folder_dataset_with_tuberculosis(mini, tmp_path):
    """Seed 003's 4-class task with tuberculosis, read from a class-folder layout (as the Kaggle sets ship); the images are
    real cxr-mini X-rays copied under four class folders (a pipeline check, not a TB model)"""
    import shutil
    from covidxr.data import read_dataset
    from covidxr.learn import train_recipe
    src = read_dataset(mini)
    root = tmp_path/'cxr4'
    paths = list(src.sample(40, random_state=0).path)
    for i, cls in enumerate(['COVID-19', 'normal', 'pneumonia', 'Tuberculosis']):
        (root/cls).mkdir(parents=True)
        for j, p in enumerate(paths[10*i:10*i + 10]): shutil.copy(p, root/cls/f'{cls}_{j}{os.path.splitext(p)[1]}')
    df = read_dataset(root)
    assert sorted(df.label.unique()) == ['COVID-19', 'Tuberculosis', 'normal', 'pneumonia']
    r = get_recipe('seed003', pretrained=False)   # 10% test, 20% of the rest as validation
    learn = train_recipe(r.scaled(size=32/224, max_epochs=1), df, tmp_path/'run', show=False, device='cpu', max_per_class=2)
    card = load_json(tmp_path/'run'/'card.json')
    assert card['classes'] == ['COVID-19', 'Tuberculosis', 'normal', 'pneumonia'] and card['head'] == 'seed003'
    assert learn.model[1][-1].out_features == 4

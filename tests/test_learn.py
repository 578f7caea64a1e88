"""covidxr.learn on CPU with tiny images and a small subset of the real cxr-mini: every recipe runs its stages with
the right sizes, frozen/unfrozen parameter groups and learning rates (read back from the learner while it trains),
the loss falls, and a stopped or crashed run resumes at the next stage."""
import json, time
import numpy as np, pandas as pd, pytest, torch
from fastai.vision.all import Callback
from fastai.torch_core import even_mults
from covidxr.core import load_json, load_state_file, MissingWeightsError
from covidxr.models import create_cxr_model

torch.set_num_threads(2)

def _subset(mini, n_train, n_valid):
    from covidxr.data import read_dataset, make_splits
    df = make_splits(read_dataset(mini), seed=42)
    parts = [g.sample(min(len(g), {'train': n_train, 'valid': n_valid}[s]), random_state=0)
             for (s, _), g in df.groupby(['split', 'label']) if s in ('train', 'valid')]
    out = pd.concat(parts); out.attrs = dict(df.attrs)
    return out

@pytest.fixture(scope='module')
def small(mini):
    "4 training and 2 validation images per class (patient-disjoint splits of cxr-mini): 3 batches of 4"
    return _subset(mini, 4, 2)

@pytest.fixture(scope='module')
def small8(mini): return _subset(mini, 8, 4)

class Probe(Callback):
    "Record, for every fit, what the learner really does: input sizes, per-group LRs and trainable flags"
    order = 99   # after fastai's ParamScheduler and covidxr's MultiStepLR have set this batch's LRs
    def __init__(self): self.fits = []
    def before_fit(self):
        self.fits.append(dict(sizes=set(), lrs=[], epochs_lrs={}, hypers=dict(self.opt.hypers[-1]),
                              first_param=[(k, v.detach().clone()) for k, v in self.learn.model.named_parameters()][0]))
    def before_batch(self):
        if not self.training: return
        f = self.fits[-1]
        f['sizes'].add(tuple(self.xb[0].shape[-2:]))
        lrs = [h['lr'] for h in self.opt.hypers]
        f['lrs'].append(lrs); f['epochs_lrs'].setdefault(self.epoch, lrs)
        bns = {id(p) for m in self.learn.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               for p in m.parameters()}
        f['trainable'] = [all(p.requires_grad for p in g if id(p) not in bns) for g in self.opt.param_lists]
        f['any_trainable'] = [any(p.requires_grad for p in g if id(p) not in bns) for g in self.opt.param_lists]

def _expected(lr, lo, frozen):
    if frozen: return lr
    return list(even_mults(lo, lr, 3)) if lo is not None else [lr]*3

def check_fit(f, size, frozen, lr_groups, one_cycle=True):
    assert f['sizes'] == {(size, size)}, (f['sizes'], size)
    if frozen:   # only the head group trains (BatchNorm layers excepted, fastai's train_bn)
        assert f['any_trainable'] == [False, False, True], f['any_trainable']
    else: assert f['trainable'] == [True, True, True], f['trainable']
    first = np.array(f['lrs'][0])
    peak = first*25 if one_cycle else first   # fastai's one-cycle starts at lr_max/25
    if frozen: np.testing.assert_allclose(peak[-1], lr_groups, rtol=1e-6)
    else: np.testing.assert_allclose(peak, lr_groups, rtol=1e-6)

def test_covid_resnet_stages_sizes_frozen_lrs(small, tmp_path):
    from covidxr.learn import covid_resnet
    p = Probe(); out = tmp_path/'run'
    t0 = time.time()
    learn = covid_resnet(small, out=out, arch='resnet18', pretrained=False, quick=True, bs=4, show=False, cbs=[p])
    print(f'covid_resnet quick resnet18: {time.time()-t0:.1f}s')
    # the paper's schedule (seed 004), scaled to 32/56/57 px and 1 epoch per step
    want = [(32, True, 1e-3, None), (32, False, 5e-4, 5e-6),
            (56, True, 1e-4, None), (56, False, 5e-5, 5e-7),
            (57, False, 1e-4, 1e-6)]
    assert len(p.fits) == 5
    for f, (size, frozen, lr, lo) in zip(p.fits, want): check_fit(f, size, frozen, _expected(lr, lo, frozen))
    for f in p.fits:  # Adam as fastai's Adam: decoupled wd 0.01
        assert f['hypers']['wd'] == 0.01 and f['hypers']['sqr_mom'] == 0.99
    h = pd.read_csv(out/'history.csv')
    assert list(h['stage']) == ['stage1']*2 + ['stage2']*2 + ['stage3']
    assert list(h['size']) == [32, 32, 56, 56, 57] and list(h['frozen']) == [True, False, True, False, False]
    np.testing.assert_allclose(h['lr_hi'], [1e-3, 5e-4, 1e-4, 5e-5, 1e-4], rtol=1e-6)
    np.testing.assert_allclose(h['lr_lo'][[1, 3, 4]], [5e-6, 5e-7, 1e-6], rtol=1e-6)
    assert {'train_loss', 'valid_loss', 'accuracy', 'f1_macro', 'recall_COVID-19', 'seconds'} <= set(h.columns)
    for s in ('stage1', 'stage2', 'stage3'): assert (out/'stages'/f'{s}.safetensors').exists()
    cfg, card = load_json(out/'config.json'), load_json(out/'card.json')
    assert cfg['recipe']['name'] == 'covid_resnet' and cfg['recipe']['stages'][2]['size'] == 57 and cfg['seed'] == 42
    assert card['classes'] == ['COVID-19', 'normal', 'pneumonia'] and card['arch'] == 'resnet18'
    # seed 004 reports its final model: the card names the last step, and the kept weights are the final ones
    assert (card['best']['stage'], card['best']['step'], card['best']['monitor']) == ('stage3', 'whole', 'final')
    assert card['size'] == [57, 57]
    # the card rebuilds the model, and weights.safetensors is what the learner ends with (the final epoch)
    m = create_cxr_model(card['arch'], card['n_out'], head=card['head'])
    m.load_state_dict(load_state_file(out/'weights.safetensors'))
    for a, b in zip(m.state_dict().values(), learn.model.state_dict().values()): assert torch.equal(a.cpu(), b.cpu())

@pytest.mark.parametrize('name,arch', [('seed001', 'resnet18'), ('seed002', 'cxr_cnn'), ('seed003', 'efficientnetv2_s'),
                                       ('seed000', 'efficientnet_b7')])
def test_seed_recipes_run_their_stages(small, tmp_path, name, arch):
    from covidxr.learn import get_recipe, train_recipe
    r = get_recipe(name, arch=arch, bs=4, pretrained=False)
    q = r.scaled(size=32/r.stages[0].size, max_epochs=1)   # first stage at 32 px, 1 epoch per step
    p = Probe(); t0 = time.time()
    big = arch.startswith('efficientnet')   # EfficientNets are slow on a CPU: 2 images per class (one batch)
    train_recipe(q, small, tmp_path/'run', show=False, cbs=[p], max_per_class=2 if big else None)
    print(f'{name} {arch}: {time.time()-t0:.1f}s')
    steps = [(s.size, t) for s in q.stages for t in s.steps]
    assert len(p.fits) == len(steps)
    for f, (size, t) in zip(p.fits, steps):
        check_fit(f, size, t.frozen, _expected(t.lr, t.lr_lo, t.frozen), one_cycle=t.schedule == 'one_cycle')
    h = pd.read_csv(tmp_path/'run'/'history.csv'); card = load_json(tmp_path/'run'/'card.json')
    assert len(h) == q.epochs and card['arch'] == arch
    if name == 'seed001':  # the blog's numbers: 224 then 448 px; unfrozen slice(1e-6, 4e-4)
        assert [s.size for s in q.stages] == [32, 64]
        np.testing.assert_allclose(h['lr_lo'][1], 1e-6); np.testing.assert_allclose(h['lr_hi'][1], 4e-4)
    if name == 'seed002':  # PyTorch Adam defaults, no weight decay, best by accuracy
        hy = p.fits[0]['hypers']
        assert (hy['wd'], hy['sqr_mom'], hy['eps']) == (0.0, 0.999, 1e-8) and card['best']['monitor'] == 'accuracy'
    if name == 'seed003': assert card['head'] == 'seed003' and r.stages[0].size == 224
    if name == 'seed000':
        assert p.fits[0]['hypers']['wd'] == 1e-3 and 'beta' in p.fits[0]['hypers']   # RAdam
        assert r.stages[0].size == 256 and get_recipe('seed000').bs == 8   # the recipe's own batch size

def test_seed002_multistep_lr_drops_at_milestones(small, tmp_path):
    "Adam 1e-4 with MultiStepLR(gamma=0.1): LRs read from the optimizer in each epoch"
    from covidxr.learn import get_recipe, train_recipe
    r = get_recipe('seed002', arch='cxr_cnn', bs=4, **{'train.size': 32, 'train.whole.epochs': 3,
                                                       'train.whole.milestones': [1, 2]})
    p = Probe(); train_recipe(r, small, tmp_path/'run', show=False, cbs=[p])
    e = p.fits[0]['epochs_lrs']
    np.testing.assert_allclose([e[0][0], e[1][0], e[2][0]], [1e-4, 1e-5, 1e-6], rtol=1e-6)
    assert p.fits[0]['trainable'] == [True, True, True]   # from scratch: whole network from the start

def test_loss_falls_on_cxr_mini(small8, tmp_path):
    "A few epochs on 24 real images: the training loss falls well below its first value"
    from covidxr.learn import get_recipe, train_recipe
    r = get_recipe('seed002', arch='resnet18', bs=8, pretrained=False, aug='none',
                   **{'train.size': 32, 'train.whole.epochs': 6, 'train.whole.lr': 1e-3, 'train.whole.milestones': [5]})
    train_recipe(r, small8, tmp_path/'run', show=False)
    h = pd.read_csv(tmp_path/'run'/'history.csv')
    print(h[['epoch', 'train_loss', 'valid_loss', 'accuracy']])
    assert h['train_loss'].iloc[-2:].mean() < 0.7*h['train_loss'].iloc[0], list(h['train_loss'])

class Boom(Callback):
    "Crash in the middle of stage 2 (its 'whole' step), like a killed job"
    def before_batch(self):
        if self.training and self.xb[0].shape[-1] == 56 and self.opt.frozen_idx == 0: raise RuntimeError('boom')

def test_stopped_run_resumes_at_next_stage(small, tmp_path):
    from covidxr.learn import covid_resnet
    out = tmp_path/'run'; kw = dict(out=out, arch='squeezenet1_1', pretrained=False, quick=True, bs=4, show=False)
    covid_resnet(small, stop_after='stage1', **kw)
    assert load_json(out/'state.json')['done'] == ['stage1'] and len(pd.read_csv(out/'history.csv')) == 2
    with pytest.raises(FileExistsError, match='resume=True'): covid_resnet(small, **kw)
    p = Probe()
    covid_resnet(small, resume=True, cbs=[p], **kw)
    assert [f['sizes'] for f in p.fits] == [{(56, 56)}]*2 + [{(57, 57)}]   # stage 1 is not trained again
    s1 = load_state_file(out/'stages'/'stage1.safetensors')
    k, v = p.fits[0]['first_param']
    assert torch.equal(v.cpu(), s1[k])   # stage 2 starts from stage 1's weights
    h = pd.read_csv(out/'history.csv')
    assert list(h['stage']) == ['stage1']*2 + ['stage2']*2 + ['stage3'] and list(h['run_epoch']) == [0, 1, 2, 3, 4]
    assert load_json(out/'state.json')['done'] == ['stage1', 'stage2', 'stage3']

def test_crashed_stage_is_rerun_on_resume(small, tmp_path):
    from covidxr.learn import covid_resnet
    out = tmp_path/'run'; kw = dict(out=out, arch='squeezenet1_1', pretrained=False, quick=True, bs=4, show=False)
    with pytest.raises(RuntimeError, match='boom'): covid_resnet(small, cbs=[Boom()], **kw)
    assert load_json(out/'state.json')['done'] == ['stage1']
    assert list(pd.read_csv(out/'history.csv')['stage']) == ['stage1', 'stage1', 'stage2']   # stage 2 head ran
    with pytest.raises(ValueError, match='recipe differs'): covid_resnet(small, resume=True, **dict(kw, bs=2))
    p = Probe(); covid_resnet(small, resume=True, cbs=[p], **kw)
    assert [f['sizes'] for f in p.fits] == [{(56, 56)}, {(57, 57)}]   # after the last completed epoch: stage 2's head step is not redone
    assert list(pd.read_csv(out/'history.csv')['stage']) == ['stage1']*2 + ['stage2']*2 + ['stage3']

def test_pretrained_without_weights_fails_before_writing(small, tmp_path, monkeypatch):
    from covidxr.learn import covid_resnet
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    t0 = time.time()
    with pytest.raises(MissingWeightsError, match='resnet50-0676ba61.pth'):   # IMAGENET1K_V1, the 2020 weights
        covid_resnet(small, out=tmp_path/'run', pretrained=True, quick=True, show=False)
    assert time.time() - t0 < 10 and not (tmp_path/'run'/'history.csv').exists()


def test_four_classes_train_evaluate_report(mini, tmp_path):
    "COVID-ResNet's 4-class task (normal / bacteria / viral / COVID-19) on real cxr-mini images: train -> evaluate -> report"
    from covidxr.learn import covid_resnet
    from covidxr.report import evaluate_run
    from covidxr.test_utils import cxr_mini_4class
    df = cxr_mini_4class(max_per_class=4)   # cxr-mini's own train/test split, 4 images per class and split
    assert sorted(df.label.unique()) == ['COVID-19', 'bacteria', 'normal', 'viral'] and not (df.split == 'valid').any()
    out = tmp_path/'run'
    learn = covid_resnet(df, out=out, arch='resnet18', pretrained=False, quick=True, bs=4, show=False)
    cfg, card = load_json(out/'config.json'), load_json(out/'card.json')
    assert learn.cxr.n_out == 4 and card['classes'] == ['COVID-19', 'bacteria', 'normal', 'viral']
    assert (learn.cxr.run_dir, learn.cxr.recipe.name, learn.cxr.monitor, learn.cxr.state['done']) == (out, 'covid_resnet', learn.cxr.recipe.monitor, ['stage1', 'stage2', 'stage3'])
    n = cfg['data']['n']   # valid_pct=0: the whole training split is trained on, nothing carved out
    assert all(n[c].get('train') == 4 and not n[c].get('valid') for c in card['classes'])
    m = evaluate_run(out, df[df.split == 'test'], tmp_path/'report')
    assert m['n_images'] == 16
    text = json.dumps(m)
    for c in ('COVID-19', 'bacteria', 'normal', 'viral'): assert c in text
    assert (tmp_path/'report'/'metrics.json').exists() and any((tmp_path/'report').glob('report.*'))

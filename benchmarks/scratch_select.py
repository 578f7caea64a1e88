"""How `cxr_scratch`'s schedule was chosen: train a variant on cxr-mini's `train` split and score it on the patient-
disjoint `valid` split only (the test split is removed before training). Issue #11; the table is in nbs/03a_recipes.ipynb.

    .venv/bin/python benchmarks/scratch_select.py NAME [NAME ...]        # variants below, e.g. fp32_160x16 bf16_160x16
    .venv/bin/python benchmarks/scratch_select.py NAME --train-seed 43   # the same split, another training seed
    .venv/bin/python benchmarks/scratch_select.py NAME --against crop_160x16   # then NAME minus the recipe, paired
    .venv/bin/python benchmarks/scratch_select.py NAME --rescore         # predictions of NAME's existing run folder
    .venv/bin/python benchmarks/scratch_select.py --list

Each variant is `cxr_scratch` (with `BASE`'s fields: fastai's augmentation, weight decay 0.01) with one stage and the fields given, final weights (`evaluate='final'`); the split is
`make_splits(valid_pct=0.2, seed=42)`. Prints macro-F1 on `valid` with its patient-bootstrap 95% CI, with and without
fastai's test-time augmentation (seeded, as covidxr's report does), and the training wall time; the validation
predictions tables are saved beside the run folders (`OUT/NAME.seedS.valid_preds[_tta].csv`). `--against BASE[:SEED]`
then prints each variant minus BASE with a paired patient-bootstrap CI (`covidxr.metrics.paired_diff`): the same 217
images score both, which separates far smaller differences than two overlapping CIs. 5-10 minutes per variant on 2 CPU cores (bf16 ones faster).
Besides Recipe fields a variant may set `mixup` (fastai's `MixUp(alpha)` callback), `cutmix` (fastai's `CutMix(alpha)`), `prog` (progressive resizing:
(size, epochs) stages, one-cycle each) `ema` (an EMA of the weights, decay per step, kept at the end), `srcbal`
(batches sampled evenly over (source, label) groups), `zinit` (zero-init residual BatchNorm), `arch` (covidxr's registry name, or timm's resnet18d/resnet10t registered for the experiment; from scratch), `aug` (a covidxr `AUG_PRESETS` name, e.g. 'fastai_noflip', or one of
`EXTRA_AUG` below, fastai's random-resized crop, registered in `AUG_PRESETS` for the experiment) or `clahe` (CLAHE on every resized item, for that variant only; an experiment:
covidxr's recipes, predict and web app have no CLAHE).
"""
import argparse, dataclasses, time, warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

# The fields every variant starts from: `cxr_scratch` as it was while these variants were run (it adopted no flip and weight
# decay 0.1 on 2026-11-30), so that each row of the table in 03a_recipes reruns as it ran
BASE = dict(aug='fastai', wd=0.01)
# name: (size, epochs, peak LR, other Recipe fields)
VARIANTS = {
    'fp32_160x16':      (160, 16, 2e-3, dict(cpu_bf16=False, channels_last=False, resize='squish')),
    'fp32_160x16_lr3':  (160, 16, 3e-3, dict(cpu_bf16=False, channels_last=False, resize='squish')),
    'fp32_160x16_bs16': (160, 16, 2e-3, dict(cpu_bf16=False, channels_last=False, resize='squish', bs=16)),
    'bf16_160x16':      (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='squish')),    # the recipe until 2026-11-29
    'bf16_160x32':      (160, 32, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='squish')),
    # fastai's MixUp callback (alpha), and progressive resizing (size, epochs) stages of one-cycle each
    'mixup_160x16':     (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='squish', mixup=0.4)),
    'mixup_128x24':     (128, 24, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='squish', mixup=0.4)),
    'prog_128x10_192x6': (192, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='squish', prog=((128, 10), (192, 6)))),
    # CLAHE (OpenCV, clip 2, 8x8 tiles) on the resized item, before augmentation, in training and in scoring
    'clahe_160x16':     (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='squish', clahe=True)),
    # plain fastai's `Resize(160)` default: a random square crop in training, the centre crop in scoring
    'crop_160x16':      (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop')),   # the recipe
    # the same budget as plain fastai's 16 epochs at 160 px (~600 s on 1,083 images): a larger size instead of idle time
    'crop_192x16':      (192, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop')),
    # an exponential moving average of the weights (and BatchNorm buffers), decay per step, kept as the final weights
    'ema_crop_160x16':  (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', ema=0.99)),
    # training batches drawn with weights 1/(training images of the row's source and label): every (source, label) group
    # equally often, so the within-source distinctions (ieee8023 COVID-19 vs pneumonia) weigh as much as the NIH ones
    'srcbal_crop_160x16': (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', srcbal=True)),
    # the residual branches' last BatchNorm starts at zero (each block starts as the identity; Goyal et al. 2017, fastai's
    # xresnet and timm's ResNets do this; torchvision's resnet18 does not unless `zero_init_residual=True`)
    'zinit_crop_160x16': (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', zinit=True)),
    # timm's resnet18d: ResNet-D (3-conv deep stem, average-pool shortcut downsampling; "Bag of tricks", He et al. 2019),
    # zero-init last BatchNorm, the same widths as resnet18
    'r18d_crop_160x16': (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', arch='resnet18d')),
    # fastai's augmentation without the horizontal flip: a chest film is not left-right symmetric (heart, aortic knob,
    # gastric bubble), and a mirrored film is not one a model will be shown
    'noflip_crop_160x16': (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', aug='fastai_noflip')),
    # ten times the weight decay (0.1, decoupled): stronger regularisation for ~900 images from scratch
    'wd01_crop_160x16': (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', wd=0.1)),
    # both: no flip and weight decay 0.1
    'noflip_wd01_crop_160x16': (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', aug='fastai_noflip', wd=0.1)),
    # scale augmentation as fastai trains from scratch (`aug_transforms(size=, min_scale=)`: RandomResizedCropGPU):
    # items resized to 200 px, a random 50-100% square of it scaled to 160 px in training, the whole item in scoring
    'rrc_200to160x16': (200, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', aug='fastai_rrc160')),
    # both at the model's own size: items resized to 160 px, a random 50-100% square of it scaled back to 160 px in
    # training (so the crops are upsampled), the item unchanged in scoring: inference needs no second resize
    'noflip_rrc_160x16': (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', aug='fastai_noflip_rrc160')),
    # what twice the compute buys (beyond the 10-minute budget; a ceiling check, 2026-11-30): the recipe (no flip, weight
    # decay 0.1) trained twice as long, with a twice as deep network, or at 224 px (about twice the pixels)
    'noflip_wd01_crop_160x32': (160, 32, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', aug='fastai_noflip', wd=0.1)),
    'noflip_wd01_r34_160x16': (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', aug='fastai_noflip', wd=0.1, arch='resnet34')),
    'noflip_wd01_crop_224x16': (224, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', aug='fastai_noflip', wd=0.1)),
    # within the budget: fastai's CutMix (alpha 1) on the recipe; and a smaller network at a larger size, timm's resnet10t
    # (one block per stage, deep stem; ~1.1 GFLOPs at 224 px against resnet18's ~0.93 at 160) at 224 px
    'noflip_wd01_cutmix_160x16': (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', aug='fastai_noflip', wd=0.1, cutmix=1.0)),
    'noflip_wd01_r10t_224x16': (224, 16, 2e-3, dict(cpu_bf16=True, channels_last=True, resize='crop', aug='fastai_noflip', wd=0.1, arch='resnet10t')),
}

# augmentation presets of the variants above, registered in covidxr's `AUG_PRESETS` for the experiment only
def _aug(**kw):
    def preset(size=None):
        from fastai.vision.all import aug_transforms
        return aug_transforms(**kw)
    return preset
EXTRA_AUG = {'fastai_rrc160': _aug(size=160, min_scale=0.5),   # ('fastai_noflip' is covidxr's own preset since 2026-11-30)
             'fastai_noflip_rrc160': _aug(do_flip=False, size=160, min_scale=0.5)}

def _register_aug(name):
    from covidxr.data import AUG_PRESETS
    if name in EXTRA_AUG: AUG_PRESETS.setdefault(name, EXTRA_AUG[name])

TIMM_ARCHS = ('resnet18d', 'resnet10t')   # timm ResNets the variants use, registered in covidxr's ARCHS for the experiment

def _register_timm(name):
    "Experiment only: a timm ResNet from scratch in covidxr's registry (no ImageNet weights are asked for)"
    from covidxr.models import ARCHS, ArchSpec
    from fastai.vision.all import L, params
    def split(m): b = m[0].model; return L(nn_seq(b.conv1, b.bn1, b.layer1, b.layer2), nn_seq(b.layer3, b.layer4), m[1:]).map(params)
    from torch.nn import Sequential as nn_seq
    ARCHS.setdefault(name, ArchSpec(name, 'timm', name, 224, split))

def _zero_init_cb():
    "Experiment only: before the first epoch, each torchvision BasicBlock/Bottleneck's last BatchNorm gets weight 0"
    import torch
    from fastai.callback.core import Callback
    from torchvision.models.resnet import BasicBlock, Bottleneck
    class ZeroInit(Callback):
        def before_fit(self):
            if getattr(self, 'done', False): return
            with torch.no_grad():
                for m in self.model.modules():
                    if isinstance(m, BasicBlock): m.bn2.weight.zero_()
                    elif isinstance(m, Bottleneck): m.bn3.weight.zero_()
            self.done = True
    return ZeroInit()

def _ema_cb(decay):
    """Experiment: keep an EMA of the weights and BatchNorm buffers over the training steps; at the last epoch's end, before
    the run commits its final weights, the model takes the averaged ones"""
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from fastai.callback.core import Callback
    class EMA(Callback):
        order = 80   # before RunCheckpoint (90) saves the final weights
        def before_fit(self): self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        def after_step(self): self.ema.update_parameters(self.model)
        def after_epoch(self):
            if self.epoch == self.n_epoch - 1:
                with torch.no_grad(): self.model.load_state_dict(self.ema.module.state_dict())
    return EMA()

@contextmanager
def _clahe_patch():
    "Experiment only: inside the block, `train_recipe`'s DataLoaders apply CLAHE to every resized item (train, valid, test_dl)"
    import numpy as np, cv2, covidxr.learn as L
    from PIL import Image
    from fastai.vision.all import Transform, PILImage
    class Clahe(Transform):
        order = 3   # after Resize (1), before ToTensor (5)
        def encodes(self, x:PILImage):
            a = np.asarray(x); g = np.ascontiguousarray(a if a.ndim == 2 else a[..., 0])
            return type(x)(Image.fromarray(cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(g)).convert(x.mode))
    orig = L.cxr_dls
    def cxr_dls(*a, **k):
        dls = orig(*a, **k)
        for dl in dls.loaders: dl.after_item.add(Clahe())
        return dls
    L.cxr_dls = cxr_dls
    try: yield
    finally: L.cxr_dls = orig

@contextmanager
def _source_balance_patch():
    "Experiment only: inside the block, `train_recipe`'s training batches are sampled (fastai's `WeightedDL`) with weights 1/(training images of the row's (source, label) group)"
    import covidxr.learn as L
    orig_dls = L.cxr_dls
    def cxr_dls(df, *a, **k):
        g = df['source'].astype(str) + '|' + df['label'].astype(str)
        n = g[df['split'] == 'train'].value_counts()
        return orig_dls(df.assign(_srcbal_w=1/g.map(n).fillna(1)), *a, **dict(k, balance='sample', wgt_col='_srcbal_w'))
    L.cxr_dls = cxr_dls
    try: yield
    finally: L.cxr_dls = orig_dls

def score(name, data='cxr-mini', out='models/select', seed=42, train_seed=None):
    from covidxr.learn import get_recipe, train_recipe
    from covidxr.recipes import Stage, Step
    size, epochs, lr, kw = VARIANTS[name]
    kw = dict(kw); mixup, prog, clahe, ema = kw.pop('mixup', None), kw.pop('prog', None), kw.pop('clahe', False), kw.pop('ema', None)
    srcbal, zinit, cutmix = kw.pop('srcbal', False), kw.pop('zinit', False), kw.pop('cutmix', None)
    if kw.get('arch', '') in TIMM_ARCHS: _register_timm(kw['arch'])
    _register_aug(kw.get('aug', ''))
    stages = ([Stage(f'{s}px', s, [Step('whole', e, lr)]) for s, e in prog] if prog else
              [Stage('main', size, [Step('whole', epochs, lr)])])
    r = dataclasses.replace(get_recipe('cxr_scratch', seed=seed if train_seed is None else train_seed), stages=stages, evaluate='final', valid_pct=0.2, **{**BASE, **kw})
    cbs = []
    if mixup:
        from fastai.callback.mixup import MixUp
        cbs.append(MixUp(mixup))
    if cutmix:
        from fastai.callback.mixup import CutMix
        cbs.append(CutMix(cutmix))
    if ema: cbs.append(_ema_cb(ema))
    if zinit: cbs.append(_zero_init_cb())
    d = _split(data, seed)
    t0 = time.time()
    with _clahe_patch() if clahe else nullcontext(), _source_balance_patch() if srcbal else nullcontext():   # CLAHE stays on these DataLoaders (and their test_dl)
        learn = train_recipe(r, d, out=Path(out)/name, overwrite=True, cache=True, show=False, device='cpu', cbs=cbs)
    secs = time.time() - t0
    plain, tta = _valid_preds(learn, d, Path(out), name, r.seed)
    return dict(variant=name, train_seed=r.seed, size=size, epochs=epochs, lr=lr, **kw, mixup=mixup, cutmix=cutmix, prog=prog, clahe=clahe, ema=ema, srcbal=srcbal, zinit=zinit, n_valid=len(plain), train_s=round(secs),
                valid_macro_f1=_f1(plain), with_tta=_f1(tta))

def _split(data='cxr-mini', seed=42):
    from covidxr.data import read_dataset, make_splits
    df = make_splits(read_dataset(data), valid_pct=0.2, seed=seed)
    return df[df.split != 'test'].copy()                     # the test split never enters this script

def _preds_files(out:Path, name, train_seed):
    return [out/f'{name}.seed{train_seed}.valid_preds{s}.csv' for s in ('', '_tta')]

def _valid_preds(learn, d, out:Path, name, train_seed):
    "The validation split's predictions tables, single-pass and with fastai's TTA (seeded, as the report does), saved beside the run folders"
    from covidxr.report import get_preds_df
    v = d[d.split == 'valid'].reset_index(drop=True)
    with learn.no_bar(): res = get_preds_df(learn, v), get_preds_df(learn, v, tta=True)
    for t, f in zip(res, _preds_files(out, name, train_seed)): t.to_csv(f, index=False)
    return res

def _f1(P):
    from covidxr.metrics import metrics_with_ci
    f = metrics_with_ci(P)['overall'].loc['macro_f1']; return f"{f.value:.3f} ({f.lo:.3f}-{f.hi:.3f})"

def rescore(name, data='cxr-mini', out='models/select', seed=42):
    "Predictions of a variant's existing run folder (trained earlier by this script), for `--against` comparisons"
    from covidxr.inference import run_learner
    from covidxr.core import load_json
    run = Path(out)/name
    if not (run/'config.json').exists(): raise SystemExit(f"no run folder {str(run)!r}: train the variant first")
    ts = load_json(run/'config.json')['recipe']['seed']
    if VARIANTS[name][3].get('arch', '') in TIMM_ARCHS: _register_timm(VARIANTS[name][3]['arch'])
    _register_aug(VARIANTS[name][3].get('aug', ''))
    d = _split(data, seed)
    plain, tta = _valid_preds(run_learner(run, d[d.split == 'valid'], aug='card', device='cpu'), d, Path(out), name, ts)
    return dict(variant=name, train_seed=ts, n_valid=len(plain), valid_macro_f1=_f1(plain), with_tta=_f1(tta))

def against(names, base, out='models/select'):
    "Each variant minus `base` on the same validation images (paired patient bootstrap), single-pass and with TTA; and TTA minus single-pass for each"
    import pandas as pd
    from covidxr.metrics import paired_diff, paired_text
    rows = []
    def add(variant, base_name, kind, a, b):
        t = paired_diff(pd.read_csv(a), pd.read_csv(b), metrics=('accuracy', 'macro_f1', 'macro_auc'), names=('base', 'variant'))
        rows.extend(dict(variant=variant, base=base_name, scoring=kind, metric=m, base_value=round(x['a'], 3), value=round(x['b'], 3),
                         diff=txt, verdict=x['verdict']) for (m, x), txt in zip(t.iterrows(), paired_text(t)))
    for n, ts in names:
        fb, fv = _preds_files(Path(out), base[0], base[1]), _preds_files(Path(out), n, ts)
        miss = [str(f) for f in (*fb, *fv) if not f.exists()]
        if miss: raise SystemExit(f"missing predictions {miss}: train the variants (or --rescore their run folders) first")
        for kind, a, b in zip(('single', 'tta'), fb, fv):
            if (n, ts) != tuple(base): add(f'{n} (seed {ts})', f'{base[0]} (seed {base[1]})', kind, a, b)
        add(f'{n} (seed {ts})', 'itself single-pass', 'tta', *fv)   # what TTA changes, the same model
    return pd.DataFrame(rows)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('names', nargs='*'); p.add_argument('--list', action='store_true')
    p.add_argument('--seed', type=int, default=42, help='seed of the split (and of training unless --train-seed)')
    p.add_argument('--train-seed', type=int, default=None, help='another training seed on the same split: the noise of one variant')
    p.add_argument('--out', default='models/select')
    p.add_argument('--rescore', action='store_true', help="predict with the variants' existing run folders instead of training")
    p.add_argument('--against', default=None, metavar='NAME[:SEED]', help='then print each variant minus this one (paired bootstrap on the same validation images)')
    a = p.parse_args(argv)
    if a.list or not a.names:
        for k, v in VARIANTS.items(): print(k, v)
        return
    bad = [n for n in a.names if n not in VARIANTS]
    if bad: p.error(f"unknown variant(s) {bad}; known: {list(VARIANTS)}")
    warnings.filterwarnings('ignore')
    import pandas as pd
    pd.set_option('display.width', 250)
    rows = [rescore(n, out=a.out, seed=a.seed) if a.rescore else score(n, out=a.out, seed=a.seed, train_seed=a.train_seed) for n in a.names]
    print(pd.DataFrame(rows).to_string(index=False))
    if a.against:
        bn, _, bs = a.against.partition(':')
        print(against([(r['variant'], r['train_seed']) for r in rows], (bn, int(bs) if bs else a.seed), out=a.out).to_string(index=False))

if __name__ == '__main__': main()

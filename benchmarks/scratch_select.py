"""How `cxr_scratch`'s schedule was chosen: train a variant on cxr-mini's `train` split and score it on the patient-
disjoint `valid` split only (the test split is removed before training). Issue #11; the table is in nbs/03a_recipes.ipynb.

    .venv/bin/python benchmarks/scratch_select.py NAME [NAME ...]        # variants below, e.g. fp32_160x16 bf16_160x16
    .venv/bin/python benchmarks/scratch_select.py NAME --train-seed 43   # the same split, another training seed
    .venv/bin/python benchmarks/scratch_select.py --list

Each variant is `cxr_scratch` with one stage and the fields given, final weights (`evaluate='final'`); the split is
`make_splits(valid_pct=0.2, seed=42)`. Prints macro-F1 on `valid` with its patient-bootstrap 95% CI, with and without
fastai's test-time augmentation, and the training wall time. 5-10 minutes per variant on 2 CPU cores (bf16 ones faster).
Besides Recipe fields a variant may set `mixup` (fastai's `MixUp(alpha)` callback), `prog` (progressive resizing:
(size, epochs) stages, one-cycle each) `ema` (an EMA of the weights, decay per step, kept at the end), `srcbal`
(batches sampled evenly over (source, label) groups) or `clahe` (CLAHE on every resized item, for that variant only; an experiment:
covidxr's recipes, predict and web app have no CLAHE).
"""
import argparse, dataclasses, time, warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

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
}

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
    from fastai.data.block import DataBlock
    orig_dls, orig_w = L.cxr_dls, DataBlock.weighted_dataloaders
    def weighted(self, source, wgts, **k):
        g = source['source'].astype(str) + '|' + source['label'].astype(str)
        n = g[source['split'] == 'train'].value_counts()
        return orig_w(self, source, (1/g.map(n).fillna(1)).to_numpy(), **k)
    def cxr_dls(*a, **k): return orig_dls(*a, **dict(k, balance='sample'))
    L.cxr_dls, DataBlock.weighted_dataloaders = cxr_dls, weighted
    try: yield
    finally: L.cxr_dls, DataBlock.weighted_dataloaders = orig_dls, orig_w

def score(name, data='cxr-mini', out='models/select', seed=42, train_seed=None):
    from covidxr.learn import get_recipe, train_recipe
    from covidxr.recipes import Stage, Step
    from covidxr.data import read_dataset, make_splits
    from covidxr.metrics import make_preds, metrics_with_ci
    size, epochs, lr, kw = VARIANTS[name]
    kw = dict(kw); mixup, prog, clahe, ema = kw.pop('mixup', None), kw.pop('prog', None), kw.pop('clahe', False), kw.pop('ema', None)
    srcbal = kw.pop('srcbal', False)
    stages = ([Stage(f'{s}px', s, [Step('whole', e, lr)]) for s, e in prog] if prog else
              [Stage('main', size, [Step('whole', epochs, lr)])])
    r = dataclasses.replace(get_recipe('cxr_scratch', seed=seed if train_seed is None else train_seed), stages=stages, evaluate='final', valid_pct=0.2, **kw)
    cbs = []
    if mixup:
        from fastai.callback.mixup import MixUp
        cbs.append(MixUp(mixup))
    if ema: cbs.append(_ema_cb(ema))
    df = make_splits(read_dataset(data), valid_pct=r.valid_pct, seed=seed)
    d = df[df.split != 'test'].copy()                        # the test split never enters this script
    t0 = time.time()
    with _clahe_patch() if clahe else nullcontext(), _source_balance_patch() if srcbal else nullcontext():   # CLAHE stays on these DataLoaders (and their test_dl)
        learn = train_recipe(r, d, out=Path(out)/name, overwrite=True, cache=True, show=False, device='cpu', cbs=cbs)
    secs = time.time() - t0
    v = d[d.split == 'valid'].reset_index(drop=True); classes = list(learn.dls.vocab)
    def f1(P):
        m = metrics_with_ci(make_preds(v.label, P.numpy(), classes, patient_id=v.patient_id, source=v.source, path=v.path), classes)
        f = m['overall'].loc['macro_f1']; return f"{f.value:.3f} ({f.lo:.3f}-{f.hi:.3f})"
    with learn.no_bar(): plain, tta = f1(learn.get_preds(dl=learn.dls.test_dl(v))[0]), f1(learn.tta(dl=learn.dls.test_dl(v))[0])
    return dict(variant=name, train_seed=r.seed, size=size, epochs=epochs, lr=lr, **kw, mixup=mixup, prog=prog, clahe=clahe, ema=ema, srcbal=srcbal, n_valid=len(v), train_s=round(secs),
                valid_macro_f1=plain, with_tta=tta)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('names', nargs='*'); p.add_argument('--list', action='store_true')
    p.add_argument('--seed', type=int, default=42, help='seed of the split (and of training unless --train-seed)')
    p.add_argument('--train-seed', type=int, default=None, help='another training seed on the same split: the noise of one variant')
    p.add_argument('--out', default='models/select')
    a = p.parse_args(argv)
    if a.list or not a.names:
        for k, v in VARIANTS.items(): print(k, v)
        return
    bad = [n for n in a.names if n not in VARIANTS]
    if bad: p.error(f"unknown variant(s) {bad}; known: {list(VARIANTS)}")
    warnings.filterwarnings('ignore')
    import pandas as pd
    rows = [score(n, out=a.out, seed=a.seed, train_seed=a.train_seed) for n in a.names]
    print(pd.DataFrame(rows).to_string(index=False))

if __name__ == '__main__': main()

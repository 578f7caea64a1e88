"""How `cxr_scratch`'s schedule was chosen: train a variant on cxr-mini's `train` split and score it on the patient-
disjoint `valid` split only (the test split is removed before training). Issue #11; the table is in nbs/03a_recipes.ipynb.

    .venv/bin/python benchmarks/scratch_select.py NAME [NAME ...]        # variants below, e.g. fp32_160x16 bf16_160x16
    .venv/bin/python benchmarks/scratch_select.py --list

Each variant is `cxr_scratch` with one stage and the fields given, final weights (`evaluate='final'`); the split is
`make_splits(valid_pct=0.2, seed=42)`. Prints macro-F1 on `valid` with its patient-bootstrap 95% CI, with and without
fastai's test-time augmentation, and the training wall time. About 10 minutes per variant on 2 CPU cores.
"""
import argparse, dataclasses, time, warnings
from pathlib import Path

# name: (size, epochs, peak LR, other Recipe fields)
VARIANTS = {
    'fp32_160x16':      (160, 16, 2e-3, dict(cpu_bf16=False, channels_last=False)),
    'fp32_160x16_lr3':  (160, 16, 3e-3, dict(cpu_bf16=False, channels_last=False)),
    'fp32_160x16_bs16': (160, 16, 2e-3, dict(cpu_bf16=False, channels_last=False, bs=16)),
    'bf16_160x16':      (160, 16, 2e-3, dict(cpu_bf16=True, channels_last=True)),    # the recipe's schedule
    'bf16_160x32':      (160, 32, 2e-3, dict(cpu_bf16=True, channels_last=True)),
}

def score(name, data='cxr-mini', out='models/select', seed=42):
    from covidxr.learn import get_recipe, train_recipe
    from covidxr.recipes import Stage, Step
    from covidxr.data import read_dataset, make_splits
    from covidxr.metrics import make_preds, metrics_with_ci
    size, epochs, lr, kw = VARIANTS[name]
    r = dataclasses.replace(get_recipe('cxr_scratch', seed=seed), stages=[Stage('main', size, [Step('whole', epochs, lr)])],
                            evaluate='final', valid_pct=0.2, **kw)
    df = make_splits(read_dataset(data), valid_pct=r.valid_pct, seed=seed)
    d = df[df.split != 'test'].copy()                        # the test split never enters this script
    t0 = time.time()
    learn = train_recipe(r, d, out=Path(out)/name, overwrite=True, cache=True, show=False, device='cpu')
    secs = time.time() - t0
    v = d[d.split == 'valid'].reset_index(drop=True); classes = list(learn.dls.vocab)
    def f1(P):
        m = metrics_with_ci(make_preds(v.label, P.numpy(), classes, patient_id=v.patient_id, source=v.source, path=v.path), classes)
        f = m['overall'].loc['macro_f1']; return f"{f.value:.3f} ({f.lo:.3f}-{f.hi:.3f})"
    with learn.no_bar(): plain, tta = f1(learn.get_preds(dl=learn.dls.test_dl(v))[0]), f1(learn.tta(dl=learn.dls.test_dl(v))[0])
    return dict(variant=name, size=size, epochs=epochs, lr=lr, **kw, n_valid=len(v), train_s=round(secs),
                valid_macro_f1=plain, with_tta=tta)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('names', nargs='*'); p.add_argument('--list', action='store_true')
    p.add_argument('--seed', type=int, default=42); p.add_argument('--out', default='models/select')
    a = p.parse_args(argv)
    if a.list or not a.names:
        for k, v in VARIANTS.items(): print(k, v)
        return
    bad = [n for n in a.names if n not in VARIANTS]
    if bad: p.error(f"unknown variant(s) {bad}; known: {list(VARIANTS)}")
    warnings.filterwarnings('ignore')
    import pandas as pd
    rows = [score(n, out=a.out, seed=a.seed) for n in a.names]
    print(pd.DataFrame(rows).to_string(index=False))

if __name__ == '__main__': main()

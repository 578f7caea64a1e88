"""Training from scratch on a CPU: covidxr's `cxr_scratch` recipe vs the plain fastai script a new user writes first.

    .venv/bin/python benchmarks/scratch_vs_fastai.py [--budget 600] [--data cxr-mini] [--seed 42] [--quick]

Both rows run in this one process, one after the other, on the same machine and the same test images, and are
evaluated the same way (test-split predictions -> `covidxr.metrics.metrics_with_ci`: accuracy with a Wilson 95% CI,
macro-F1 with a patient-bootstrap 95% CI). Issue #11.

- plain fastai: the 15-line script of issue #11 -- `ImageDataLoaders.from_df` on the dataset's train/test split
  (validating on test, as that script does; nothing is selected on it: fixed epochs, last weights), `Resize(size)`,
  `aug_transforms(max_rotate=10)`, bs 32, `vision_learner(dls, resnet18, pretrained=False)`,
  `fit_one_cycle(epochs, 2e-3)`, images decoded from the original files (fastai's default).
  At the 600 s budget: 16 epochs at 160 px (issue #11: 609 s on a 2-core CPU).
- covidxr: `train_recipe(get_recipe('cxr_scratch'))` as `covidxr demo` runs it -- its schedule was chosen on a
  patient-disjoint validation split (see nbs/03a_recipes.ipynb); it then trains on every training patient (the same
  1,083 images as the plain script) and keeps its final weights; bf16 autocast and channels-last on a CPU with bf16
  kernels; the resized image cache (built before the clock starts, as for `make demo` with the cache built); the test
  split scored as its report scores it (with the recipe's `tta`: fastai's `learn.tta`, inside the timed part).
- `--budget B` below 600 s scales both rows' epochs by B/600 (rounded up), so both still get the same budget; the
  table prints the wall time each row really took (training + test prediction), and the per-source table of the
  covidxr row (cxr-mini is source-confounded: see its README).
- Then covidxr minus plain fastai on the same test images with a paired patient-bootstrap 95% CI
  (`covidxr.metrics.paired_diff`): the direct answer to "is it better here?"; and each minus the hospital-only baseline
  (`covidxr.metrics.source_prior_preds`); `--preds DIR` keeps both predictions tables.
"""
import argparse, os, time, warnings, math
from pathlib import Path
import pandas as pd, torch

REF_BUDGET = 600          # seconds: the demo's budget, at which the epochs below are given
FASTAI_EPOCHS, FASTAI_SIZE, FASTAI_LR = 16, 160, 2e-3   # issue #11: the plain script at the demo's budget

def machine()->str:
    from covidxr.reproduce import hardware
    return f"{hardware()}, torch {torch.get_num_threads()} threads"

def ci_row(name, epochs, size, seconds, preds, classes):
    from covidxr.metrics import metrics_with_ci
    m = metrics_with_ci(preds, classes)
    ov = m['overall']
    a, f = ov.loc['accuracy'], ov.loc['macro_f1']
    return dict(row=name, epochs=epochs, size=size, wall_s=round(seconds), n_test=m['n_images'],
                accuracy=f"{a.value:.3f} ({a.lo:.3f}-{a.hi:.3f})", macro_f1=f"{f.value:.3f} ({f.lo:.3f}-{f.hi:.3f})",
                f1=f.value, f1_lo=f.lo, f1_hi=f.hi)

def run_fastai(df, epochs, size, seed, max_per_class=None):
    "The plain fastai script of issue #11 (trained on split 'train', validated on 'test'); returns (preds, classes, s)"
    from fastai.vision.all import (ImageDataLoaders, Resize, aug_transforms, vision_learner, resnet18, accuracy,
                                   set_seed)
    from covidxr.metrics import make_preds
    d = df[df.split.isin(['train', 'valid', 'test'])].copy()
    d['is_valid'] = d.split == 'test'          # the user's script: cxr-mini's own train/test split
    set_seed(seed, reproducible=True)
    t0 = time.time()
    root = os.path.commonpath(d.path.tolist())
    d['fname'] = [os.path.relpath(f, root) for f in d.path]   # the user's script: file names relative to the data folder
    dls = ImageDataLoaders.from_df(d[['fname', 'label', 'is_valid']], path=root, fn_col='fname', label_col='label',
                                   valid_col='is_valid', item_tfms=Resize(size),
                                   batch_tfms=aug_transforms(max_rotate=10), bs=32, device='cpu' if not torch.cuda.is_available() else None)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, FASTAI_LR)
    test = d[d.is_valid].reset_index(drop=True)
    with learn.no_bar(): P, _ = learn.get_preds(dl=dls.test_dl(test[['fname']]))
    secs = time.time() - t0
    classes = list(dls.vocab)
    return make_preds(test.label, P.numpy(), classes, patient_id=test.patient_id, source=test.source,
                      path=test.path), classes, secs

def run_recipe(df, epoch_factor, seed, out, quick=False):
    "covidxr's `cxr_scratch` recipe, as `covidxr demo` trains it; returns (preds, classes, seconds, recipe)"
    from covidxr.learn import get_recipe, train_recipe
    r = get_recipe('cxr_scratch', seed=seed)
    if quick: r = r.scaled(quick=True)
    elif epoch_factor < 1: r = r.scaled(epochs=epoch_factor)
    t0 = time.time()
    learn = train_recipe(r, df, out=out, overwrite=True, cache=True, show=False, device='cpu' if not torch.cuda.is_available() else None)
    from covidxr.report import get_preds_df
    preds = get_preds_df(learn, df[df.split == 'test'], tta=r.tta)   # as its report scores it (`covidxr demo`)
    secs = time.time() - t0
    return preds, list(learn.dls.vocab), secs, r

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--budget', type=float, default=REF_BUDGET, help='seconds per row (epochs scale by budget/600 below 600)')
    p.add_argument('--data', default='cxr-mini')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--out', default='models/bench_scratch', help='run folder of the covidxr row')
    p.add_argument('--quick', action='store_true', help='smoke run: 12 images per split and class, tiny sizes, 1 epoch')
    p.add_argument('--csv', default=None, help='also write the table here')
    p.add_argument('--preds', default=None, help='write both test predictions tables here (plain_fastai.csv, covidxr.csv)')
    a = p.parse_args(argv)
    warnings.filterwarnings('ignore')
    from covidxr.data import read_dataset, make_splits, sample_per_class, ImageCache
    from covidxr.metrics import per_source_metrics, paired_diff, paired_text, source_prior_preds
    from covidxr.render import md_table
    from covidxr.learn import get_recipe
    df = make_splits(read_dataset(a.data), valid_pct=get_recipe('cxr_scratch').valid_pct, seed=a.seed)   # the demo's split
    if a.quick: df = sample_per_class(df, 12, seed=a.seed)
    f = min(1.0, a.budget/REF_BUDGET)
    ep = 1 if a.quick else max(1, math.ceil(FASTAI_EPOCHS*f))
    size = 64 if a.quick else FASTAI_SIZE
    print(f"{a.data}: " + ', '.join(f"{k} {v}" for k, v in df.split.value_counts().items()) + f"; budget {a.budget:.0f} s per row"
          + (f" (epochs x{f:.2f})" if f < 1 else '') + (' [quick smoke run]' if a.quick else ''))
    ImageCache().build(df.path.tolist(), progress=False)   # `make demo` with the cache built: not timed
    rows = []
    pf, cf, sf = run_fastai(df, ep, size, a.seed)
    rows.append(ci_row('plain fastai (issue #11 script)', ep, size, sf, pf, cf))
    print(f"plain fastai done in {sf:.0f} s", flush=True)
    pr, cr, sr, r = run_recipe(df, f, a.seed, a.out, quick=a.quick)
    sizes = '/'.join(str(s.size) for s in r.stages)
    rows.append(ci_row(f'covidxr {r.name}', r.epochs, sizes, sr, pr, cr))
    print(f"covidxr {r.name} done in {sr:.0f} s", flush=True)
    t = pd.DataFrame(rows).set_index('row')
    print(f"\nTest split of {a.data} ({t.n_test.iloc[0]} images); 95% CIs: accuracy Wilson, macro-F1 patient bootstrap (n=1000)")
    print(f"machine: {machine()}")
    print(md_table(t[['epochs', 'size', 'wall_s', 'accuracy', 'macro_f1']]))
    base, ours = t.iloc[0], t.iloc[1]
    print(f"\ncovidxr macro-F1 CI lower bound {ours.f1_lo:.3f} vs plain fastai macro-F1 {base.f1:.3f}: "
          + ('above' if ours.f1_lo > base.f1 else 'NOT above'))
    pd_ = paired_diff(pf, pr, cf, names=('plain fastai', 'covidxr'))
    print(f"\ncovidxr minus plain fastai on the same {pd_.attrs['n_images']} test images (paired patient bootstrap, n=1000, 95% CI):")
    print(pd_.rename(columns=dict(a='plain fastai', b='covidxr')).round(3).to_string())
    sp = source_prior_preds(df[df.split != 'test'], df[df.split == 'test'], cf)
    print("\nEach minus the hospital-only baseline (every test image gets its source's training label frequencies), paired:")
    for name, pp in (('covidxr', pr), ('plain fastai', pf)):
        d = paired_diff(sp, pp, cf, metrics=('accuracy', 'macro_f1', 'macro_auc'))
        print(f"  {name}: " + '; '.join(f"{m} {b:.3f} vs {a:.3f}: {t}" for m, a, b, t in zip(d.index, d.a, d.b, paired_text(d))))
    if a.preds:
        Path(a.preds).mkdir(parents=True, exist_ok=True)
        pf.to_csv(Path(a.preds)/'plain_fastai.csv', index=False); pr.to_csv(Path(a.preds)/'covidxr.csv', index=False)
    for name, (pp, cc) in {f'covidxr {r.name}': (pr, cr), 'plain fastai': (pf, cf)}.items():
        ps = per_source_metrics(pp, cc)
        ps = ps[[c for c in ('source', 'class', 'n_images', 'support', 'accuracy', 'accuracy_lo', 'accuracy_hi',
                             'sensitivity', 'sensitivity_lo', 'sensitivity_hi') if c in ps.columns]]
        print(f"\nPer source, {name} (cxr-mini is source-confounded: what matters is being right within each source):")
        print(ps.round(3).to_string(index=False))
    if a.csv: t.to_csv(a.csv)
    return t

if __name__ == '__main__': main()

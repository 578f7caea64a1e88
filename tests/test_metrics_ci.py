"Properties of covidxr.metrics beyond the notebook examples: estimates inside CIs, degenerate tables, errors."
import numpy as np, pandas as pd, pytest
from covidxr.metrics import (make_preds, metrics_with_ci, per_class_metrics, overall_metrics, confusion, wilson_ci,
                             bootstrap_ci, per_source_metrics, WILSON, BOOT_CLASS, check_preds, fast_stats, preds_arrays)

CLS = ['COVID-19', 'normal', 'pneumonia']

def _random_preds(seed, n=80, n_pat=30, skill=0.5):
    rng = np.random.default_rng(seed); y = rng.integers(0, 3, n)
    P = rng.dirichlet(np.ones(3), n); P[np.arange(n), y] += skill; P /= P.sum(1, keepdims=True)
    return make_preds(np.array(CLS)[y], P, CLS, patient_id=[f'p{i}' for i in rng.integers(0, n_pat, n)],
                      source=rng.choice(['a', 'b'], n))

def _inside(v, lo, hi):
    v, lo, hi = (np.asarray(a, float) for a in (v, lo, hi))
    return np.isnan(v) | ((lo <= v + 1e-12) & (v <= hi + 1e-12))

@pytest.mark.parametrize('seed', range(6))
def test_estimates_inside_their_ci(seed):
    r = metrics_with_ci(_random_preds(seed, skill=[0.1, 0.5, 2.0][seed % 3]), CLS, n_boot=100, seed=seed)
    pc = r['per_class']
    for m in (*WILSON, *BOOT_CLASS): assert _inside(pc[m], pc[f'{m}_lo'], pc[f'{m}_hi']).all(), m
    o = r['overall']; assert _inside(o.value, o.lo, o.hi).all(), o
    assert (o.lo.dropna() >= -1 - 1e-9).all() and np.isfinite(o.loc['accuracy', ['lo', 'hi']].astype(float)).all()

def test_bootstrap_groups_patients_and_is_seeded():
    p = _random_preds(0)
    a = metrics_with_ci(p, CLS, n_boot=60, seed=1)['overall']; b = metrics_with_ci(p, CLS, n_boot=60, seed=1)['overall']
    pd.testing.assert_frame_equal(a, b)
    c = metrics_with_ci(p, CLS, n_boot=60, seed=2)['overall']
    assert not np.allclose(a.lo.astype(float), c.lo.astype(float))
    assert metrics_with_ci(p.drop(columns='patient_id'), CLS, n_boot=20)['ci_unit'] == 'images'

def test_single_class_and_all_wrong_do_not_crash():
    # every image normal, every prediction pneumonia
    P = np.tile([0.1, 0.1, 0.8], (10, 1))
    p = make_preds(['normal']*10, P, CLS)
    r = metrics_with_ci(p, CLS, n_boot=30)
    pc = r['per_class']
    assert pc.loc['normal', 'sensitivity'] == 0 and np.isnan(pc.loc['COVID-19', 'sensitivity'])
    assert np.isnan(pc.loc['normal', 'auc'])                     # only positives: undefined
    assert np.isnan(r['overall'].loc['macro_auc', 'value'])
    assert r['overall'].loc['accuracy', 'value'] == 0 and r['overall'].loc['accuracy', 'hi'] > 0
    assert any('no test images' in n for n in r['notes'])

def test_fast_stats_match_sklearn_with_missing_classes():
    p = _random_preds(3)
    p = p[p.label != 'pneumonia']                              # a class with zero support
    y, yhat, P = preds_arrays(p, CLS); fs = fast_stats(y, yhat, P, 3); ov = overall_metrics(p, CLS); pc = per_class_metrics(p, CLS)
    for m in ('balanced_accuracy', 'macro_f1', 'macro_ppv', 'weighted_f1', 'kappa', 'macro_auc', 'ece', 'brier'):
        assert np.isclose(fs[m], ov[m], equal_nan=True), m
    assert np.allclose(np.array([fs[f'f1/{i}'] for i in range(3)], float), pc.f1.astype(float), equal_nan=True)

def test_wilson_vectorised_and_monotone():
    lo, hi = wilson_ci(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert (lo <= np.array([0, .5, 1]) + 1e-12).all() and (np.array([0, .5, 1]) <= hi + 1e-12).all()
    widths = [np.subtract(*wilson_ci(n // 2, n)[::-1]) for n in (4, 16, 64, 256)]
    assert all(a > b for a, b in zip(widths, widths[1:]))

def test_bad_tables_are_refused_clearly():
    p = _random_preds(0)
    with pytest.raises(ValueError, match='lacks columns'): check_preds(p.drop(columns='p_normal'), CLS)
    q = p.copy(); q.loc[3, 'p_normal'] = np.nan
    with pytest.raises(ValueError, match='Non-finite'): check_preds(q, CLS)
    with pytest.raises(ValueError, match='outside the classes'): confusion(p.assign(label='TB'), CLS)
    with pytest.raises(ValueError, match="no 'site' column"): per_source_metrics(p, CLS, by='site')

def test_probabilities_must_sum_to_one():
    from covidxr.metrics import overall_metrics
    p = _random_preds(1)
    q = p.copy(); q.loc[q.index[:2], 'p_normal'] += 0.5          # two rows are scores, not probabilities
    with pytest.raises(ValueError, match=r'sum to 1 per row: rows \[0, 1\]'): overall_metrics(q, CLS)
    r = p.copy(); cols = [f'p_{c}' for c in CLS]
    r[cols] = r[cols].astype('float32').round(6)                 # a CSV round trip of float32 softmax outputs
    assert np.isclose(overall_metrics(r, CLS)['brier'], overall_metrics(p, CLS)['brier'], atol=1e-5)

def test_one_ece_one_bin_count():
    "ece (used by the bootstrap too) is the count-weighted gap of reliability_table, at ECE_BINS bins everywhere"
    from covidxr.metrics import ece, reliability_table, ECE_BINS
    p = _random_preds(4, n=200, skill=0.3); y, yhat, P = preds_arrays(p, CLS)
    t = reliability_table(P, y)
    assert len(t) == ECE_BINS == 15 and t['count'].sum() == 200
    t = t[t['count'] > 0]
    assert np.isclose(ece(P, y), (t['count']*(t.accuracy - t.confidence).abs()).sum()/200)
    r = metrics_with_ci(p, CLS, n_boot=20)
    assert r['overall'].loc['ece', 'value'] == ece(P, y) == fast_stats(y, yhat, P, 3)['ece']
    assert ece(P, y, n_bins=5) != ece(P, y)      # the bin count matters, so there must be one

def test_make_preds_is_the_one_table():
    "Labelled (evaluation) and unlabelled (predict) tables from one builder; a non-finite row has no prediction"
    P = np.array([[.2, .5, .3], [np.nan, .5, .5], [.1, .1, .8]])
    t = make_preds(['normal', 'normal', 'pneumonia'], P, CLS, path=['a.png', 'b.png', 'c.png'])
    assert list(t.columns) == ['path', 'label', 'patient_id', 'source', 'p_COVID-19', 'p_normal', 'p_pneumonia', 'pred']
    assert t.pred.tolist() == ['normal', '', 'pneumonia'] and t.patient_id.tolist() == ['p0', 'p1', 'p2']
    u = make_preds(None, P, CLS, path=['a.png', 'b.png', 'c.png'])
    assert list(u.columns) == ['path', 'p_COVID-19', 'p_normal', 'p_pneumonia', 'pred'] and u.pred.tolist() == t.pred.tolist()
    with pytest.raises(ValueError, match=r'Non-finite probabilities in rows \[1\]'): check_preds(t, CLS)
    assert len(make_preds(None, np.zeros((0, 3)), CLS)) == 0

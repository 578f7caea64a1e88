"""covidxr.papers: the papers' numbers as data, and the side-by-side verdicts on hand-made metric dicts."""
import json
import numpy as np, pytest
from fastcore.test import test_eq as eq, test_fail as fails
from covidxr.papers import PAPER_RESULTS, paper_results, paper_notes, paper_vs_ours, run_key, verdict, load_metrics

def _m(acc, lo, hi, n=100, pats=90, per_class=None):
    return dict(n_images=n, n_patients=pats, overall={'accuracy': dict(value=acc, lo=lo, hi=hi)}, per_class=per_class or {})

def test_every_seed_has_numbers_and_notes():
    eq(sorted(PAPER_RESULTS), ['000', '001', '002', '003', '004'])
    for s, p in PAPER_RESULTS.items():
        t = paper_results(s)
        assert len(t) and t['value'].dropna().between(0, 1).all(), s
        assert paper_notes(s), s
        assert set(t['recipe']) == {p['recipe']}

def test_inconsistencies_are_data():
    n4 = ' '.join(paper_notes('004')); n2 = ' '.join(paper_notes('002'))
    assert '229' in n4 and '299' in n4
    assert '711' in n2 and '771' in n2 and '95.22' in n2 and '96.22' in n2
    assert 'never fire' in n2 and 'vgg19 [7, 9]' in n2

def test_seed002_grid_is_17_runs_and_tables_agree():
    t = paper_results('002')
    eq(t['run'].nunique(), 17)
    t5 = t[t['where'].str.startswith('Table 5, pre')].set_index(['run', 'metric'])['value']
    t4 = t[t['where'] == 'Table 4, augmented'].set_index(['run', 'metric'])['value']
    eq(t5.to_dict(), {k: t4[k] for k in t5.index})   # Table 5's pretrained column = Table 4's augmented one

@pytest.mark.parametrize('acc,lo,hi,want', [(0.96, 0.94, 0.98, 'inside our CI'), (0.90, 0.85, 0.95, 'paper above our CI'),
                                            (0.99, 0.97, 0.995, 'paper below our CI')])
def test_verdicts_004(acc, lo, hi, want):
    t = paper_vs_ours('004', _m(acc, lo, hi))
    eq(t.loc[0, 'verdict'], want)
    eq(t.loc[0, 'paper %'], 96.23)
    eq(t.loc[0, 'our test images'], 100)

def test_grid_and_folders(tmp_path):
    (tmp_path/'r1'/'report').mkdir(parents=True)
    (tmp_path/'r1'/'report'/'metrics.json').write_text(json.dumps(_m(0.9, 0.85, 0.95, per_class={
        'COVID-19': dict(sensitivity=0.99, sensitivity_lo=0.9, sensitivity_hi=1.0, support=20)})))
    t = paper_vs_ours(2, {run_key('densenet201'): tmp_path/'r1'})
    d = t[t.run == run_key('densenet201')]
    eq(set(d[d.metric == 'accuracy'].verdict), {'paper above our CI'})
    eq(d[d['class'] == 'COVID'].verdict.tolist(), ['inside our CI'])
    eq(set(t[t.run != run_key('densenet201')].verdict), {'not measured'})
    fails(lambda: load_metrics(tmp_path/'nope'), contains='No metrics.json')

def test_verdict_edges():
    eq(verdict(None, dict(lo=0, hi=1)), 'no paper value')
    eq(verdict(0.5, None), 'not measured')
    eq(verdict(0.5, dict(lo=np.nan, hi=np.nan)), 'no CI')
    fails(lambda: paper_results('seed007'), contains='Unknown seed')

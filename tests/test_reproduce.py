"""`covidxr reproduce`: a paper's runs through the library, evaluated, and the side-by-side table with verdicts."""
import pandas as pd, pytest
from covidxr.cli import main
from covidxr.papers import paper_results

def _check(out, n_runs, paper='002'):
    runs = pd.read_csv(out/'runs.csv')
    assert len(runs) == n_runs and runs['run'].is_unique
    assert runs['verdict'].isin(['inside our CI', 'paper above our CI', 'paper below our CI']).all(), runs['verdict']
    assert (runs['test_images'] > 0).all()
    t = pd.read_csv(out/'side_by_side.csv')
    assert len(t) == len(paper_results(paper)) and 'verdict' in t
    measured = t[t['run'].isin(runs['run'])]
    assert (measured['verdict'] != 'not measured').sum() > 0
    assert set(t[~t['run'].isin(runs['run'])]['verdict']) <= {'not measured'}
    md = (out/'side_by_side.md').read_text()
    assert 'QUICK' in md and 'Verdict' in md and '771' in md   # the paper's inconsistencies are listed
    for f in runs['folder']: assert (out/f/'report'/'metrics.json').is_file() and (out/f/'config.json').is_file()
    return runs, t

def test_reproduce_002_quick_two_archs(tmp_path, capsys):
    "Five of the grid's runs (ResNet18: ± aug, scratch; OurModel: ± aug), fast"
    assert main(['reproduce', '002', '--quick', '--archs', 'resnet18,cxr_cnn', '--out', str(tmp_path)]) == 0
    runs, t = _check(tmp_path, 5)
    assert set(runs['run']) == {'resnet18/noaug/pretrained', 'resnet18/aug/pretrained', 'resnet18/aug/scratch',
                                'cxr_cnn/noaug/scratch', 'cxr_cnn/aug/scratch'}
    assert not runs['pretrained'].any()   # QUICK: no ImageNet weights here
    assert 'side_by_side.md' in capsys.readouterr().out

@pytest.mark.slow
def test_reproduce_002_quick_whole_grid(tmp_path):
    "The whole grid: 17 runs (Table 4: 6 networks ± augmentation; Table 5: 5 without pretraining)"
    assert main(['reproduce', '002', '--quick', '--out', str(tmp_path)]) == 0
    _check(tmp_path, 17)

def test_reproduce_errors(tmp_path, capsys):
    assert main(['reproduce', '009', '--quick']) == 1
    assert 'Unknown paper' in capsys.readouterr().err
    assert main(['reproduce', '004']) == 1
    assert 'Pass --data' in capsys.readouterr().err
    assert main(['reproduce', '004', '--data', 'cxr-mini', '--out', str(tmp_path)]) == 1   # full run, weights missing
    err = capsys.readouterr().err
    assert 'resnet50-' in err and '.pth' in err   # names the file
    assert not (tmp_path/'resnet50-aug-pretrained').exists()

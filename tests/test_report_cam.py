"Grad-CAM for every registry architecture, and compare_runs / report edge cases."
import re
import numpy as np, pandas as pd, pytest, torch
from PIL import Image

@pytest.fixture(scope='module')
def image_path(mini):
    df = pd.read_csv(mini/'labels.csv')
    return str(mini/df.filename[df.source == 'actualmed'].iloc[0])

def _archs():
    from covidxr.models import ARCHS
    return list(ARCHS)

@pytest.mark.parametrize('arch', _archs())
def test_gradcam_every_registry_arch(arch, image_path):
    from covidxr.models import create_cxr_model
    from covidxr.interpret import gradcam
    torch.manual_seed(0); torch.set_num_threads(2)
    m = create_cxr_model(arch, 3, pretrained=False)
    W, H = Image.open(image_path).size
    for method in ('gradcam', 'gradcam++'):
        c = gradcam(m, image_path, target=1, method=method, size=64)
        assert c.shape == (H, W) and c.dtype == np.float32
        assert np.isfinite(c).all() and 0 <= c.min() <= c.max() <= 1

def test_compare_runs_reads_meta_and_needs_metrics(tmp_path):
    from covidxr.metrics import make_preds
    from covidxr.report import report_from_preds, compare_runs
    cls = ['a', 'b']; rng = np.random.default_rng(0); runs = []
    for arch in ('m1', 'm2'):
        for pre in (True, False):
            y = rng.integers(0, 2, 30); P = rng.dirichlet([1, 1], 30)
            d = tmp_path/f'{arch}_{pre}'; report_from_preds(make_preds(np.array(cls)[y], P, cls), d, n_boot=10,
                                                           meta=dict(arch=arch, pretrained=pre, aug='fastai'))
            runs.append(d)
    t = compare_runs(runs, out=tmp_path)
    assert t.shape == (2, 6) and {s for s, _ in t.columns} == {'pretrained=True', 'pretrained=False'}
    md = (tmp_path/'compare.md').read_text()
    assert md.count('\n') >= 4 and len(re.findall(r'\d+\.\d \(\d+\.\d–\d+\.\d\)', md)) == 12   # acc, precision, sens CIs, 4 runs
    lg = t.attrs['long']
    for m in ('accuracy', 'precision', 'sensitivity'): assert ((lg[f'{m}_lo'] <= lg[m]) & (lg[m] <= lg[f'{m}_hi'])).all(), m
    with pytest.raises(FileNotFoundError, match='metrics.json'): compare_runs([tmp_path/'nope'])

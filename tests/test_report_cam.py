"Grad-CAM for every registry architecture, and compare_runs / report edge cases."
import json, re
import numpy as np, pandas as pd, pytest, torch
from PIL import Image

@pytest.fixture(scope='module')
def image_path(mini):
    df = pd.read_csv(mini/'labels.csv')
    return str(mini/df.filename[df.source == 'actualmed'].iloc[0])

def _archs():
    from covidxr.models import ARCHS
    return list(ARCHS)

def _reference_gradcam(m, x, t, layer):
    "Grad-CAM by hand (Selvaraju et al.): ReLU(sum_k mean(dy_t/dA_k) A_k) at `layer`, scaled to [0, 1]"
    acts = []
    def keep(mod, i, o): o.retain_grad(); acts.append(o)
    h = layer.register_forward_hook(keep)
    try:
        m.eval(); m.zero_grad(); m(x)[0, t].backward()
    finally: h.remove()
    A = acts[-1]; w = A.grad.mean((2, 3), keepdim=True)
    cam = torch.relu((w*A).sum(1))[0].detach().numpy()
    return (cam - cam.min())/(cam.max() - cam.min()) if cam.max() > cam.min() else np.zeros_like(cam)

@pytest.mark.parametrize('arch', _archs())
def test_gradcam_every_registry_arch(arch, image_path):
    "Shape and range, and a map that is the hand-computed Grad-CAM and depends on the class: an all-zero or constant map fails"
    from covidxr.models import create_cxr_model
    from covidxr.interpret import gradcam, to_input, default_cam_layer
    torch.manual_seed(0); torch.set_num_threads(2)
    m = create_cxr_model(arch, 3, pretrained=False)
    W, H = Image.open(image_path).size
    x = to_input(m, image_path, size=64)
    maps = {}
    for method in ('gradcam', 'gradcam++'):
        cs = maps[method] = [gradcam(m, image_path, target=t, method=method, size=64) for t in range(3)]
        for c in cs: assert c.shape == (H, W) and c.dtype == np.float32 and np.isfinite(c).all() and 0 <= c.min() <= c.max() <= 1
        assert max(c.std() for c in cs) > 0.05, (method, [c.std() for c in cs])                  # some class's map is not flat
        assert max(np.abs(a - b).mean() for a in cs for b in cs) > 0.01, method                   # and the maps depend on the class
    for t in range(3):   # Grad-CAM is the textbook one, class by class
        ref = _reference_gradcam(m, x.clone().requires_grad_(True), t, default_cam_layer(m))
        ref = np.asarray(Image.fromarray(ref.astype(np.float32), mode='F').resize((W, H), Image.BILINEAR))
        c = maps['gradcam'][t]
        if ref.std() < 1e-6: assert c.max() < 1e-6, (t, c.max()); continue                          # ReLU of a negative map: 0 both
        assert np.corrcoef(ref.ravel(), c.ravel())[0, 1] > 0.95, (t, np.corrcoef(ref.ravel(), c.ravel())[0, 1])

def test_compare_runs_reads_meta_and_needs_metrics(tmp_path):
    from covidxr.metrics import make_preds
    from covidxr.report import report_from_preds
    from covidxr.compare import compare_runs
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

def _evidence_net():
    "Class 1's logit is the mean of a feature map that is bright exactly where the image is bright"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.zero_(); net[0].bias.zero_(); net[0].weight[0, :, 1, 1] = 1.   # channel 0 = brightness
        net[4].weight.copy_(torch.tensor([[0., 1.], [1., 0.]])); net[4].bias.zero_()
    return net

@pytest.mark.parametrize('method', ['gradcam', 'gradcam++'])
def test_gradcam_localises_the_evidence(method):
    "An all-zero or uniform map fails this: the CAM of class 1 must light up the bright patch and nothing else"
    from covidxr.interpret import gradcam
    img = np.zeros((64, 96, 3), np.uint8); img[8:24, 56:80] = 255
    c = gradcam(_evidence_net(), img, target=1, method=method, size=(64, 96), stats=((0, 0, 0), (1, 1, 1)))
    inside = np.zeros(c.shape, bool); inside[8:24, 56:80] = True
    assert c.shape == (64, 96) and c[inside].mean() > 0.8 and c[~inside].mean() < 0.1, (c[inside].mean(), c[~inside].mean())
    assert np.unravel_index(c.argmax(), c.shape)[0] in range(6, 26)

def test_write_cams_draws_the_map(tmp_path):
    from covidxr.interpret import write_cams
    img = np.zeros((64, 64, 3), np.uint8); img[8:24, 40:56] = 255
    Image.fromarray(img).save(tmp_path/'x.png')
    preds = pd.DataFrame(dict(path=[str(tmp_path/'x.png')], p_a=[.3], p_b=[.7], pred=['b'], error=['']))
    f, = write_cams(_evidence_net(), preds, tmp_path/'cams', classes=['a', 'b'], size=(64, 64), stats=((0, 0, 0), (1, 1, 1)))
    ov = np.asarray(Image.open(f).convert('RGB')).astype(int)
    # the jet map is red where the CAM is high (the patch) and blue elsewhere
    assert ov[16, 48, 0] > ov[16, 48, 2] and ov[50, 10, 2] > ov[50, 10, 0], (ov[16, 48], ov[50, 10])

def _preds(seed=0, n=60):
    from covidxr.metrics import make_preds
    rng = np.random.default_rng(seed); y = rng.integers(0, 3, n)
    P = rng.dirichlet([1, 1, 1], n); P[np.arange(n), y] += 0.5
    return make_preds(np.array(['a', 'b', 'c'])[y], P / P.sum(1, keepdims=True), ['a', 'b', 'c'],
                      source=rng.choice(['s1', 's2'], n))

def test_report_one_ece_and_one_header_row(tmp_path):
    "The reliability plot's ECE is the table's, and every HTML table has a single header row"
    from covidxr.report import report_from_preds
    from covidxr.plots import plot_reliability
    from covidxr.metrics import ECE_BINS
    p = _preds()
    res = report_from_preds(p, tmp_path/'r', n_boot=20)
    e = res['overall']['ece']['value']
    assert f'ECE {e:.3f},' in plot_reliability(p).axes[0].get_title()
    assert plot_reliability(p).axes[1].patches.__len__() == ECE_BINS
    html = (tmp_path/'r'/'report.html').read_text()
    heads = re.findall(r'<thead>(.*?)</thead>', html, re.S)
    assert len(heads) >= 4 and all(h.count('<tr') == 1 for h in heads), heads
    assert '<th>class</th>' in html and '<th>metric</th>' in html

def test_compare_keeps_every_run_folder(tmp_path):
    "Runs sharing architecture and settings (two seeds) are two rows, not one"
    from covidxr.report import report_from_preds
    from covidxr.compare import compare_runs
    runs = []
    for s in range(3):
        d = tmp_path/f'seed{s}'/'report'; report_from_preds(_preds(s), d, n_boot=10, meta=dict(arch='resnet18', aug='none', pretrained=False))
        runs.append(d.parent)
    t = compare_runs(runs)
    assert t.shape[0] == 3 and list(t.index) == ['resnet18 (seed0)', 'resnet18 (seed1)', 'resnet18 (seed2)']
    accs = [round(100*json.loads((r/'report'/'metrics.json').read_text())['overall']['accuracy']['value'], 2) for r in runs]
    assert t[('all', 'accuracy')].tolist() == accs

def test_evaluate_squeezenet_torchvision_head(mini, tmp_path):
    "SqueezeNet's torchvision classifier is a 1x1 conv: the source probe takes its (pooled) input as features"
    from covidxr.data import read_dataset, make_splits, sample_per_class, cxr_dls
    from covidxr.learn import cxr_learner
    from covidxr.report import evaluate, get_features
    df = sample_per_class(make_splits(read_dataset(mini), seed=42), 4)
    learn = cxr_learner(cxr_dls(df, size=32, bs=8, device='cpu'), 'squeezenet1_1', pretrained=False, head='torchvision')
    test = df[df.split == 'test']
    assert get_features(learn, test).shape == (len(test), 512)
    res = evaluate(learn, test, out=tmp_path/'r', n_boot=10)
    assert res['n_images'] == len(test) and (tmp_path/'r'/'report.html').exists()
    assert ('source_probe' in res) == (test.source.nunique() > 1)
    res = evaluate(learn, test, out=tmp_path/'r2', n_boot=10, source_probe=False)   # no features asked for
    assert 'source_probe' not in res

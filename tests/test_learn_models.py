"""Every registry architecture builds and trains one batch from scratch (pretrained=False); freeze/unfreeze and
discriminative LRs work for each; pretrained weights come only from the resolver (fast error, or the exact file)."""
import time
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch, torchvision
from covidxr.core import MissingWeightsError
from covidxr.models import ARCHS, create_cxr_model, n_params

torch.set_num_threads(2)

@pytest.fixture(scope='module')
def tiny(mini):
    "4 training and 4 validation images (real cxr-mini files)"
    from covidxr.data import read_dataset, make_splits
    df = make_splits(read_dataset(mini), seed=42)
    parts = [g.sample(n, random_state=0) for (s, l), g in df.groupby(['split', 'label'])
             for n in [{'train': 2, 'valid': 1}.get(s, 0)] if n]
    out = pd.concat(parts); out.attrs = dict(df.attrs)
    return out

@pytest.mark.parametrize('arch', list(ARCHS))
def test_arch_trains_one_batch_and_splits(arch, tiny):
    from covidxr.data import cxr_dls
    from covidxr.learn import cxr_learner, trainable_groups
    dls = cxr_dls(tiny, size=32, bs=4)
    learn = cxr_learner(dls, arch, pretrained=False)
    assert len(learn.dls.train) == 1
    groups = learn.splitter(learn.model)
    assert len(groups) == 3 and sum(p.numel() for g in groups for p in g) == n_params(learn.model)
    before = [p.detach().clone() for p in learn.model.parameters()]
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    after = list(learn.model.parameters())
    assert np.isfinite(learn.recorder.values[-1][0])
    changed = [not torch.equal(a, b) for a, b in zip(before, after)]
    assert changed[0] and changed[-1], arch   # first body layer and last head layer were updated
    learn.freeze(); assert trainable_groups(learn) == 1
    learn.unfreeze(); assert trainable_groups(learn) == 3
    learn.opt.set_hypers(lr=slice(1e-6, 1e-4))
    np.testing.assert_allclose([h['lr'] for h in learn.opt.hypers], [1e-6, 1e-5, 1e-4], rtol=1e-6)

def test_pretrained_missing_raises_fast(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    for arch, fname in [('resnet18', 'resnet18-f37072fd.pth'), ('densenet201', 'densenet201-c1103571.pth'),
                        ('efficientnetv2_s', 'model.safetensors')]:
        t0 = time.time()
        with pytest.raises(MissingWeightsError, match=fname): create_cxr_model(arch, 3, pretrained=True)
        assert time.time() - t0 < 5, arch

def test_pretrained_loads_the_cached_file(tmp_path, monkeypatch, tiny):
    from covidxr.data import cxr_dls
    from covidxr.learn import cxr_learner, trainable_groups
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    ref = torchvision.models.resnet18(weights=None)
    ck = tmp_path/'hub'/'checkpoints'; ck.mkdir(parents=True)
    torch.save(ref.state_dict(), ck/'resnet18-f37072fd.pth')
    learn = cxr_learner(cxr_dls(tiny, size=32, bs=4), 'resnet18', pretrained=True)
    ref_sd = [(k, v) for k, v in ref.state_dict().items() if not k.startswith('fc.')]
    body_sd = list(learn.model[0].state_dict().items())   # fastai's body: the same children, fc/avgpool cut off
    assert len(ref_sd) == len(body_sd)
    for (k, v), (k2, v2) in zip(ref_sd, body_sd): assert torch.equal(v, v2.cpu()), (k, k2)
    assert trainable_groups(learn) == 1   # pretrained: the body starts frozen

def test_explicit_timm_weights_file_and_its_normalisation(tmp_path, tiny):
    "efficientnetv2_s from an explicit weights file: exact weights, and the dls switched to the tag's 0.5/0.5 stats"
    import timm
    from safetensors.torch import save_file
    from covidxr.data import cxr_dls
    from covidxr.learn import cxr_learner, dls_stats
    ref = timm.create_model('tf_efficientnetv2_s.in21k_ft_in1k', pretrained=False)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path/'v2s.safetensors'))
    dls = cxr_dls(tiny, size=32, bs=4)
    learn = cxr_learner(dls, 'efficientnetv2_s', weights=tmp_path/'v2s.safetensors')
    assert torch.equal(learn.model[0].model.conv_stem.weight.cpu(), ref.conv_stem.weight)
    np.testing.assert_allclose(dls_stats(learn.dls)[0], [0.5]*3); np.testing.assert_allclose(dls_stats(learn.dls)[1], [0.5]*3)
    assert learn.cxr.head == 'seed003'
    with pytest.raises(RuntimeError, match='does not fit'):
        create_cxr_model('resnet18', 3, weights=tmp_path/'v2s.safetensors')

def test_class_weights_channels_last_and_cpu_mixed_precision(tiny):
    from fastai.vision.all import ChannelsLast
    from covidxr.data import cxr_dls
    from covidxr.learn import cxr_learner
    dls = cxr_dls(tiny, size=32, bs=4)
    with pytest.warns(UserWarning, match='needs CUDA'):
        learn = cxr_learner(dls, 'resnet18', pretrained=False, class_weights=[1, 2, 3], channels_last=True,
                            mixed_precision=True)
    np.testing.assert_allclose(learn.loss_func.func.weight.cpu().numpy(), [1, 2, 3])
    assert any(isinstance(c, ChannelsLast) for c in learn.cbs) and learn.cxr.precision == 'fp32'
    conv = next(m for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []   # the memory format of the activations the first conv hands on, during training
    h = conv.register_forward_hook(lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last)))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    h.remove()
    assert np.isfinite(learn.recorder.values[-1][0])
    w4 = [p for p in learn.model.parameters() if p.ndim == 4]
    assert w4 and all(p.is_contiguous(memory_format=torch.channels_last) for p in w4)   # every conv weight
    assert seen and all(seen)
    # without it: the default (contiguous NCHW) weights and activations
    plain = cxr_learner(dls, 'resnet18', pretrained=False)
    with plain.no_bar(), plain.no_logging(): plain.fit(1, 1e-3)
    w4 = [p for p in plain.model.parameters() if p.ndim == 4]
    assert not any(p.is_contiguous(memory_format=torch.channels_last) for p in w4 if min(p.shape[1:]) > 1)
    x = dls.one_batch()[0].cpu()
    assert not plain.model.cpu()[0][0](x).is_contiguous(memory_format=torch.channels_last)
    # 'balanced': n/(k*n_c) from the training labels (2 per class here -> all 1)
    learn = cxr_learner(dls, 'resnet18', pretrained=False, class_weights='balanced')
    np.testing.assert_allclose(learn.loss_func.func.weight.cpu().numpy(), [1, 1, 1])

"""Augmentation fidelity (issue #9): seed 002's augmented set is the originals plus one augmented copy each (only the
copy is augmented), and seed 000's preset is torchvision's RandomAffine with its shear."""
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from fastai.vision.all import TensorImage
from covidxr.data import cxr_dls, VFlip, RandomAffine, AUG_PRESETS, IMAGENET_STATS, _random_affine_mat
from covidxr.learn import _prepare_df
from covidxr.recipes import get_recipe, override

torch.set_num_threads(2)

@pytest.fixture
def tiny(tmp_path):
    "3 train and 3 valid random-noise images (16 px), all different"
    rng, rows = np.random.default_rng(0), []
    for i in range(6):
        f = tmp_path/f'im{i}.png'; Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(f)
        rows.append(dict(path=str(f), label='a' if i % 2 else 'b', patient_id=f'p{i}', source='t',
                         split='train' if i < 3 else 'valid'))
    return pd.DataFrame(rows)

def _epoch(dl): return torch.cat([b[0] for b in dl]).cpu()

def _originals(df):
    "The training images through the validation pipeline (no augmentation)"
    swap = df.assign(split=df.split.map({'train': 'valid', 'valid': 'train'}))
    return _epoch(cxr_dls(swap, size=16, bs=8, device='cpu').valid)

def _count(xb, x): return sum(bool((b - x).abs().max() < 1e-4) for b in xb)

def test_two_copies_one_original_one_augmented(tiny):
    r = override(get_recipe('seed002'), train_copies=2)
    df = _prepare_df(tiny, r)
    assert len(df) == 9 and df.aug_copy.tolist() == [0]*6 + [1]*3
    xb, orig = _epoch(cxr_dls(df, size=16, bs=8, aug=[VFlip(p=1.0)], device='cpu').train), _originals(tiny)
    assert len(xb) == 6 and len(orig) == 3
    assert [_count(xb, x) for x in orig] == [1, 1, 1]             # each original once, unchanged
    assert [_count(xb, x) for x in orig.flip(-2)] == [1, 1, 1]    # and once flipped

def test_one_copy_unchanged(tiny):
    r = override(get_recipe('seed002'), train_copies=1)
    df = _prepare_df(tiny, r)
    assert len(df) == 6 and 'aug_copy' not in df
    xb, orig = _epoch(cxr_dls(df, size=16, bs=8, aug=[VFlip(p=1.0)], device='cpu').train), _originals(tiny)
    assert [_count(xb, x) for x in orig] == [0, 0, 0]             # every training image augmented, as before
    assert [_count(xb, x) for x in orig.flip(-2)] == [1, 1, 1]

def test_copies_not_in_valid(tiny):
    df = _prepare_df(tiny, override(get_recipe('seed002'), train_copies=2))
    dls = cxr_dls(df, size=16, bs=8, aug=[VFlip(p=1.0)], device='cpu')
    assert len(dls.valid_ds) == 3
    assert torch.allclose(_epoch(dls.valid), _epoch(cxr_dls(tiny, size=16, bs=8, device='cpu').valid), atol=1e-5)   # unaugmented

def test_seed000_preset_shears():
    tf = [t for t in AUG_PRESETS['seed000'](32) if isinstance(t, RandomAffine)]
    assert len(tf) == 1
    torch.manual_seed(0)
    x = TensorImage(torch.rand(64, 3, 32, 32)); tf[0](x, split_idx=0)
    m = tf[0].mat                                                  # fastai's (n, 2, 3) matrices of this draw
    moved = (m - torch.eye(3)[:2]).abs().amax((1, 2)) > 1e-6
    assert 0.25 < moved.float().mean() < 0.75                      # p = 0.5 per image
    # rotation alone gives m01 == -m10 at scale s; a shear breaks that
    assert (m[moved, 0, 1] + m[moved, 1, 0]).abs().max() > 1e-3
    pure = _random_affine_mat(torch.zeros(500, 3, 8, 8), max_deg=0, max_translate=0, scale=(1, 1), max_shear=5, p=1.)
    sh = pure[:, 0, 1].atan().rad2deg()
    assert sh.abs().max() <= 5 and sh.abs().max() > 4.5 and (pure[:, 1, 0] == 0).all()

def test_shear_moves_a_vertical_line():
    img = torch.zeros(1, 3, 33, 33); img[..., 16] = 1.
    torch.manual_seed(1)
    t = RandomAffine(0, 0, (1, 1), max_shear=30, p=1.); y = t(TensorImage(img), split_idx=0)
    k = t.mat[0, 0, 1].item()
    assert abs(k) > 0.05
    assert abs(y[0, 0, 0].argmax().item() - (16 + 16*k)) <= 1 and abs(y[0, 0, -1].argmax().item() - (16 - 16*k)) <= 1
    assert y[0, 0, 16].argmax().item() == 16
    assert torch.equal(RandomAffine(p=1.)(TensorImage(img), split_idx=1), TensorImage(img))   # not on validation

"""Augmentation presets through `cxr_dls`: `none` hands the training images to the model exactly as the validation
pipeline does (resize and normalise only); every other preset changes them. Real cxr-mini files, 32 px, 4 images."""
import warnings
import pandas as pd, pytest, torch
from covidxr.data import AUG_PRESETS, cxr_dls, read_dataset

torch.set_num_threads(2)

@pytest.fixture(scope='module')
def same_images(mini):
    "The same 4 images as `train` and as `valid` rows, so a training batch can be compared with its validation twin"
    df = read_dataset(mini).groupby('label').head(2).head(4)
    out = pd.concat([df.assign(split='train'), df.assign(split='valid')], ignore_index=True)
    out.attrs = dict(df.attrs)
    return out

def batches(df, aug):
    "(training batch, validation batch) of the same 4 images, in table order"
    dls = cxr_dls(df, size=32, bs=4, aug=aug, device='cpu', seed=0)
    torch.manual_seed(0)
    xt, yt = dls.train.new(shuffle=False, drop_last=False).one_batch()
    xv, yv = dls.valid.one_batch()
    assert torch.equal(yt, yv)   # the same images in the same order
    return xt, xv

def test_none_preset_passes_images_unchanged(same_images):
    # resize='squish' (the default): with 'pad' or 'crop', fastai's `Resize` places each training image at random
    xt, xv = batches(same_images, 'none')
    assert xt.shape == (4, 3, 32, 32) and xt.std() > 0.1   # real pixels, not a blank batch
    torch.testing.assert_close(xt, xv, atol=0, rtol=0)

@pytest.mark.parametrize('preset', [p for p in AUG_PRESETS if p != 'none'])
def test_other_presets_change_the_training_images(same_images, preset):
    xt, xv = batches(same_images, preset)
    diff = (xt - xv).abs().flatten(1).amax(1)   # per image
    assert diff.max() > 0.1, (preset, diff)      # the preset is applied to the training batch...
    assert torch.isfinite(xt).all()
    dls = cxr_dls(same_images, size=32, bs=4, aug=preset, device='cpu')
    torch.testing.assert_close(dls.valid.one_batch()[0], xv, atol=0, rtol=0)   # ...and never to validation

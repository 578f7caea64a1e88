"load_cxr on DICOM (written here with pydicom), 16-bit PNG and colour images; DICOM datasets end to end."
import shutil
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
import pydicom
from pydicom.dataset import Dataset
from covidxr.test_utils import write_test_dicom
from covidxr.data import (load_cxr, read_dicom, read_folder, read_dataset, make_splits, cxr_dls,
                          check_file, dicom_meta, CXRDataError)

RAMP = np.tile(np.linspace(0, 4095, 64).round().astype(np.uint16), (16, 1))   # 12-bit ramp, 16 x 64


def _g(p): return np.asarray(load_cxr(p, gray=True)).astype(int)


def test_dicom_real_range_without_window(tmp_path):
    arr = RAMP // 4 + 500          # values 500..1523: the real range, not 0..4095, maps to 0..255
    g = _g(write_test_dicom(tmp_path/'a.dcm', arr))
    assert g.shape == (16, 64) and g[0, 0] == 0 and g[0, -1] == 255
    assert np.all(np.diff(g[0]) >= 0)
    rgb = np.asarray(load_cxr(tmp_path/'a.dcm'))
    assert rgb.shape == (16, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()


def test_monochrome1_is_inverted(tmp_path):
    g2 = _g(write_test_dicom(tmp_path/'m2.dcm', RAMP, photometric='MONOCHROME2'))
    g1 = _g(write_test_dicom(tmp_path/'m1.dcm', RAMP, photometric='MONOCHROME1'))
    assert (g1 == 255 - g2).all() and g1[0, 0] == 255


def test_window_center_width(tmp_path):
    g = _g(write_test_dicom(tmp_path/'w.dcm', RAMP, window=(1000, 500)))   # window 750..1250
    x = RAMP[0].astype(float)
    assert (g[0][x <= 740] == 0).all() and (g[0][x >= 1260] == 255).all()
    mid = np.flatnonzero((x > 800) & (x < 1200))
    assert np.allclose(g[0][mid], 255*(x[mid] - 750)/500, atol=1.5)
    # the same window with MONOCHROME1: inverted after windowing
    g1 = _g(write_test_dicom(tmp_path/'w1.dcm', RAMP, window=(1000, 500), photometric='MONOCHROME1'))
    assert (g1 == 255 - g).all()


def test_rescale_then_window(tmp_path):
    # stored 0..4095 with slope 1, intercept -1024: values -1024..3071; window (0, 400) -> -200..200
    g = _g(write_test_dicom(tmp_path/'r.dcm', RAMP, window=(0, 400), rescale=(1, -1024)))
    v = RAMP[0].astype(float) - 1024
    assert (g[0][v < -210] == 0).all() and (g[0][v > 210] == 255).all()
    mid = np.flatnonzero(np.abs(v) < 180)
    assert len(mid) > 2 and np.allclose(g[0][mid], 255*(v[mid] + 200)/400, atol=1.5)


def test_voi_lut_sequence(tmp_path):
    p = write_test_dicom(tmp_path/'l.dcm', RAMP)
    ds = pydicom.dcmread(p)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    lut = (65535 - np.arange(4096) * 16).astype(np.uint16)         # an inverting 16-bit LUT
    item.add_new(0x00283006, 'US', lut.tolist())   # LUT Data
    ds.VOILUTSequence = [item]
    ds.save_as(p)
    g = _g(p)
    assert np.allclose(g[0], 255 * lut[RAMP[0]].astype(float) / 65535, atol=1)


def test_multiframe_takes_first_frame_and_magic_without_extension(tmp_path):
    p = write_test_dicom(tmp_path/'f.dcm', RAMP)
    ds = pydicom.dcmread(p)
    two = np.stack([RAMP, RAMP[:, ::-1]]).astype(np.uint16)
    ds.NumberOfFrames, ds.PixelData = 2, two.tobytes()
    ds.save_as(p)
    assert _g(p)[0, 0] == 0
    q = tmp_path/'noext'; shutil.copy(p, q)          # DICOM recognised by its 'DICM' magic
    assert (_g(q) == _g(p)).all()


def test_bad_dicom_files(tmp_path):
    bad = tmp_path/'bad.dcm'; bad.write_bytes(b'\x00' * 128 + b'DICM' + b'garbage' * 10)
    with pytest.raises(CXRDataError, match=r'bad\.dcm: cannot decode'): load_cxr(bad)
    assert check_file(bad, 'open') is not None
    p = write_test_dicom(tmp_path/'nopix.dcm', RAMP)
    ds = pydicom.dcmread(p); del ds.PixelData; del ds.Rows; del ds.Columns; ds.save_as(p)
    assert 'no Rows/Columns' in check_file(p, 'open')
    big = write_test_dicom(tmp_path/'big.dcm', RAMP)
    assert 'decompression bomb' in check_file(big, 'open', max_pixels=100)
    with pytest.raises(CXRDataError, match='big.dcm.*decompression bomb'): load_cxr(big, max_pixels=100)


def test_16bit_png_real_range_and_colour_modes(tmp_path):
    a = (np.arange(32*32).reshape(32, 32) + 1000).astype(np.uint16)       # 1000..2023 in a 16-bit PNG
    Image.fromarray(a).save(tmp_path/'a.png')
    g = _g(tmp_path/'a.png')
    assert g.min() == 0 and g.max() == 255 and g[0, 0] == 0 and g[-1, -1] == 255
    rgb = np.zeros((4, 4, 3), np.uint8); rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path/'red.png')
    assert abs(_g(tmp_path/'red.png')[0, 0] - round(0.299*255)) <= 1
    la = np.zeros((4, 4, 2), np.uint8); la[..., 0] = 200; la[:2, :, 1] = 255
    Image.fromarray(la, 'LA').save(tmp_path/'la.png')
    g = _g(tmp_path/'la.png'); assert g[0, 0] == 200 and g[3, 0] == 0        # transparent -> black
    Image.fromarray(rgb).convert('P').save(tmp_path/'pal.gif')
    assert abs(_g(tmp_path/'pal.gif')[0, 0] - round(0.299*255)) <= 1


def test_dicom_dataset_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    for lab in ('normal', 'pneumonia'):
        for i in range(6):
            arr = (rng.random((40, 48)) * 4095).astype(np.uint16)
            write_test_dicom(tmp_path/lab/f'{lab}{i}.dcm', arr, patient_id=f'{lab[0]}{i//2}',
                             photometric='MONOCHROME1' if i % 2 else 'MONOCHROME2', view='AP' if i % 3 else 'PA')
    df = read_dicom(tmp_path, source='h')
    assert len(df) == 12 and df.patient_id.nunique() == 6 and set(df.view) == {'AP', 'PA'}
    assert dicom_meta(df.path[0])['modality'] == 'CR'
    assert read_dataset(tmp_path, source='h').patient_id.tolist() == df.patient_id.tolist()   # auto: class folders
    sp = make_splits(df, valid_pct=0.34, test_pct=0, seed=0)
    assert set(sp.split) == {'train', 'valid'}
    dls = cxr_dls(sp, size=32, bs=4, device='cpu')
    xb, yb = dls.one_batch()
    assert xb.shape == (4, 3, 32, 32) and dls.vocab == ['normal', 'pneumonia']
    x = dls.test_dl(sp.path.tolist()[:2]).one_batch()[0]
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()

"The resized image cache: shorter side, reuse, invalidation on change, $COVIDXR_CACHE, parallel pass, errors, use in cxr_dls."
import os, time
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from covidxr.test_utils import write_test_dicom
from covidxr.data import (ImageCache, default_cache_dir, cxr_dls, load_cxr, CXRDataError, data_report)


def _img(p, w, h, seed=0):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random((h, w)) * 255).astype(np.uint8)).save(p)
    return p


def test_shorter_side_aspect_and_no_upscale(tmp_path):
    wide, small = _img(tmp_path/'s'/'wide.png', 200, 100), _img(tmp_path/'s'/'small.png', 30, 20)
    c = ImageCache(tmp_path/'c', size=50)
    r = c.build([wide, small], progress=False)
    assert r.status.tolist() == ['written', 'written']
    assert Image.open(r.cached[0]).size == (100, 50)          # shorter side 50, aspect kept
    assert Image.open(r.cached[1]).size == (30, 20)           # never upscaled
    assert (np.asarray(load_cxr(r.cached[1], gray=True)) == np.asarray(load_cxr(small, gray=True))).all()  # lossless
    assert Path(r.cached[0]).is_relative_to(tmp_path/'c'/'short50')


def test_reused_then_invalidated_when_the_file_changes(tmp_path):
    files = [_img(tmp_path/'s'/f'{i}.png', 64, 64, i) for i in range(5)]
    c = ImageCache(tmp_path/'c', size=32)
    first = c.build(files, progress=False)
    t = [os.stat(p).st_mtime_ns for p in first.cached]
    second = c.build(files, progress=False)
    assert set(second.status) == {'hit'} and second.cached.tolist() == first.cached.tolist()
    assert [os.stat(p).st_mtime_ns for p in second.cached] == t          # not rewritten
    # change the content of one source (new size and mtime): its entry is no longer used, and rebuilt
    _img(files[2], 80, 64, 99)
    assert c.lookup(files[2]) == str(files[2])                            # stale entry ignored
    third = c.build(files, progress=False)
    assert third.status.tolist() == ['hit', 'hit', 'written', 'hit', 'hit']
    assert Image.open(third.cached[2]).size == (40, 32)
    assert third.cached[2] != first.cached[2]
    c.clear(); assert not (tmp_path/'c'/'short32').exists()


def test_default_dir_env_and_data_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('COVIDXR_CACHE', str(tmp_path/'envcache'))
    assert default_cache_dir() == tmp_path/'envcache' and ImageCache().root == tmp_path/'envcache'
    monkeypatch.delenv('COVIDXR_CACHE'); monkeypatch.chdir(tmp_path)
    assert default_cache_dir() == tmp_path/'data'/'.cache'
    assert ImageCache(size=128).dir == tmp_path/'data'/'.cache'/'short128'


def test_parallel_pass_equals_serial(tmp_path):
    files = [_img(tmp_path/'s'/f'{i}.png', 90, 70, i) for i in range(40)]
    a = ImageCache(tmp_path/'a', size=24).build(files, n_workers=2, progress=True)
    b = ImageCache(tmp_path/'b', size=24).build(files, n_workers=0, progress=False)
    assert set(a.status) == {'written'} and len(a) == 40
    assert all(Path(p).read_bytes() == Path(q).read_bytes() for p, q in zip(a.cached, b.cached))


def test_bad_files_raise_or_are_reported(tmp_path):
    good = _img(tmp_path/'s'/'good.png', 40, 40)
    bad = tmp_path/'s'/'bad.png'; bad.write_text('not an image')
    missing = tmp_path/'s'/'missing.png'
    c = ImageCache(tmp_path/'c', size=16)
    with pytest.raises(CXRDataError) as e: c.build([good, bad, missing], progress=False)
    assert 'bad.png' in str(e.value) and 'not an image' in str(e.value) and 'missing.png' in str(e.value)
    with pytest.warns(UserWarning):
        r = c.build([good, bad, missing], progress=False, on_error='skip')
    assert r.status.tolist()[0] in ('written', 'hit') and r.status[1].startswith('error') and r.status[2].startswith('error')
    assert len(r.attrs['report']) == 2


def test_dicom_is_decoded_once_into_the_cache(tmp_path):
    p = write_test_dicom(tmp_path/'x.dcm', np.tile(np.arange(64, dtype=np.uint16) * 60, (48, 1)), photometric='MONOCHROME1')
    c = ImageCache(tmp_path/'c', size=24)
    c.build([p], progress=False)
    q = c.lookup(p)
    assert q.endswith('.pgm') and Image.open(q).size == (32, 24) and Image.open(q).mode == 'L'
    g = np.asarray(load_cxr(q, gray=True)).astype(int)
    assert g[:, 0].mean() > g[:, -1].mean()          # MONOCHROME1 inverted before caching


def _table(tmp_path, n=8):
    rows = []
    for lab in ('a', 'b'):
        for i in range(n):
            p = _img(tmp_path/'src'/lab/f'{lab}{i}.png', 48, 40, seed=hash((lab, i)) % 1000)
            rows.append(dict(path=str(p), label=lab, patient_id=f'{lab}{i}', source='t', split='valid' if i < 2 else 'train'))
    return pd.DataFrame(rows)


def test_cxr_dls_with_cache(tmp_path, monkeypatch):
    df = _table(tmp_path)
    monkeypatch.setenv('COVIDXR_CACHE', str(tmp_path/'env'))
    plain = cxr_dls(df, size=32, bs=4, device='cpu')
    cached = cxr_dls(df, size=32, bs=4, cache=320, device='cpu')    # 40 px < 320: lossless copies
    assert len(list((tmp_path/'env'/'short320').rglob('*.pgm'))) == len(df)
    assert cached.cxr.cache.lookup(df.path[0]).startswith(str(tmp_path/'env'))
    xp, yp = plain.valid.one_batch(); xc, yc = cached.valid.one_batch()
    assert torch.equal(yp, yc) and torch.allclose(xp, xc, atol=1e-6)
    # a small cache really serves downscaled files
    small = cxr_dls(df, size=16, bs=4, cache=ImageCache(tmp_path/'c2', size=20), device='cpu')
    assert Image.open(small.cxr.cache.lookup(df.path[0])).size == (24, 20)
    assert small.one_batch()[0].shape == (4, 3, 16, 16)
    # test_dl on paths goes through the cache too
    assert small.test_dl(df.path.tolist()[:3]).one_batch()[0].shape == (3, 3, 16, 16)


def test_progress_bar_only_when_asked_or_interactive(tmp_path, capsys):
    files = [_img(tmp_path/'s'/f'{i}.png', 40, 40, i) for i in range(40)]
    ImageCache(tmp_path/'c1', size=16).build(files, n_workers=0)   # default: pytest's stdout is not a terminal
    assert '40/40' not in capsys.readouterr().out
    ImageCache(tmp_path/'c2', size=16).build(files, n_workers=0, progress=True)
    assert '40/40' in capsys.readouterr().out

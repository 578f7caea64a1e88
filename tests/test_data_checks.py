"""Data checks before training (issue #13): every image decoded (cached), one-class data refused, rare/unexpected labels
warned about or declared (`classes=` / `label_map=`, CLI --classes / --label-map), non-UTF-8 file names named, CSV paths
leaving the dataset root reported, and the CSV / COVIDx / folder readers fuzzed with hypothesis."""
import io, os, shutil, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from covidxr.data import (read_dataset, read_folder, read_csv_dataset, read_covidx, check_images, check_classes,
                          check_file, data_report, rare_labels, label_counts, show_path, CXRDataError, COLS)
import covidxr.data as cdata


from covidxr.test_utils import cli_call as call


def _copies(mini, n=8):
    "n real cxr-mini images per class: [(src path, label)]"
    df = read_dataset(mini, check='none')
    return [(p, lab) for lab, g in df.groupby('label') for p in g.path.head(n)]


def _folder(root, mini, n=8, labels=None):
    "A class-folder dataset of real cxr-mini images under `root`"
    for p, lab in _copies(mini, n):
        if labels and lab not in labels: continue
        (root/lab).mkdir(parents=True, exist_ok=True); shutil.copy(p, root/lab/Path(p).name)
    return root


def _csv(root, mini, n=8, extra=()):
    "A CSV dataset (root/labels.csv + root/img/) of real cxr-mini images; `extra` rows (filename, label) appended"
    (root/'img').mkdir(parents=True, exist_ok=True)
    rows = []
    for p, lab in _copies(mini, n):
        shutil.copy(p, root/'img'/Path(p).name); rows.append(('img/' + Path(p).name, lab))
    pd.DataFrame(rows + list(extra), columns=['filename', 'label']).to_csv(root/'labels.csv', index=False)
    return root


def _truncate(p):
    b = Path(p).read_bytes(); Path(p).write_bytes(b[:len(b)//2]); return Path(p)


# ---------------------------------------------------------------- 1. every image decoded before training
def test_truncated_jpeg_passes_the_header_check_but_not_check_images(tmp_path, mini):
    root = _folder(tmp_path/'ds', mini, n=3)
    bad = _truncate(sorted((root/'normal').iterdir())[0])
    assert check_file(bad, 'open') is None   # what the readers check by default: the header is intact
    df = read_dataset(root)                  # so reading succeeds ...
    with pytest.raises(CXRDataError) as e: check_images(df, cache=tmp_path/'dec.txt')   # ... and decoding does not
    msg = str(e.value)
    assert f'{bad}: cannot decode image: OSError: image file is truncated' in msg, msg
    assert msg.startswith('1 problem(s)') and '--skip-bad' in msg and "on_error='skip'" in msg


def test_truncated_dicom_pixel_data_is_caught_by_check_images(tmp_path):
    from covidxr.test_utils import write_test_dicom
    for lab in ('normal', 'COVID-19'):
        for i in range(2): write_test_dicom(tmp_path/lab/f'{lab}{i}.dcm', np.full((64, 64), 100*i + 50, np.uint16), patient_id=f'{lab}{i}')
    bad = tmp_path/'normal'/'normal1.dcm'; bad.write_bytes(bad.read_bytes()[:-2000])   # pixel data cut short, header intact
    df = read_dataset(tmp_path)   # the header check passes
    assert len(df) == 4
    with pytest.raises(CXRDataError) as e: check_images(df, cache=False)
    assert f'{bad}: cannot decode image' in str(e.value), str(e.value)


def test_check_images_skip_writes_skipped_csv_and_caches(tmp_path, mini, monkeypatch):
    root = _folder(tmp_path/'ds', mini, n=3)
    bad = _truncate(sorted((root/'COVID-19').iterdir())[1])
    df = read_dataset(root)
    cache, run = tmp_path/'dec.txt', tmp_path/'run'
    with pytest.warns(UserWarning, match=r'skipped 1 of 9 images that cannot be decoded; listed in .*skipped.csv'):
        ok = check_images(df, on_error='skip', out=run, cache=cache)
    assert len(ok) == 8 and str(bad) not in set(ok.path)
    sk = pd.read_csv(run/'skipped.csv')
    assert sk.columns.tolist() == ['path', 'row', 'problem'] and sk.path.tolist() == [str(bad)]
    assert 'image file is truncated' in sk.problem[0]
    rep = data_report(ok); assert rep.item.tolist() == [str(bad)] and rep.action.tolist() == ['skipped']
    assert len(cache.read_text().split()) == 8   # the 8 good files are remembered (by path + size + mtime)
    # second run: only the bad file is decoded again (nothing else is opened)
    seen = []
    real = cdata._check_one
    monkeypatch.setattr(cdata, '_check_one', lambda a: (seen.append(a[0]), real(a))[1])
    with pytest.warns(UserWarning): check_images(df, on_error='skip', out=run, cache=cache)
    assert seen == [str(bad)]
    # a changed file (new mtime) is decoded again; a clean run removes the old skipped.csv
    good = ok.path.iloc[0]; st = os.stat(good); os.utime(good, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    seen.clear(); check_images(df[df.path != str(bad)], on_error='skip', out=run, cache=cache)
    assert seen == [good] and not (run/'skipped.csv').exists()


def test_check_images_cache_location_and_unwritable_cache(tmp_path, mini, monkeypatch):
    from covidxr.data import decode_cache_file
    root = _folder(tmp_path/'ds', mini, n=2)
    df = read_dataset(root)
    monkeypatch.delenv('COVIDXR_CACHE', raising=False); monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path/'xdg'))
    assert decode_cache_file() == tmp_path/'xdg'/'covidxr'/'decoded.txt'
    assert len(check_images(df)) == len(df) and len((tmp_path/'xdg'/'covidxr'/'decoded.txt').read_text().split()) == len(df)
    monkeypatch.setenv('COVIDXR_CACHE', str(tmp_path/'cc'))
    assert decode_cache_file() == tmp_path/'cc'/'decoded.txt'
    assert len(check_images(df, cache=False)) == len(df) and not (tmp_path/'cc').exists()   # cache=False: nothing written
    (tmp_path/'file').write_text('')   # a cache file under a plain file: warned, the check itself still works
    with pytest.warns(UserWarning, match=r"decode cache .*decoded.txt not written .*: the next run decodes again"):
        assert len(check_images(df, cache=tmp_path/'file'/'decoded.txt')) == len(df)


@pytest.fixture(scope='module')
def run(tmp_path_factory, mini):
    """`covidxr train --skip-bad --label-map Pnemonia=pneumonia` on a CSV dataset of real images with a truncated JPEG and
    a typo label: the bad image is skipped and listed in RUN/skipped.csv, the typo is mapped"""
    d = tmp_path_factory.mktemp('checks')
    root = _csv(d/'ds', mini, n=8)
    typo = d/'ds'/'img'/'typo.png'; Image.open(read_dataset(mini, check='none').path.iloc[0]).save(typo)
    lab = pd.read_csv(root/'labels.csv')
    lab.loc[len(lab)] = ['img/typo.png', 'Pnemonia']; lab.to_csv(root/'labels.csv', index=False)
    bad = _truncate(root/lab.filename[3])
    code, out, err = call('train', '--data', root, '--recipe', 'covid_resnet', '--arch', 'resnet18', '--quick',
                          '--no-pretrained', '--bs', 4, '--label-map', 'Pnemonia=pneumonia', '--skip-bad', '--out', d/'run')
    assert code == 0, err
    return dict(run=d/'run', out=out, err=err, bad=bad, root=root, d=d)


def test_train_skip_bad_lists_the_truncated_image_in_run_folder(run):
    sk = pd.read_csv(run['run']/'skipped.csv')
    assert sk.path.tolist() == [str(run['bad'])] and 'image file is truncated' in sk.problem[0]
    assert f"Skipped 1 bad image(s)/row(s): listed in {run['run']/'skipped.csv'}" in run['out']
    sp = pd.read_csv(run['run']/'splits.csv')
    assert str(run['bad']) not in set(sp.path) and len(sp) == 24   # 3 classes x 8 + the typo row - the truncated one
    assert sorted(sp.label.unique()) == ['COVID-19', 'normal', 'pneumonia']   # --label-map: no 'Pnemonia' class
    assert (sp.loc[sp.path.str.endswith('typo.png'), 'label'] == 'pneumonia').all()


def test_train_without_skip_bad_stops_before_any_epoch_naming_the_file(run, tmp_path):
    code, out, err = call('train', '--data', run['root'], '--recipe', 'covid_resnet', '--arch', 'resnet18', '--quick',
                          '--no-pretrained', '--label-map', 'Pnemonia=pneumonia', '--out', tmp_path/'run')
    assert code == 1 and 'Traceback' not in err
    assert f"{run['bad']}): cannot decode image: OSError: image file is truncated" in err and '--skip-bad' in err, err
    assert not (tmp_path/'run'/'history.csv').exists() and not (tmp_path/'run'/'weights.safetensors').exists()


def test_evaluate_skip_bad_and_one_class_note(run, mini, tmp_path):
    # --data without --skip-bad: the truncated image stops evaluation with its name
    code, out, err = call('evaluate', '--model', run['run'], '--data', run['root'], '--label-map', 'Pnemonia=pneumonia',
                          '--split', 'all', '--out', tmp_path/'e1')
    assert code == 1 and 'image file is truncated' in err and str(run['bad']) in err, err
    code, out, err = call('evaluate', '--model', run['run'], '--data', run['root'], '--label-map', 'Pnemonia=pneumonia',
                          '--split', 'all', '--skip-bad', '--out', tmp_path/'e2')
    assert code == 0, err
    assert f"covidxr evaluate: skipped {run['bad']}" in err
    import json
    m = json.loads((tmp_path/'e2'/'metrics.json').read_text())
    assert m['n_images'] == 24 and [s['item'] for s in m['meta']['skipped']] == [str(run['bad'])]
    # one-class evaluation data: allowed (an external all-COVID set), with a note on what its metrics mean
    one = _folder(tmp_path/'one', mini, n=3, labels=['COVID-19'])
    code, out, err = call('evaluate', '--model', run['run'], '--data', one, '--out', tmp_path/'e3')
    assert code == 0, err
    assert "every evaluated image is labelled 'COVID-19': AUC and specificity are undefined" in err


# ---------------------------------------------------------------- 2. one-class data refused
def test_one_class_data_refused_in_training(tmp_path, mini):
    from covidxr.learn import train_recipe
    one = _folder(tmp_path/'one', mini, n=6, labels=['normal'])
    with pytest.raises(CXRDataError, match=r"one class only \(normal 6\): a classifier needs images of at least two classes"):
        train_recipe('covid_resnet', read_dataset(one), tmp_path/'run', arch='resnet18', pretrained=False, quick=True)
    assert not (tmp_path/'run'/'history.csv').exists() and not (tmp_path/'run'/'weights.safetensors').exists()
    code, out, err = call('train', '--data', one, '--quick', '--no-pretrained', '--arch', 'resnet18', '--out', tmp_path/'r2')
    assert code == 1 and len(err.strip().splitlines()) == 1 and 'one class only (normal 6)' in err, err


def test_check_classes_training_rows():
    df = pd.DataFrame(dict(path=list('abcd'), label=['x', 'x', 'y', 'y'], split=['train', 'train', 'test', 'test']))
    with pytest.raises(CXRDataError, match=r"the training rows hold one class only \(x 2; all rows: x 2, y 2\)"): check_classes(df)
    assert check_classes(df.assign(split=['train', 'test', 'train', 'test'])) is not None


# ---------------------------------------------------------------- 3. labels outside the expected set
def test_rare_label_warns_with_counts_and_the_likely_typo(tmp_path, mini):
    root = _csv(tmp_path/'ds', mini, n=12, extra=[('img/x.png', 'Pnemonia')])
    Image.new('L', (16, 16), 90).save(root/'img'/'x.png')
    with pytest.warns(UserWarning) as ws: df = read_dataset(root)
    msg = next(str(w.message) for w in ws if 'Pnemonia' in str(w.message))
    assert "label 'Pnemonia': only 1 image(s) (labels: COVID-19 12, normal 12, pneumonia 12, Pnemonia 1); a typo of 'pneumonia'?" in msg, msg
    assert "label_map={'Pnemonia': 'pneumonia'} (--label-map Pnemonia=pneumonia)" in msg and '--classes' in msg
    rep = data_report(df); assert rep.loc[rep.action == 'warning', 'item'].tolist() == ["label 'Pnemonia'"]
    assert 'Pnemonia' in set(df.label)   # warned, not changed
    # declared classes: the row is an error naming it, or skipped
    with pytest.raises(CXRDataError, match=r"row 38 \(.*x.png\): unknown label 'Pnemonia' \(expected one of \['COVID-19', 'normal', 'pneumonia'\]\)"):
        read_dataset(root, classes=['COVID-19', 'normal', 'pneumonia'])
    with pytest.warns(UserWarning, match='skipped 1 bad item'):
        df = read_dataset(root, classes=['COVID-19', 'normal', 'pneumonia'], on_error='skip')
    assert len(df) == 36 and data_report(df).problem.str.contains("unknown label 'Pnemonia'").sum() == 1
    with pytest.raises(CXRDataError, match="empty class: no images with label 'viral'"):
        read_dataset(root, classes=['COVID-19', 'normal', 'pneumonia', 'Pnemonia', 'viral'])
    # label_map: partial renames (other labels kept), None drops
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # nothing left to warn about
        df = read_dataset(root, label_map={'Pnemonia': 'pneumonia'})
    assert label_counts(df.label) == 'pneumonia 13, COVID-19 12, normal 12'
    df = read_dataset(root, label_map={'Pnemonia': None, 'COVID-19': 'covid'})
    assert sorted(df.label.unique()) == ['covid', 'normal', 'pneumonia'] and len(df) == 36
    assert data_report(df).action.tolist() == ['dropped']


def test_rare_label_rule():
    assert rare_labels(['pneumonia']*40 + ['normal']*38 + ['Pnemonia']) == {'Pnemonia': 'pneumonia'}
    assert rare_labels(['a']*19 + ['b']*2) == {}        # 2 images need 20x as many in the largest class
    assert rare_labels(['a']*20 + ['zz']*2) == {'zz': None}
    assert rare_labels(['normal']*30 + ['COVID-19']*3) == {}   # 3 images: a small class, not a typo


def test_cli_classes_and_label_map_flags(tmp_path, mini):
    root = _csv(tmp_path/'ds', mini, n=3, extra=[('img/x.png', 'Pnemonia')])
    Image.new('L', (16, 16), 90).save(root/'img'/'x.png')
    code, out, err = call('train', '--data', root, '--classes', 'COVID-19,normal,pneumonia', '--quick', '--no-pretrained',
                          '--arch', 'resnet18', '--out', tmp_path/'run')
    assert code == 1 and "row 11 (" in err and "unknown label 'Pnemonia'" in err and '--skip-bad' in err, err
    for bad, needle in [('--classes', 'give two or more distinct class names'), ('--label-map', 'is not old=new')]:
        code, out, err = call('train', '--data', root, bad, 'normal', '--out', tmp_path/'r2')
        assert code == 1 and needle in err, err
    from covidxr.cli_utils import _read_data, _parse_label_map
    assert _parse_label_map('Pnemonia=pneumonia, viral = pneumonia,junk=') == {'Pnemonia': 'pneumonia', 'viral': 'pneumonia', 'junk': None}
    df = _read_data(root, 'auto', label_map='Pnemonia=pneumonia', classes='COVID-19,normal,pneumonia')
    assert label_counts(df.label) == 'pneumonia 4, COVID-19 3, normal 3'
    code, out, err = call('train', '--help')
    assert all(f in out for f in ('--classes', '--label-map', '--skip-bad'))
    code, out, err = call('evaluate', '--help')
    assert all(f in out for f in ('--classes', '--label-map', '--skip-bad'))


# ---------------------------------------------------------------- 4. non-UTF-8 file names, paths outside the root
def _nonutf8_folder(root, mini):
    _folder(root, mini, n=3)
    src = sorted((root/'normal').iterdir())[0]
    bad = os.path.join(os.fsencode(root/'normal'), b'caf\xe9.jpg')
    shutil.copy(src, bad)
    return os.fsdecode(bad)


def test_non_utf8_file_name_is_named(tmp_path, mini):
    bad = _nonutf8_folder(tmp_path/'ds', mini)
    shown = f"{tmp_path/'ds'/'normal'}/caf\\xe9.jpg"
    assert show_path(bad) == shown
    with pytest.raises(CXRDataError) as e: read_folder(tmp_path/'ds')
    assert f"{shown}: file or folder name is not valid UTF-8" in str(e.value), str(e.value)
    str(e.value).encode('utf-8')   # the message itself prints anywhere
    with pytest.warns(UserWarning, match='skipped 1 bad item'): df = read_folder(tmp_path/'ds', on_error='skip')
    assert len(df) == 9 and data_report(df).item.tolist() == [shown]
    df.to_csv(index=False).encode('utf-8')   # what train writes (splits.csv) no longer fails
    # the CLI: one line naming the file, no traceback
    code, out, err = call('train', '--data', tmp_path/'ds', '--quick', '--no-pretrained', '--arch', 'resnet18', '--out', tmp_path/'run')
    assert code == 1 and 'caf\\xe9.jpg: file or folder name is not valid UTF-8' in err and 'Traceback' not in err, err


def test_predict_keeps_every_row_with_a_non_utf8_name(run, mini, tmp_path):
    bad = _nonutf8_folder(tmp_path/'imgs', mini)
    code, out, err = call('predict', '--model', run['run'], tmp_path/'imgs', '--out', tmp_path/'preds.csv')
    assert code == 0, err
    assert 'Predicted 10 of 10 images' in out
    raw = (tmp_path/'preds.csv').read_bytes()
    assert os.fsencode(bad) in raw   # the row names the file by its own bytes
    p = pd.read_csv(tmp_path/'preds.csv', encoding='utf-8', encoding_errors='surrogateescape')
    assert len(p) == 10 and (p.pred.fillna('') != '').all() and bad in set(p.path)


def test_csv_paths_leaving_the_root_are_reported(tmp_path, mini):
    root = _csv(tmp_path/'ds', mini, n=2)
    outside = tmp_path/'elsewhere'/'secret.png'; outside.parent.mkdir(); Image.new('L', (16, 16), 3).save(outside)
    lab = pd.read_csv(root/'labels.csv')
    lab.loc[len(lab)] = ['../elsewhere/secret.png', 'normal']; lab.loc[len(lab)] = [str(outside), 'normal']
    lab.to_csv(root/'labels.csv', index=False)
    with pytest.warns(UserWarning, match=r"row 8 \(\.\./elsewhere/secret\.png\): path leaves the dataset root"):
        df = read_dataset(root)
    rep = data_report(df)
    w = rep[rep.action == 'warning']
    assert w.row.tolist() == [8, 9] and w.item.tolist() == ['../elsewhere/secret.png', str(outside)]
    assert all(f'path leaves the dataset root {root}' in p for p in w.problem)


def test_non_utf8_covidx_line_is_named(tmp_path):
    for n in ('a.png', 'b.png', 'caf\xe9.png'.encode('latin-1').decode('utf-8', 'surrogateescape')):
        Image.new('L', (8, 8)).save(os.path.join(tmp_path, n))
    (tmp_path/'train_COVIDx.txt').write_bytes(b'p1 a.png normal src\np2 caf\xe9.png COVID-19 src\n')
    (tmp_path/'test_COVIDx.txt').write_bytes(b'p3 b.png COVID-19 src\n')
    with pytest.raises(CXRDataError, match=r"row train_COVIDx.txt:2 .*: line is not valid UTF-8 text: p2 caf\\xe9.png COVID-19 src"):
        read_covidx(tmp_path)
    with pytest.warns(UserWarning, match='skipped 1 bad item'): df = read_covidx(tmp_path, on_error='skip')
    assert len(df) == 2 and data_report(df).item.tolist() == ['train_COVIDx.txt:2']


def test_non_utf8_csv_and_bad_split_name_the_file_and_row(tmp_path, mini):
    root = _csv(tmp_path/'ds', mini, n=2)
    (root/'labels.csv').write_bytes((root/'labels.csv').read_bytes() + 'img/x.png,pn\xe9umonia\n'.encode('latin-1'))
    with pytest.raises(CXRDataError, match=r"labels.csv: not UTF-8 text \(byte b'\\xe9' at offset \d+\): save it as UTF-8"):
        read_dataset(root)
    pd.DataFrame(dict(filename=['img/a.png'], label=['normal'], split=['bogus'])).to_csv(root/'labels.csv', index=False)
    with pytest.raises(CXRDataError, match=r"row 2 \(img/a.png\): unknown split 'bogus'"): read_dataset(root, check='none')


# ---------------------------------------------------------------- 5. fuzzing the readers
def _contract(df):
    "The data contract: the five columns first, strings, no NaN, known splits, printable paths"
    assert isinstance(df, pd.DataFrame) and list(df.columns[:5]) == COLS
    for c in COLS: assert df[c].map(lambda v: isinstance(v, str)).all(), c
    assert set(df.split) <= {'', 'train', 'valid', 'test'} and (df.label != '').all()
    for p in df.path: p.encode('utf-8')
    data_report(df)


@pytest.fixture(scope='module')
def hyp(tmp_path_factory):
    pytest.importorskip('hypothesis')
    from hypothesis.configuration import set_hypothesis_home_dir
    set_hypothesis_home_dir(tmp_path_factory.mktemp('hypothesis'))
    from hypothesis import settings, HealthCheck
    return settings(max_examples=int(os.environ.get('COVIDXR_FUZZ_EXAMPLES', 25)), deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _img_bytes(kind:int)->bytes:
    "0: a PNG, 1: junk, 2: empty, 3: a truncated PNG"
    b = io.BytesIO(); Image.new('L', (8, 8), 7).save(b, format='PNG'); png = b.getvalue()
    return [png, b'not an image', b'', png[:len(png)//2]][kind]


OUTCOMES = []

def _reader_call(fn):
    "Either a DataFrame meeting the contract or a CXRDataError; anything else fails the test"
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: df = fn()
        except CXRDataError as e:
            assert str(e).strip(); str(e).encode('utf-8'); OUTCOMES.append('error'); return None
    _contract(df); OUTCOMES.append('rows' if len(df) else 'empty'); return df


def _both_outcomes():
    "The fuzzer reached both ends: tables with rows and clear errors"
    got = set(OUTCOMES); OUTCOMES.clear()
    assert {'rows', 'error'} <= got, got


def test_fuzz_csv_reader(hyp):
    import tempfile
    from hypothesis import given, strategies as st
    names = st.one_of(st.sampled_from(['a.png', 'b.png', 'j.png', 'e.png', 't.png', 'missing.png', '../up.png', '/abs.png', '']),
                      st.text(max_size=12))
    row = st.tuples(names, st.one_of(st.sampled_from(['normal', 'COVID-19', 'Pnemonia', '', ' nan ']), st.text(max_size=8)),
                    st.sampled_from(['', 'train', 'TEST', 'valid', 'bogus']))

    @hyp
    @given(st.lists(row, max_size=8), st.sampled_from(['utf-8', 'latin-1', 'utf-16']), st.sampled_from(['raise', 'skip']),
           st.sampled_from(['exists', 'open', 'decode']), st.booleans(), st.binary(max_size=20))
    def fuzz(rows, enc, on_error, check, declare, junk):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            for n, k in [('a.png', 0), ('b.png', 0), ('j.png', 1), ('e.png', 2), ('t.png', 3)]: (d/n).write_bytes(_img_bytes(k))
            text = 'filename,label,split\n' + ''.join(f'"{f.replace(chr(34), "")}","{l.replace(chr(34), "")}",{s}\n' for f, l, s in rows)
            try: data = text.encode(enc)
            except UnicodeEncodeError: data = text.encode('utf-8')
            (d/'labels.csv').write_bytes(data + (junk if declare and not rows else b''))
            kw = dict(classes=['normal', 'COVID-19']) if declare else {}
            _reader_call(lambda: read_dataset(d, on_error=on_error, check=check, **kw))
    OUTCOMES.clear(); fuzz(); _both_outcomes()


def test_fuzz_covidx_reader(hyp):
    import tempfile
    from hypothesis import given, strategies as st
    tok = st.one_of(st.sampled_from(['p1', 'a.png', 'j.png', 'COVID-19', 'normal', 'pneumonia', 'rnsa', 'x y.png']), st.text(max_size=6))
    line = st.one_of(st.lists(tok, max_size=6).map(lambda t: ' '.join(t).encode()), st.binary(max_size=20))   # raw bytes: any encoding

    @hyp
    @given(st.lists(line, max_size=8), st.lists(line, max_size=4), st.sampled_from(['raise', 'skip']), st.sampled_from(['none', 'open']))
    def fuzz(train, test, on_error, check):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            for n, k in [('a.png', 0), ('j.png', 1)]: (d/n).write_bytes(_img_bytes(k))
            (d/'train_COVIDx.txt').write_bytes(b'\n'.join(train))
            (d/'test_COVIDx.txt').write_bytes(b'\r\n'.join(test))
            _reader_call(lambda: read_covidx(d, on_error=on_error, check=check))
            _reader_call(lambda: read_dataset(d, on_error=on_error, check=check, label_map={'pneumonia': None}))
    OUTCOMES.clear(); fuzz(); _both_outcomes()


def test_fuzz_folder_reader(hyp):
    import tempfile
    from hypothesis import given, strategies as st
    part = st.one_of(st.sampled_from([b'normal', b'COVID-19', b'train', b'test', b'images', b'masks']),
                     st.sampled_from([b'normal', b'COVID-19']), st.binary(min_size=1, max_size=6).filter(lambda b: b'/' not in b and b'\x00' not in b and b not in (b'.', b'..')))
    name = st.one_of(st.sampled_from([b'a', b'b', b'c1', b'caf\xc3\xa9', b'caf\xe9']),
                     st.binary(min_size=1, max_size=6).filter(lambda b: b'/' not in b and b'\x00' not in b))
    item = st.tuples(st.lists(part, min_size=1, max_size=3), name, st.sampled_from([b'.png', b'.png', b'.jpg', b'.txt', b'.dcm']),
                     st.sampled_from([0, 0, 0, 1, 2, 3]))

    @hyp
    @given(st.lists(item, max_size=8), st.sampled_from(['raise', 'skip']), st.sampled_from(['exists', 'open', 'decode']))
    def fuzz(items, on_error, check):
        with tempfile.TemporaryDirectory() as d:
            root = os.fsencode(d)
            for parts, name, ext, k in items:
                folder = os.path.join(root, *parts) if parts else root
                try:
                    os.makedirs(folder, exist_ok=True)
                    with open(os.path.join(folder, name + ext), 'wb') as f: f.write(_img_bytes(k))
                except (IsADirectoryError, NotADirectoryError, FileExistsError): pass
            _reader_call(lambda: read_folder(d, on_error=on_error, check=check))
    OUTCOMES.clear(); fuzz(); _both_outcomes()

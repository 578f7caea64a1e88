"Bad input for the data readers, on tiny generated files: a clear error naming the file/row, or with on_error='skip' a report + log."
import logging, zlib, struct, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from covidxr.data import (read_folder, read_csv_dataset, read_covidx, read_dataset, check_files, check_file, load_cxr,
                          data_report, make_splits, cxr_dls, CXRDataError, PatientLeakError)


def _png(p, v=128, size=(16, 16)):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new('L', size, v).save(p)
    return p


def _good_folder(tmp_path):
    "root/<class>/*.png with 2 good images per class"
    for lab in ('COVID-19', 'normal'):
        for i in range(2): _png(tmp_path/lab/f'{lab}_{i}.png', 60*i + 20)
    return tmp_path


def _bomb_png(p, w=30000, h=30000):
    "A valid 1-bit PNG header claiming w x h pixels (900 Mpx) in a few kB: the shape of a decompression bomb"
    def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    raw = zlib.compress(b'\x00' * (1 + (w + 7)//8) * 8, 9)  # only a few rows of data: enough for the header check
    p.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 1, 0, 0, 0, 0)) +
                  chunk(b'IDAT', raw) + chunk(b'IEND', b''))
    return p


# ---------------------------------------------------------------- one bad file of each kind, in a class folder
BAD_FILES = {
    'zero-byte': (lambda p: p.write_bytes(b''), 'empty file (0 bytes)'),
    'non-image': (lambda p: p.write_text('this is a text file, not an image'), 'not an image file'),
    'corrupt':   (lambda p: p.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4), 'corrupt PNG file'),
    'bomb':      (_bomb_png, 'decompression bomb'),
}


@pytest.mark.parametrize('kind', list(BAD_FILES))
def test_bad_file_raises_naming_it(tmp_path, kind):
    root = _good_folder(tmp_path)
    make, msg = BAD_FILES[kind]
    bad = root/'normal'/f'bad_{kind}.png'; make(bad)
    with pytest.raises(CXRDataError) as e: read_folder(root)
    assert f'bad_{kind}.png' in str(e.value) and msg in str(e.value), str(e.value)
    assert "on_error='skip'" in str(e.value)   # says how to go on


@pytest.mark.parametrize('kind', list(BAD_FILES))
def test_bad_file_skipped_with_report_and_log(tmp_path, kind, caplog):
    root = _good_folder(tmp_path)
    make, msg = BAD_FILES[kind]
    bad = root/'normal'/f'bad_{kind}.png'; make(bad)
    with caplog.at_level(logging.WARNING, logger='covidxr.data'), pytest.warns(UserWarning, match='skipped 1 bad item'):
        df = read_folder(root, on_error='skip')
    assert len(df) == 4 and str(bad) not in set(df.path)
    rep = data_report(df)
    assert rep.item.tolist() == [str(bad)] and msg in rep.problem[0] and rep.action[0] == 'skipped'
    assert any(f'bad_{kind}.png' in r.getMessage() for r in caplog.records)


def test_truncated_found_by_decode_check_and_by_load_cxr(tmp_path):
    root = _good_folder(tmp_path)
    full = root/'normal'/'full.jpg'
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(full, quality=95)
    data = full.read_bytes(); trunc = root/'normal'/'trunc.jpg'; trunc.write_bytes(data[:len(data)//2]); full.unlink()
    assert check_file(trunc, 'open') is None                      # the header is intact ...
    assert 'truncated' in check_file(trunc, 'decode')             # ... the pixels are not
    with pytest.raises(CXRDataError, match=r'trunc\.jpg.*truncated'): read_folder(root, check='decode')
    with pytest.raises(CXRDataError, match=r'trunc\.jpg: cannot decode'): load_cxr(trunc)
    df = read_folder(root, check='decode', on_error='skip')
    assert len(df) == 4 and 'truncated' in data_report(df).problem[0]


def test_bomb_limit_is_configurable_and_load_cxr_refuses(tmp_path):
    p = _png(tmp_path/'a'/'big.png', size=(100, 80))
    assert check_file(p, 'open') is None
    assert 'exceeds max_pixels=7999' in check_file(p, 'open', max_pixels=7999)
    with pytest.raises(CXRDataError, match='big.png.*decompression bomb'): load_cxr(p, max_pixels=7999)
    b = _bomb_png(tmp_path/'a'/'bomb.png')
    with pytest.raises(CXRDataError, match='bomb.png.*decompression bomb'): load_cxr(b)


# ---------------------------------------------------------------- folder layout problems
def test_empty_class_folder(tmp_path):
    root = _good_folder(tmp_path); (root/'pneumonia').mkdir()
    with pytest.raises(CXRDataError, match=r'pneumonia.*empty class folder'): read_folder(root)
    with pytest.warns(UserWarning): df = read_folder(root, on_error='skip')
    assert set(df.label) == {'COVID-19', 'normal'}
    assert data_report(df).problem.str.contains('empty class').any()


def test_expected_class_without_images(tmp_path):
    root = _good_folder(tmp_path)
    with pytest.raises(CXRDataError, match="empty class: no images with label 'pneumonia'"):
        read_folder(root, labels=['COVID-19', 'normal', 'pneumonia'])


def test_duplicate_file_names_across_class_folders(tmp_path):
    root = _good_folder(tmp_path)
    _png(root/'normal'/'same.png'); _png(root/'COVID-19'/'same.png', 30)
    with pytest.raises(CXRDataError) as e: read_folder(root)
    assert "duplicate file name 'same.png'" in str(e.value) and 'COVID-19' in str(e.value)
    with pytest.warns(UserWarning): df = read_folder(root, on_error='skip')
    assert not df.path.str.endswith('same.png').any() and len(data_report(df)) == 2   # both copies listed
    assert len(read_folder(root, allow_duplicate_names=True)) == 6


def test_unknown_folder_label_with_label_map(tmp_path):
    root = _good_folder(tmp_path); _png(root/'other'/'x.png')
    with pytest.raises(CXRDataError, match=r"x\.png.*unknown label 'other'"):
        read_folder(root, label_map={'COVID-19': 'COVID-19', 'normal': 'normal'})
    df = read_folder(root, label_map={'COVID-19': 'COVID-19', 'normal': 'normal', 'other': None})  # None: drop on purpose
    assert len(df) == 4 and data_report(df).action.tolist() == ['dropped']


def test_image_outside_class_folder_and_no_images(tmp_path):
    root = _good_folder(tmp_path); _png(root/'loose.png')
    with pytest.raises(CXRDataError, match=r'loose\.png: image not inside a class folder'): read_folder(root)
    empty = tmp_path/'empty'; (empty/'a').mkdir(parents=True); (empty/'a'/'readme.txt').write_text('x')
    with pytest.raises(CXRDataError): read_folder(empty)


# ---------------------------------------------------------------- CSV problems
def _csv(tmp_path, rows, name='labels.csv'):
    pd.DataFrame(rows, columns=['filename', 'label', 'patient_id', 'source', 'split']).to_csv(tmp_path/name, index=False)
    return tmp_path/name


def test_csv_listed_but_missing_names_row(tmp_path):
    _png(tmp_path/'a.png'); _png(tmp_path/'b.png')
    f = _csv(tmp_path, [('a.png', 'normal', 'p1', 's', 'train'), ('gone.png', 'normal', 'p2', 's', 'train'),
                        ('b.png', 'COVID-19', 'p3', 's', 'test')])
    with pytest.raises(CXRDataError) as e: read_csv_dataset(f)
    assert 'row 3' in str(e.value) and 'gone.png' in str(e.value) and 'listed but missing' in str(e.value)
    with pytest.warns(UserWarning): df = read_csv_dataset(f, on_error='skip')
    assert len(df) == 2 and data_report(df).row.tolist() == [3]


def test_csv_unknown_label_and_empty_class(tmp_path):
    _png(tmp_path/'a.png'); _png(tmp_path/'b.png')
    f = _csv(tmp_path, [('a.png', 'normal', 'p1', 's', ''), ('b.png', 'Covid', 'p2', 's', '')])
    with pytest.raises(CXRDataError) as e: read_csv_dataset(f, labels=['COVID-19', 'normal'])
    assert "row 3 (" in str(e.value) and "unknown label 'Covid'" in str(e.value) and "empty class" in str(e.value)
    df = read_csv_dataset(f, label_map={'normal': 'normal', 'Covid': 'COVID-19'})
    assert df.label.tolist() == ['normal', 'COVID-19']
    with pytest.raises(CXRDataError, match="unknown label 'Covid'"): read_csv_dataset(f, label_map={'normal': 'normal'})


def test_csv_bad_columns_split_and_empty_values(tmp_path):
    _png(tmp_path/'a.png')
    f = _csv(tmp_path, [('a.png', 'normal', 'p1', 's', 'train')])
    with pytest.raises(CXRDataError, match=r"no column 'path'.*columns are"): read_csv_dataset(f, path_col='path')
    f2 = _csv(tmp_path, [('a.png', 'normal', 'p1', 's', 'holdout')], 'l2.csv')
    with pytest.raises(CXRDataError, match="unknown split 'holdout'"): read_csv_dataset(f2)
    f3 = _csv(tmp_path, [('a.png', '', 'p1', 's', ''), ('', 'normal', 'p2', 's', '')], 'l3.csv')
    with pytest.raises(CXRDataError) as e: read_csv_dataset(f3)
    assert 'empty label' in str(e.value) and 'empty file name' in str(e.value)
    with pytest.raises(CXRDataError, match='CSV file not found'): read_csv_dataset(tmp_path/'nope.csv')


def test_csv_duplicate_rows(tmp_path):
    _png(tmp_path/'a.png'); _png(tmp_path/'b.png')
    f = _csv(tmp_path, [('a.png', 'normal', 'p1', 's', 'train'), ('a.png', 'normal', 'p1', 's', 'train'),
                        ('b.png', 'normal', 'p2', 's', 'train'), ('b.png', 'COVID-19', 'p2', 's', 'train')])
    with pytest.raises(CXRDataError) as e: read_csv_dataset(f)
    msg = str(e.value)
    assert 'b.png' in msg and 'different label' in msg and 'a.png' not in msg   # exact repeats are not errors
    with pytest.warns(UserWarning): df = read_csv_dataset(f, on_error='skip')
    assert df.path.map(lambda p: Path(p).name).tolist() == ['a.png']
    rep = data_report(df)
    assert (rep.action == 'deduplicated').sum() == 1 and (rep.action == 'skipped').sum() == 2


# ---------------------------------------------------------------- COVIDx problems
def test_covidx_missing_malformed_conflicting(tmp_path):
    for n in ('a.png', 'b.png', 'c.png'): _png(tmp_path/'train'/n)
    _png(tmp_path/'test'/'c.png')
    (tmp_path/'train_COVIDx.txt').write_text('1 a.png normal src\n2 gone.png COVID-19 src\njunk\n3 b.png normal src\n3 b.png pneumonia src\n4 c.png normal src\n')
    (tmp_path/'test_COVIDx.txt').write_text('4 c.png normal src\n')
    with pytest.raises(CXRDataError) as e: read_covidx(tmp_path)
    msg = str(e.value)
    assert 'train_COVIDx.txt:3' in msg and 'malformed line' in msg
    assert 'b.png' in msg and 'different patient/label' in msg
    assert 'c.png' in msg and 'in both test and train' in msg
    assert 'gone.png' in msg and 'listed but missing' in msg
    with pytest.warns(UserWarning): df = read_covidx(tmp_path, on_error='skip')
    assert [Path(p).name for p in df.path] == ['a.png']
    assert len(data_report(df)) == 6     # junk line, 2x b.png, 2x c.png, gone.png


def test_covidx_unknown_label(tmp_path):
    _png(tmp_path/'x.png'); _png(tmp_path/'y.png')
    (tmp_path/'train_COVIDx.txt').write_text('1 x.png normal s\n2 y.png tuberculosis s\n')
    with pytest.raises(CXRDataError, match="unknown label 'tuberculosis'"): read_covidx(tmp_path, labels=['normal', 'COVID-19'])
    (tmp_path/'nothing').mkdir()
    with pytest.raises(CXRDataError, match='no COVIDx label file'): read_covidx(tmp_path/'nothing')


def test_on_error_value_checked(tmp_path):
    _good_folder(tmp_path)
    with pytest.raises(ValueError, match="on_error must be"): read_folder(tmp_path, on_error='ignore')


# ---------------------------------------------------------------- splits and dataloaders
def test_given_split_with_patient_leak_names_patients():
    df = pd.DataFrame(dict(path=[f'/x/{i}.png' for i in range(6)], label=['a', 'b'] * 3,
                           patient_id=['p1', 'p1', 'p2', 'p3', 'p3', 'p4'], split=['train', 'test', 'train', 'train', 'valid', 'test']))
    with pytest.raises(PatientLeakError) as e: make_splits(df)
    assert 'p1 (test: 1, train: 1)' in str(e.value) and 'p3 (' in str(e.value) and 'p2' not in str(e.value)


def test_cxr_dls_refuses_unknown_labels_and_missing_split(tmp_path):
    root = _good_folder(tmp_path)
    df = make_splits(read_folder(root), valid_pct=0.5, test_pct=0)
    with pytest.raises(CXRDataError, match=r"labels outside vocab \['normal'\]"): cxr_dls(df, size=16, bs=2, vocab=['normal'])
    with pytest.raises(CXRDataError, match='make_splits'): cxr_dls(df.assign(split=''), size=16)
    with pytest.raises(ValueError, match="unknown augmentation preset 'nope'"): cxr_dls(df, size=16, bs=2, aug='nope')


def test_read_dataset_missing_and_bad_format(tmp_path):
    from covidxr.core import DatasetNotFoundError
    with pytest.raises(DatasetNotFoundError): read_dataset(tmp_path/'nope')
    _good_folder(tmp_path)
    with pytest.raises(ValueError, match='format must be'): read_dataset(tmp_path, format='xml')

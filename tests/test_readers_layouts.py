"COVIDx v1 (COVID-ResNet) and Kaggle COVIDx CXR-2/3/4 layouts (issues #9, #10), on small folders of real cxr-mini images."
import shutil
from pathlib import Path
import pandas as pd, pytest
from covidxr.data import read_dataset, read_covidx, data_report, CXRDataError
from covidxr.test_utils import cxr_mini_4class

@pytest.fixture(scope='module')
def d4(): return cxr_mini_4class(max_per_class=2)

def _copy(rows, folder):
    folder.mkdir(exist_ok=True)
    for p in rows.path: shutil.copy(p, folder/Path(p).name)

def make_v1(root, d4, repeat=True):
    for split in ('train', 'test'):
        rows = d4[d4.split == split]; _copy(rows, root/split)
        lines = [f"{r.patient_id} {Path(r.path).name} {r.label}" for r in rows.itertuples()]
        if repeat and split == 'train': lines.insert(1, lines[0])   # RSNA multi-box style repeated row
        (root/f'{split}_split_v1.txt').write_text('\n'.join(lines) + '\n')
    return root

def make_kaggle(root, d4, source='rnsa'):
    tr, te = d4[d4.split == 'train'], d4[d4.split == 'test']
    parts = {'train.txt': (tr.iloc[4:], source), 'val.txt': (tr.iloc[:4], 'sirm'), 'test.txt': (te, 'cohen')}
    for fname, (rows, src) in parts.items():
        _copy(rows, root/fname[:-4])
        (root/fname).write_text(''.join(f"{r.patient_id} {Path(r.path).name} {'positive' if r.label == 'COVID-19' else 'negative'} {src}\n"
                                        for r in rows.itertuples()))
    return root

def test_cxr_mini_4class(d4):
    assert sorted(d4.label.unique()) == ['COVID-19', 'bacteria', 'normal', 'viral']
    assert d4.groupby(['split', 'label']).size().to_dict() == {(s, l): 2 for s in ('test', 'train') for l in ('COVID-19', 'bacteria', 'normal', 'viral')}
    assert list(d4.columns[:5]) == ['path', 'label', 'patient_id', 'source', 'split']

def test_covidx_v1(tmp_path, d4):
    df = read_dataset(make_v1(tmp_path, d4))
    assert df.attrs['format'] == 'covidx' and df.attrs['label_files'] == {'train': 'train_split_v1.txt', 'test': 'test_split_v1.txt'}
    assert sorted(df.label.unique()) == ['COVID-19', 'bacteria', 'normal', 'viral']
    assert df.split.value_counts().to_dict() == {'train': 8, 'test': 8}
    assert (df.patient_id == 'covidx_' + df.filename.map(dict(zip(d4.path.map(lambda p: Path(p).name), d4.patient_id)))).all()
    assert all(Path(p).parent.name == s for p, s in zip(df.path, df.split))
    rep = data_report(df)
    assert rep.action.tolist() == ['deduplicated'] and rep.row.tolist() == ['train_split_v1.txt:2']
    assert df.attrs['n_duplicates'] == 1

def test_covidx_v1_conflicting_duplicate_is_an_error(tmp_path, d4):
    root = make_v1(tmp_path, d4, repeat=False)
    f = root/'train_split_v1.txt'; first = f.read_text().splitlines()[0].split()
    other = 'normal' if first[2] == 'viral' else 'viral'
    f.write_text(f.read_text() + f"{first[0]} {first[1]} {other}\n")
    with pytest.raises(CXRDataError, match=r"listed 2 times with different patient/label: lines train_split_v1.txt:1, train_split_v1.txt:9"):
        read_dataset(root)

def test_kaggle_layout(tmp_path, d4):
    df = read_dataset(make_kaggle(tmp_path, d4))
    assert df.attrs['label_files'] == {'train': 'train.txt', 'test': 'test.txt', 'valid': 'val.txt'}
    assert df.split.value_counts().to_dict() == {'train': 4, 'valid': 4, 'test': 8}
    assert set(df.label) == {'positive', 'negative'}
    assert (df[df.split == 'valid'].path.map(lambda p: Path(p).parent.name) == 'val').all()
    tr = df[df.split == 'train']
    assert set(tr.source) == {'rsna'} and tr.patient_id.str.startswith('rsna_').all()
    assert df[df.split == 'test'].patient_id.str.startswith('cohen_').all()
    rep = data_report(df)
    assert set(rep.action) == {'normalised'} and len(rep) == 4
    assert rep.problem.iloc[0] == "source 'rnsa' read as 'rsna'" and rep.row.iloc[0] == 'train.txt:1'

def test_kaggle_without_val_and_label_map(tmp_path, d4):
    root = make_kaggle(tmp_path, d4, source='rsna'); (root/'val.txt').unlink()
    df = read_dataset(root, label_map={'positive': 'COVID-19', 'negative': 'non-COVID'})
    assert set(df.split) == {'train', 'test'} and set(df.label) == {'COVID-19', 'non-COVID'}
    assert len(data_report(df)) == 0

@pytest.mark.parametrize('layout,fname', [('v1', 'test_split_v1.txt'), ('kaggle', 'test.txt')])
def test_malformed_line_named(tmp_path, d4, layout, fname):
    root = (make_v1 if layout == 'v1' else make_kaggle)(tmp_path, d4)
    n = len((root/fname).read_text().splitlines())
    (root/fname).write_text((root/fname).read_text() + 'lonely_field\n')
    with pytest.raises(CXRDataError, match=rf"row {fname}:{n+1} .*malformed line 'lonely_field'"):
        read_dataset(root)
    df = read_dataset(root, on_error='skip')   # or skip it, and it is listed
    assert f'{fname}:{n+1}' in data_report(df).row.tolist()

def test_missing_image_named(tmp_path, d4):
    root = make_kaggle(tmp_path, d4)
    victim = next((root/'val').iterdir()); victim.unlink()
    with pytest.raises(CXRDataError, match=victim.name):
        read_covidx(root)

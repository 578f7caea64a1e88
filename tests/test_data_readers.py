"Readers on the common folder layouts and on cxr-mini, read_dataset's format choice, splits, DataLoaders options, duplicates."
import warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from covidxr.data import (read_folder, read_csv_dataset, read_covidx, read_dataset, make_splits, assert_patient_disjoint,
                          cxr_dls, AUG_PRESETS, find_duplicates, drop_duplicates, data_report, sample_per_class,
                          PatientLeakError, COLS)


def _png(p, v=100, size=(24, 20), seed=None):
    p.parent.mkdir(parents=True, exist_ok=True)
    if seed is None: Image.new('L', size, v).save(p)
    else: Image.fromarray((np.random.default_rng(seed).random(size[::-1]) * 255).astype(np.uint8)).save(p)
    return p


# ---------------------------------------------------------------- folder layouts
def test_kermany_layout_split_from_parent(tmp_path):
    for sp in ('train', 'test', 'val'):
        for lab in ('NORMAL', 'PNEUMONIA'):
            for i in range(2): _png(tmp_path/'chest_xray'/sp/lab/f'{sp}_{lab}_{i}.jpeg')
    df = read_folder(tmp_path, label_map={'NORMAL': 'normal', 'PNEUMONIA': 'pneumonia'})
    assert list(df.columns[:5]) == COLS and len(df) == 12
    assert df.groupby('split').size().to_dict() == {'test': 4, 'train': 4, 'valid': 4}
    assert set(df.label) == {'normal', 'pneumonia'} and df.attrs['format'] == 'folder'
    assert (df.patient_id == df.path.map(lambda p: Path(p).stem)).all()     # unknown patient: file stem


def test_radiography_database_layout_masks_ignored(tmp_path):
    for lab in ('COVID', 'Normal', 'Viral Pneumonia'):
        for i in range(3):
            _png(tmp_path/lab/'images'/f'{lab}-{i}.png'); _png(tmp_path/lab/'masks'/f'{lab}-{i}.png')
    (tmp_path/'COVID.metadata.xlsx').write_bytes(b'PK')      # other files are ignored
    df = read_folder(tmp_path, source='radiography')
    assert len(df) == 9 and sorted(df.label.unique()) == ['COVID', 'Normal', 'Viral Pneumonia']
    assert not df.path.str.contains('/masks/').any() and set(df.source) == {'radiography'} and set(df.split) == {''}


def test_patient_re(tmp_path):
    for n in ('nih-00000013_000', 'nih-00000013_005', 'nih-00000099_001'): _png(tmp_path/'normal'/f'{n}.png')
    df = read_folder(tmp_path, patient_re=r'^(nih-\d{8})_')
    assert df.patient_id.tolist() == ['nih-00000013', 'nih-00000013', 'nih-00000099']


# ---------------------------------------------------------------- cxr-mini: three readers, README counts
def test_cxr_mini_three_readers_agree(mini):
    f = read_folder(mini).sort_values('path').reset_index(drop=True)
    c = read_csv_dataset(mini/'labels.csv').sort_values('path').reset_index(drop=True)
    x = read_covidx(mini).sort_values('path').reset_index(drop=True)
    for d in (f, c, x): assert len(d) == 1354 and d.label.value_counts().to_dict() == {'pneumonia': 466, 'COVID-19': 447, 'normal': 441}
    assert f.path.tolist() == c.path.tolist() == x.path.tolist()
    assert f.label.tolist() == c.label.tolist() == x.label.tolist()
    assert c.patient_id.tolist() == x.patient_id.tolist() and c.patient_id.nunique() == 886
    assert c.split.tolist() == x.split.tolist() and c.split.value_counts().to_dict() == {'train': 1083, 'test': 271}
    assert c.source.value_counts().to_dict() == {'nih': 810, 'ieee8023': 500, 'actualmed': 44}
    assert_patient_disjoint(c)
    assert read_dataset('cxr-mini').attrs['format'] == 'csv'
    assert read_dataset(mini, format='covidx').attrs['format'] == 'covidx'
    assert len(read_dataset(mini/'test_COVIDx.txt')) == 271


def test_cxr_mini_decode_check(mini):
    df = read_dataset(mini, check='decode')
    assert len(df) == 1354 and len(data_report(df)) == 0


def test_read_dataset_auto_order(tmp_path):
    _png(tmp_path/'normal'/'a.png'); _png(tmp_path/'COVID-19'/'b.png')
    assert read_dataset(tmp_path).attrs['format'] == 'folder'
    (tmp_path/'train_COVIDx.txt').write_text('1 normal/a.png normal\n2 COVID-19/b.png COVID-19\n')
    d = read_dataset(tmp_path)
    assert d.attrs['format'] == 'covidx' and d.split.tolist() == ['train', 'train']
    pd.DataFrame(dict(filename=['normal/a.png'], label=['normal'])).to_csv(tmp_path/'labels.csv', index=False)
    d = read_dataset(tmp_path)
    assert d.attrs['format'] == 'csv' and d.patient_id.tolist() == ['a']       # no patient column: file stem


def test_covidx_image_dirs_and_label_map(tmp_path):
    _png(tmp_path/'imgs_tr'/'a.png'); _png(tmp_path/'imgs_te'/'b.png')
    (tmp_path/'train_COVIDx9A.txt').write_text('p1 a.png positive rsna\n')
    (tmp_path/'test_COVIDx9A.txt').write_text('p2 b.png negative rsna\n')
    d = read_covidx(tmp_path, image_dirs=dict(train=tmp_path/'imgs_tr', test=tmp_path/'imgs_te'),
                    label_map={'positive': 'COVID-19', 'negative': 'non-COVID'})
    assert d.label.tolist() == ['COVID-19', 'non-COVID'] and d.patient_id.tolist() == ['rsna_p1', 'rsna_p2']


# ---------------------------------------------------------------- splits
def _synthetic(n_pat=200, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_pat):
        lab = ['a', 'b', 'c'][p % 3] if p % 10 else 'a'
        for k in range(rng.integers(1, 5)):
            rows.append(dict(path=f'/x/{p}_{k}.png', label=lab, patient_id=f'p{p}', source=['s1', 's2'][p % 2], split=''))
    return pd.DataFrame(rows)


def test_make_splits_fractions_disjoint_stratified_seeded():
    df = _synthetic()
    s = make_splits(df, valid_pct=0.1, test_pct=0.2, seed=3)
    assert set(s.split) == {'train', 'valid', 'test'}
    assert_patient_disjoint(s)
    assert abs((s.split == 'test').mean() - 0.2) < 0.04
    assert abs((s.split == 'valid').sum() / (s.split != 'test').sum() - 0.1) < 0.03
    share = pd.crosstab(s.label, s.split, normalize='columns')
    assert (share.max(axis=1) - share.min(axis=1)).max() < 0.08
    assert make_splits(df, valid_pct=0.1, test_pct=0.2, seed=3).split.tolist() == s.split.tolist()
    assert make_splits(df, valid_pct=0.1, test_pct=0.2, seed=4).split.tolist() != s.split.tolist()
    s3 = make_splits(df, valid_pct=0.3, test_pct=0, seed=0)
    assert set(s3.split) == {'train', 'valid'} and abs((s3.split == 'valid').mean() - 0.3) < 0.05
    s2 = make_splits(df, stratify=['label', 'source'])
    assert_patient_disjoint(s2)


def test_make_splits_honours_given_and_places_unassigned_with_their_patient():
    df = _synthetic(60)
    pats = df.patient_id.unique()
    df.loc[df.patient_id.isin(pats[:12]), 'split'] = 'test'
    df.loc[df.patient_id.isin(pats[12:]), 'split'] = 'train'
    first = df.groupby('patient_id').head(1).index
    df.loc[first[:5], 'split'] = ''                       # one image of 5 patients lost its split
    s = make_splits(df, valid_pct=0.25)
    assert set(s.loc[df.patient_id.isin(pats[:12]), 'split']) == {'test'}
    assert (s.split[df.split == 'test'] == 'test').all()
    assert_patient_disjoint(s)
    assert (s.split == 'valid').any() and not s.loc[df.patient_id.isin(pats[:12]), 'split'].eq('valid').any()
    s2 = make_splits(s)                                   # a complete split is kept as is
    assert s2.split.tolist() == s.split.tolist()


def test_image_level_split_only_when_asked():
    df = _synthetic(40)
    with pytest.warns(UserWarning, match='image-level'): s = make_splits(df, by='image', seed=0)
    assert set(s.split) == {'train', 'valid', 'test'}
    with pytest.raises(PatientLeakError): assert_patient_disjoint(s)      # it does mix patients here
    with pytest.raises(ValueError): make_splits(df, by='study')


# ---------------------------------------------------------------- DataLoaders
def _small_table(tmp_path, n=6):
    rows = []
    for lab in ('COVID-19', 'normal', 'pneumonia'):
        for i in range(n):
            p = _png(tmp_path/lab/f'{lab}{i}.png', size=(40, 30), seed=i + 10*len(lab))
            rows.append(dict(path=str(p), label=lab, patient_id=f'{lab}{i}', source='t', split='test' if i == 0 else 'train'))
    return pd.DataFrame(rows)


def test_cxr_dls_falls_back_to_test_with_warning_and_seeded_order(tmp_path):
    df = _small_table(tmp_path)
    with pytest.warns(UserWarning, match="validating on 'test'"): dls = cxr_dls(df, size=16, bs=4, device='cpu')
    assert len(dls.valid_ds) == 3 and dls.cxr.valid_split == 'test'
    with pytest.warns(UserWarning): a = cxr_dls(df, size=16, bs=4, seed=1, device='cpu').train.get_idxs()
    with pytest.warns(UserWarning): b = cxr_dls(df, size=16, bs=4, seed=1, device='cpu').train.get_idxs()
    assert a == b


def test_pad_resize_letterboxes_black(tmp_path):
    p = tmp_path/'w'/'wide.png'; p.parent.mkdir()
    Image.new('L', (80, 20), 255).save(p)
    df = pd.DataFrame(dict(path=[str(p)]*4, label=['a', 'b']*2, patient_id=['1', '2', '3', '4'], source='t',
                           split=['train', 'train', 'valid', 'valid']))
    dls = cxr_dls(df, size=32, bs=2, resize='pad', device='cpu')
    x = dls.valid.one_batch()[0]
    m, s = (torch.tensor(v).view(1, 3, 1, 1) for v in ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    raw = x * s + m
    assert raw[0, :, 0].max() < 0.02 and raw[0, :, 16].min() > 0.98       # black bars above, white image inside
    sq = cxr_dls(df, size=32, bs=2, resize='squish', device='cpu').valid.one_batch()[0] * s + m
    assert sq[0].min() > 0.98
    with pytest.raises(ValueError, match='resize must be'): cxr_dls(df, size=32, resize='stretch')


@pytest.mark.parametrize('aug', list(AUG_PRESETS))
def test_aug_presets_train_batches(tmp_path, aug):
    df = _small_table(tmp_path).replace({'split': {'test': 'valid'}})
    dls = cxr_dls(df, size=32, bs=6, aug=aug, device='cpu')
    x, y = dls.one_batch()
    assert x.shape == (6, 3, 32, 32) and torch.isfinite(x).all()
    xv, _ = dls.valid.one_batch(); xv2, _ = dls.valid.one_batch()
    assert torch.equal(xv, xv2)                                 # validation is never augmented


def test_balance_weights_only(tmp_path):
    df = _small_table(tmp_path)
    df = pd.concat([df, df[df.label == 'normal'].assign(path=lambda d: d.path, patient_id=lambda d: d.patient_id + 'x')])
    df = df.replace({'split': {'test': 'valid'}})
    dls = cxr_dls(df, size=16, bs=4, balance='weights', device='cpu')
    w = dls.cxr.class_weights
    assert torch.allclose(w[0], w[2]) and torch.isclose(w[0] / w[1], torch.tensor(2.0))
    with pytest.raises(ValueError, match='balance'): cxr_dls(df, size=16, balance='oversample')


# ---------------------------------------------------------------- duplicates
def test_find_and_drop_duplicates_across_splits(tmp_path):
    a = _png(tmp_path/'x'/'a.png', size=(64, 64), seed=1)
    Image.open(a).save(tmp_path/'x'/'a_copy.jpg', quality=80)
    c = _png(tmp_path/'x'/'c.png', size=(64, 64), seed=2)
    df = pd.DataFrame(dict(path=[str(a), str(tmp_path/'x'/'a_copy.jpg'), str(c)], label=['n', 'n', 'p'],
                           patient_id=['1', '2', '3'], source='t', split=['train', 'test', 'train']))
    pairs = find_duplicates(df, progress=False)
    assert len(pairs) == 1 and pairs.cross_split[0] and not pairs.same_patient[0] and pairs.dist[0] <= 4
    kept = drop_duplicates(df, pairs)
    assert kept.path.tolist() == [str(a), str(c)]
    rep = data_report(kept)
    assert rep.action.tolist() == ['deduplicated'] and 'a.png' in rep.problem[0]


def test_sample_per_class(mini):
    df = read_dataset(mini)
    s = sample_per_class(df, 5)
    assert s.groupby(['split', 'label']).size().eq(5).all() and len(s) == 30

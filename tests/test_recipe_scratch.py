"""The `cxr_scratch` recipe (issue #11; what `covidxr demo` trains): its fields are as documented in
nbs/03_learn.ipynb, and it trains end to end at quick scale on a few real cxr-mini images: both stages run at their
(scaled) sizes from scratch, history.csv has one row per epoch with validation metrics, and the kept weights load."""
import pandas as pd, pytest, torch
from covidxr.core import load_json, load_state_file

torch.set_num_threads(2)

def test_fields():
    from covidxr.learn import get_recipe, RECIPES
    assert 'cxr_scratch' in RECIPES
    r = get_recipe('cxr_scratch')
    assert (r.name, r.arch, r.pretrained, r.head, r.aug, r.resize, r.opt, r.bs) == \
           ('cxr_scratch', 'resnet18', False, 'fastai', 'fastai', 'squish', 'adam', 32)
    assert [(s.name, s.size) for s in r.stages] == [('small', 128), ('large', 160)]
    steps = [t for s in r.stages for t in s.steps]
    assert [(t.epochs, t.lr, t.lr_lo, t.frozen, t.schedule) for t in steps] == \
           [(10, 3e-3, None, False, 'one_cycle'), (4, 1e-3, None, False, 'one_cycle')]
    assert r.monitor == 'valid_loss' and r.epochs == 14
    assert 'validation split' in r.notes and 'never on test' in r.notes and 'issue #11' in r.source

def test_trains_end_to_end(mini, tmp_path):
    from covidxr.data import read_dataset, make_splits, sample_per_class
    from covidxr.learn import train_recipe, get_recipe
    df = sample_per_class(make_splits(read_dataset(mini), seed=42), 4, splits=('train', 'valid'))
    r = get_recipe('cxr_scratch').scaled(size=0.25, max_epochs=1)   # 32 -> 40 px, one epoch per stage
    learn = train_recipe(r, df, tmp_path/'run', show=False, device='cpu')
    h = pd.read_csv(tmp_path/'run'/'history.csv')
    assert list(h['stage']) == ['small', 'large'] and list(h['size']) == [32, 40]
    assert h[['train_loss', 'valid_loss', 'accuracy', 'f1_macro']].notna().all().all()
    card = load_json(tmp_path/'run'/'card.json')
    assert (card['recipe'], card['arch'], card['pretrained']) == ('cxr_scratch', 'resnet18', False)
    assert card['best']['monitor'] == 'valid_loss' and card['best']['value'] == pytest.approx(h['valid_loss'].min())
    sd = load_state_file(tmp_path/'run'/'weights.safetensors')
    assert set(sd) == set(learn.model.state_dict())

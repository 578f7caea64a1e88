"nbs/index.ipynb mirrors README.md (regenerate with `make index`)."
import json
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent

def test_index_mirrors_readme():
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    text = ''.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    assert text.strip() == (ROOT/'README.md').read_text().strip(), "nbs/index.ipynb is out of date: run `make index`"

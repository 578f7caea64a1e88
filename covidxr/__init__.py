__version__ = "0.1.0"

import warnings as _warnings
# Two deprecation warnings fastai 2.8 raises when it is imported, which nothing in covidxr or its user's code can act on
# (fastai's own code): torch's `torch.jit.script` deprecation (fastai.layers scripts its Swish/Mish helpers) and pandas'
# `mode.chained_assignment` option (fastai.tabular sets it). Silenced by message only; every other warning is shown.
_warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
_warnings.filterwarnings('ignore', message=r"The 'mode\.chained_assignment' option is deprecated")

"""covidxr speed benchmark: covidxr's pipeline next to plain fastai on the same full-size images.

    .venv/bin/python benchmarks/bench.py [--quick] [--out DIR]

A thin wrapper over `covidxr.bench.run_bench` (the same as `covidxr bench [--quick] --out DIR`); see
nbs/30_bench.ipynb for what is measured. Writes DIR/bench.json and DIR/bench.md (default DIR: bench).
Speed targets live in the issue tracker and the README, never in timed tests.
"""
import sys
from covidxr.cli import main

if __name__ == '__main__': sys.exit(main(['bench', *sys.argv[1:]]))

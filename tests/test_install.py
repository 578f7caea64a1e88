"""Installing covidxr next to what users already have (issue #15): pyproject.toml declares supported *ranges*, the one
tested set of exact versions is constraints.txt (what `make` and CI install with `pip install -c constraints.txt`).
These tests check that the two agree, that this environment is the locked one, and that pip keeps a user's own
(different, supported) torch when it installs the covidxr wheel."""
import json, os, subprocess, sys, tomllib
from pathlib import Path
from importlib import metadata
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT/'constraints.txt'

def read_lock(path=LOCK)->dict:
    "`{canonical name: Version}` of a pip constraints file made of `name==version` lines"
    out = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split('#', 1)[0].strip()
        if not line: continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == '==', f"{path.name} line {i}: {line!r} is not pinned with =="
        out[canonicalize_name(req.name)] = Version(specs[0].version)
    return out

def declared(extras=('test',))->list:
    "The requirements pyproject.toml declares: runtime dependencies plus the given extras (markers evaluated here)"
    proj = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']
    reqs = [Requirement(r) for r in proj['dependencies']]
    for e in extras: reqs += [Requirement(r) for r in proj['optional-dependencies'][e]]
    return [r for r in reqs if canonicalize_name(r.name) != 'covidxr' and (r.marker is None or r.marker.evaluate())]

def test_ranges_not_pins():
    # a library declares ranges: an exact pin of torch & co. would replace a user's CUDA build
    for r in declared():
        assert not any(s.operator in ('==', '===') for s in r.specifier), f"pyproject.toml pins {r}: declare a range"
        assert r.specifier, f"pyproject.toml: {r.name} has no version range"

def test_lock_satisfies_declared_ranges():
    lock = read_lock()
    assert 'covidxr' not in lock
    for r in declared():
        n = canonicalize_name(r.name)
        assert n in lock, f"{r.name} is declared in pyproject.toml but missing from {LOCK.name}: run `make lock`"
        assert r.specifier.contains(lock[n], prereleases=True), f"{LOCK.name} has {n}=={lock[n]}, outside the declared {r}"

def test_lock_respects_pip_global_constraints():
    # this machine's pip carries its own constraints (torch releases on disk); the lock must not fight them
    f = Path('/etc/xdg/pip/constraints.txt')
    if not f.exists(): pytest.skip(f"{f} does not exist on this machine")
    lock = read_lock()
    for line in f.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if not line: continue
        r = Requirement(line); n = canonicalize_name(r.name)
        if n in lock: assert r.specifier.contains(lock[n], prereleases=True), f"{LOCK.name} {n}=={lock[n]} conflicts with {f}: {r}"

def test_environment_is_the_locked_one():
    # tests run on the tested set: every declared package is installed at its locked version
    lock = read_lock()
    for r in declared():
        n = canonicalize_name(r.name)
        assert Version(metadata.version(n)) == lock[n], f"{n} {metadata.version(n)} installed, {lock[n]} locked: `make lock` or reinstall"

def _stub_dist(site:Path, name:str, version:str):
    "Installed-package metadata only (what pip's resolver reads to decide whether to keep or replace a package)"
    d = site/f"{name}-{version}.dist-info"; d.mkdir(parents=True)
    (d/'METADATA').write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (d/'INSTALLER').write_text('pip\n'); (d/'RECORD').write_text('')

def test_wheel_keeps_users_torch(tmp_path):
    "`pip install covidxr.whl` into an environment holding torch 2.13.0+cpu / torchvision 0.28.0 keeps them (pip --dry-run --report)"
    pip = [sys.executable, '-m', 'pip']
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK='1')
    import importlib.util   # build with this environment's setuptools when it has one (fast, offline)
    iso = ['--no-build-isolation'] if importlib.util.find_spec('setuptools') else []
    p = subprocess.run([*pip, 'wheel', '-q', '--no-deps', *iso, '-w', tmp_path/'dist', ROOT],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    whl, = (tmp_path/'dist').glob('covidxr-*.whl')
    # a fresh environment (no pip of its own: this pip drives it with --python) that already holds another torch
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', tmp_path/'env'], check=True, timeout=120)
    py = tmp_path/'env'/'bin'/'python'
    site = Path(subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                               capture_output=True, text=True, check=True).stdout.strip())
    _stub_dist(site, 'torch', '2.13.0+cpu'); _stub_dist(site, 'torchvision', '0.28.0')
    p = subprocess.run([*pip, '--python', py, 'install', '--dry-run', '-q', '--report', tmp_path/'report.json', whl],
                       capture_output=True, text=True, env=env, timeout=600)
    if p.returncode != 0 and any(s in p.stderr for s in ('No matching distribution', 'Could not find a version', 'NewConnectionError')):
        pytest.skip(f"the package index cannot resolve covidxr's dependencies here: {p.stderr.strip().splitlines()[-1]}")
    assert p.returncode == 0, p.stderr[-3000:]
    inst = {canonicalize_name(i['metadata']['name']): i['metadata']['version'] for i in json.loads((tmp_path/'report.json').read_text())['install']}
    assert 'covidxr' in inst and 'fastai' in inst, sorted(inst)
    replaced = sorted(n for n in inst if n in ('torch', 'torchvision', 'triton') or n.startswith('nvidia-'))
    assert not replaced, f"pip would replace the user's torch stack: {[(n, inst[n]) for n in replaced]}"

def test_test_runs_leave_no_temp_files(_private_tmp, tmp_path):
    """A full `make test` writes ~11 GB of checkpoints (notebooks' `tempfile.mkdtemp()` included): all of it lands in a
    per-test folder under pytest's base temp (deleted after the test), not in the test's own `tmp_path` (a test may use
    that as a dataset folder), and pytest deletes passing tests' folders, so repeated runs do not fill the disk"""
    import tempfile
    base = tmp_path.parent
    d = Path(tempfile.mkdtemp())
    assert d.parent == _private_tmp and _private_tmp.is_relative_to(base.parent) and not d.is_relative_to(tmp_path), d
    assert Path(os.environ['TMPDIR']) == _private_tmp
    out = subprocess.run([sys.executable, '-c', 'import tempfile; print(tempfile.gettempdir())'],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out) == _private_tmp, out
    assert not any(tmp_path.iterdir())
    opts = tomllib.loads((ROOT/'pyproject.toml').read_text())['tool']['pytest']['ini_options']
    assert opts['tmp_path_retention_policy'] == 'failed'

def test_import_is_quiet():
    "Importing every covidxr module (and so fastai, torch, pandas) raises no warning: with `-W error` any would stop it"
    code = ("import importlib, pkgutil, covidxr\n"
            "for m in pkgutil.iter_modules(covidxr.__path__):\n"
            "    if not m.name.startswith('_'): importlib.import_module('covidxr.' + m.name)\n")
    r = subprocess.run([sys.executable, '-W', 'error', '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]

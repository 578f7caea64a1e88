"""Multi-process training through fastai's `distrib_ctx` + accelerate: 2 CPU processes (gloo) on a tiny cxr-mini subset.
Checks that both ranks trained, on disjoint shards, and that rank 0 alone wrote the run folder (checkpoint, card, report)."""
import json, os, socket, subprocess, sys
from pathlib import Path
import pytest
from covidxr.distrib import launch_command

# Runs as each rank: records this rank's training shards (item paths) and where it wrote, then runs the CLI.
WORKER = r'''
import json, os, sys
import fastai.distributed as fd
import covidxr.distrib as cd
shards, outs = [], []
_idxs = fd.DistributedDL.get_idxs
def get_idxs(self):
    idxs = _idxs(self)
    if self.dl.shuffle: shards.append([str(self.dl.items.iloc[i]['path']) for i in idxs])   # the training loader
    return idxs
fd.DistributedDL.get_idxs = get_idxs
_rank_out = cd.rank_out
def rank_out(out):
    p = _rank_out(out); outs.append(str(p)); return p
cd.rank_out = rank_out
from covidxr.cli import main
r, w = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])   # (leave_world sets WORLD_SIZE=1 after training)
rc = main(sys.argv[1:])
with open(os.path.join(os.environ['COVIDXR_TEST_LOG'], f'rank{r}.json'), 'w') as f:
    json.dump(dict(rank=r, world=w, rc=rc, shards=shards, outs=outs), f)
'''

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_two_cpu_processes(tmp_path):
    worker = tmp_path/'worker.py'; worker.write_text(WORKER)
    run, log = tmp_path/'run', tmp_path/'log'; log.mkdir()
    argv = ['train', '--distributed', '--data', 'cxr-mini', '--arch', 'resnet18', '--recipe', 'cxr_scratch', '--no-pretrained',
            '--quick', '--max-per-class', '4', '--bs', '4', '--device', 'cpu', '--out', str(run)]
    cmd = launch_command(argv, nprocs=2, port=_free_port())
    i = cmd.index('covidxr.distrib'); cmd = cmd[:i-1] + [str(worker)] + cmd[i+1:]   # the worker instead of `-m covidxr.distrib`
    env = dict(os.environ, COVIDXR_TEST_LOG=str(log), OMP_NUM_THREADS='1')
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r0, r1 = (json.loads((log/f'rank{r}.json').read_text()) for r in (0, 1))
    assert (r0['world'], r1['world'], r0['rc'], r1['rc']) == (2, 2, 0, 0), p.stdout[-3000:] + p.stderr[-3000:]
    # both ranks trained every fit, on disjoint halves of the same training epoch
    assert len(r0['shards']) == len(r1['shards']) > 0
    for a, b in zip(r0['shards'], r1['shards']):
        assert a and b and len(a) == len(b) and not set(a) & set(b), (a, b)
    # rank 0 wrote the run folder; rank 1 wrote to a scratch folder that is gone
    assert r0['outs'] == [str(run)] and r1['outs'] and r1['outs'][0] != str(run)
    assert not Path(r1['outs'][0]).exists()
    for f in ('weights.safetensors', 'card.json', 'config.json', 'history.csv', 'report/metrics.json'): assert (run/f).exists(), f
    assert p.stdout.count('Run folder:') == 1, p.stdout   # only rank 0 evaluated and reported
    h = (run/'history.csv').read_text().splitlines()
    assert len(h) == 1 + len(r0['shards']), h   # one row per training epoch, written by rank 0 only
    from safetensors.torch import load_file
    assert not any(k.startswith('module.') for k in load_file(run/'weights.safetensors')), 'DDP wrapper saved in the checkpoint'

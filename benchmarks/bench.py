"""covidxr speed benchmark: prints a table of measured throughputs on this machine.

    .venv/bin/python benchmarks/bench.py [--quick] [--out benchmarks/results.csv]

What it measures (each row: what, setting, images, seconds, img/s):
- decode: `load_cxr` + resize to 128 px, from the original files vs from the resized cache (`ImageCache`), on
  the real cxr-mini JPEGs and on synthetic 1024x1024 8-bit PNGs (the size of NIH/COVIDx originals);
- train / infer: forward+backward (Adam step) and inference-mode forward of registry models on random batches,
  with and without channels_last, on the device `pick_device()` picks (CPU here).
Speed targets live here, never in timed tests.
"""
import argparse, os, sys, time, tempfile, platform
from pathlib import Path
import numpy as np, pandas as pd, torch
from PIL import Image

def _timeit(fn, n_items, warmup=1, reps=1):
    for _ in range(warmup): fn()
    t0 = time.perf_counter()
    for _ in range(reps): fn()
    dt = (time.perf_counter() - t0) / reps
    return dt, n_items / dt

def bench_decode(paths, size, cache_dir, label):
    from covidxr.data import load_cxr, ImageCache
    rows = []
    def dec(ps):
        for p in ps: load_cxr(p).resize((size, size), Image.BILINEAR)
    dt, ips = _timeit(lambda: dec(paths), len(paths), warmup=0)
    rows.append(('decode+resize', f'{label}, original files', len(paths), dt, ips))
    cache = ImageCache(cache_dir, size=160)
    t0 = time.perf_counter(); cache.build(paths, progress=False); tb = time.perf_counter() - t0
    rows.append(('cache build (once)', f'{label}, shorter side 160, {os.cpu_count()} procs', len(paths), tb, len(paths)/tb))
    cached = [cache.lookup(p) for p in paths]
    assert all(c != p for c, p in zip(cached, paths)), "cache lookup missed"
    dt, ips = _timeit(lambda: dec(cached), len(paths), warmup=0)
    rows.append(('decode+resize', f'{label}, cached copies', len(paths), dt, ips))
    return rows

def bench_model(arch, size, bs, n_batches, device, channels_last):
    from covidxr.models import create_cxr_model
    m = create_cxr_model(arch, 3, pretrained=False).to(device)
    x = torch.randn(bs, 3, size, size, device=device); y = torch.randint(0, 3, (bs,), device=device)
    if channels_last: m = m.to(memory_format=torch.channels_last); x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(m.parameters(), 1e-4)
    def train():
        m.train()
        for _ in range(n_batches):
            opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
    def infer():
        m.eval()
        with torch.inference_mode():
            for _ in range(n_batches): m(x)
    cl = ', channels_last' if channels_last else ''
    dt, ips = _timeit(train, bs*n_batches)
    out = [('train', f'{arch}@{size} bs{bs}{cl}', bs*n_batches, dt, ips)]
    dt, ips = _timeit(infer, bs*n_batches)
    out.append(('infer', f'{arch}@{size} bs{bs}{cl}', bs*n_batches, dt, ips))
    return out

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='fewer images and batches')
    ap.add_argument('--out', default=None, help='also write the table as CSV')
    a = ap.parse_args(argv)
    from covidxr.core import find_dataset, pick_device, seed_everything
    from covidxr.data import read_dataset
    seed_everything(0); torch.set_num_threads(os.cpu_count() or 1)
    dev = pick_device()
    n_img = 32 if a.quick else 128
    df = read_dataset('cxr-mini')
    real = df['path'].sample(n_img, random_state=0).tolist()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); syn = []
        rng = np.random.default_rng(0)
        for i in range(n_img // 4):
            arr = (rng.random((64, 64)) * 255).astype(np.uint8)
            im = Image.fromarray(arr).resize((1024, 1024), Image.BICUBIC); p = d/f'syn{i}.png'; im.save(p); syn.append(str(p))
        rows += bench_decode(real, 128, d/'cache', 'cxr-mini JPEG (320 px short side)')
        rows += bench_decode(syn, 128, d/'cache', 'synthetic 1024x1024 PNG')
    nb = 2 if a.quick else 4
    for arch, size, bs in [('resnet18', 128, 32), ('resnet50', 224, 32)]:
        for cl in (False, True): rows += bench_model(arch, size, bs, nb if arch == 'resnet18' else max(1, nb//2), dev, cl)
    t = pd.DataFrame(rows, columns=['what', 'setting', 'images', 'seconds', 'img/s'])
    dname = torch.cuda.get_device_name() if dev.type == 'cuda' else f'{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores'
    print(f"covidxr benchmark — device: {dev} ({dname}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(t.to_markdown(index=False, floatfmt='.2f') if _has_tabulate() else t.to_string(index=False, float_format='%.2f'))
    if a.out: t.to_csv(a.out, index=False)
    return t

def _has_tabulate():
    try: import tabulate; return True
    except ImportError: return False

if __name__ == '__main__': main()

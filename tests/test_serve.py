"""`covidxr serve` in a real browser (issue #15): the console script serves a trained run on a free loopback port;
headless Chromium (Debian's `chromium`, driven by Playwright through `executable_path`) uploads a cxr-mini image and a
broken file; the probabilities on the page must equal `covidxr predict`'s on the same file, the broken file must come
back as a message, the server must keep serving, and a screenshot is saved.

Environment: COVIDXR_SERVE_RUN=RUN serves an existing run instead of training a tiny one (e.g. models/demo);
COVIDXR_SERVE_SHOT=FILE.png also writes the screenshot there (docs/serve.png is made this way from models/demo)."""
import os, re, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import numpy as np, pandas as pd, pytest

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent/'covidxr'
ENV = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='2', GRADIO_ANALYTICS_ENABLED='False')

def chromium_path():
    "Debian's chromium (or $CHROMIUM), or None"
    for c in (os.environ.get('CHROMIUM'), 'chromium', 'chromium-browser'):
        if c and shutil.which(c): return shutil.which(c)

@pytest.fixture(scope='module')
def browser():
    exe = chromium_path()
    if exe is None: pytest.skip("headless Chromium is missing: install Debian's package (apt-get install chromium; see README)")
    try: from playwright.sync_api import sync_playwright
    except ImportError: pytest.skip("playwright is missing: pip install -c constraints.txt -e '.[test]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=['--no-sandbox', '--disable-dev-shm-usage'])
        yield b
        b.close()

@pytest.fixture(scope='module')
def run(tmp_path_factory, mini):
    "A run folder: $COVIDXR_SERVE_RUN, or a tiny real `covidxr train` run (cxr_cnn, quick cxr_scratch, 3 images per class)"
    if os.environ.get('COVIDXR_SERVE_RUN'): return Path(os.environ['COVIDXR_SERVE_RUN']).resolve()
    d = tmp_path_factory.mktemp('serve')
    code, out, err = cli('train', '--data', mini, '--arch', 'cxr_cnn', '--recipe', 'cxr_scratch', '--quick',
                         '--no-pretrained', '--max-per-class', 3, '--bs', 4, '--out', d/'run')
    assert code == 0, err[-2000:]
    return d/'run'

def cli(*args):
    "`covidxr ARGS` in this process (`covidxr.cli.main`, what the console script calls); (exit code, stdout, stderr)"
    import contextlib, io
    from covidxr.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main(list(map(str, args)))
    return code, out.getvalue(), err.getvalue()

def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def server(run):
    "`covidxr serve --model RUN --port P` as a subprocess; yields (url, process)"
    port = free_port()
    proc = subprocess.Popen([str(EXE), 'serve', '--model', run, '--port', str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    url, t0 = f'http://127.0.0.1:{port}/', time.time()
    while True:
        if proc.poll() is not None: pytest.fail(f"covidxr serve exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).read(); break
        except OSError:
            if time.time() - t0 > 180: proc.kill(); pytest.fail('covidxr serve did not answer within 180 s')
            time.sleep(0.5)
    yield url, proc
    proc.send_signal(signal.SIGINT)
    try: proc.wait(timeout=20)
    except subprocess.TimeoutExpired: proc.kill()

def listening_addresses(port:int)->set:
    "Local addresses with a TCP socket listening on `port` (from /proc/net/tcp and tcp6)"
    out = set()
    for f in ('/proc/net/tcp', '/proc/net/tcp6'):
        if not Path(f).exists(): continue
        for line in Path(f).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(':')
            if state == '0A' and int(p, 16) == port: out.add(addr)
    return out

def test_listens_on_loopback_only(server):
    url, _ = server
    port = int(url.rstrip('/').rsplit(':', 1)[1])
    if not Path('/proc/net/tcp').exists(): pytest.skip('no /proc/net/tcp on this system')
    test_addrs = listening_addresses(port)
    assert test_addrs == {'0100007F'}, test_addrs   # 127.0.0.1, little-endian hex; not 0.0.0.0 (00000000) or ::

def upload_and_predict(page, files:list, n:int):
    "Upload `files`, wait until Gradio has them, click Predict, wait for `n` result blocks"
    page.locator('#cxr-upload input[type=file]').set_input_files([str(f) for f in files])
    # Gradio lists each uploaded file (stem and extension in separate elements) once the upload has finished
    stems = [Path(f).stem for f in files]
    page.wait_for_function("stems => { const t = document.querySelector('#cxr-upload').innerText; "
                           "return stems.every(s => t.includes(s)) && !/upload/i.test(t.replace(/Chest X-rays/, '')) }",
                           arg=stems, timeout=60_000)
    page.click('#cxr-predict')
    page.wait_for_function(f"document.querySelectorAll('#cxr-results .cxr-result').length == {n}", timeout=120_000)

def page_probs(page, name:str)->dict:
    "Class -> probability as rendered in the page for upload `name`"
    block = page.locator(f'#cxr-results .cxr-result[data-file="{name}"]')
    rows = block.locator('tr[data-class]')
    return {rows.nth(i).get_attribute('data-class'): float(rows.nth(i).locator('.cxr-p').inner_text())
            for i in range(rows.count())}

def test_page_matches_predict_and_reports_bad_upload(server, run, browser, mini, tmp_path):
    url, proc = server
    img = tmp_path/'cxr.jpg'
    shutil.copy(sorted((mini/'images'/'COVID-19').glob('*.jpg'))[0], img)
    broken = tmp_path/'broken.png'; broken.write_bytes(b'\x89PNG\r\n\x1a\n not really a PNG')
    page = browser.new_page(viewport={'width': 1300, 'height': 1000})
    page.goto(url)
    ruo = page.locator('#cxr-ruo')
    ruo.wait_for(timeout=60_000)
    assert ruo.is_visible() and 'Research use only, not a diagnostic device' in ruo.inner_text()
    card = page.locator('#cxr-card').inner_text()
    assert 'Recipe' in card and 'Data' in card and '95% CI' in card, card
    upload_and_predict(page, [img, broken], 2)
    # the numbers of `covidxr predict` on the same file
    code, _, err = cli('predict', '--model', run, img, '--out', tmp_path/'p.csv')
    assert code == 0, err
    ref = pd.read_csv(tmp_path/'p.csv').iloc[0]
    shown = page_probs(page, img.name)
    classes = [c[2:] for c in ref.index if c.startswith('p_')]
    assert list(shown) == classes
    np.testing.assert_allclose([shown[c] for c in classes], [ref[f'p_{c}'] for c in classes], atol=5.1e-5)
    good = page.locator(f'.cxr-result[data-file="{img.name}"]')
    assert good.locator('.cxr-pred').inner_text() == ref['pred']
    assert good.locator('img.cxr-cam').evaluate('i => i.complete && i.naturalWidth > 0')
    bad = page.locator('.cxr-result[data-file="broken.png"]').inner_text()
    assert 'Could not use this upload' in bad and 'broken.png' in bad and 'corrupt PNG' in bad, bad
    assert str(tmp_path) not in page.locator('#cxr-results').inner_text()
    shot = tmp_path/'serve.png'
    page.screenshot(path=shot, full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get('COVIDXR_SERVE_SHOT'): shutil.copy(shot, os.environ['COVIDXR_SERVE_SHOT'])
    # still serving after the bad upload: a second request in a fresh page works
    page2 = browser.new_page(); page2.goto(url); page2.locator('#cxr-upload').wait_for(timeout=60_000)
    upload_and_predict(page2, [img], 1)
    assert page_probs(page2, img.name) == shown
    assert proc.poll() is None

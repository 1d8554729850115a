"""The tracker's live progress page in a real browser (headless Chromium).

The collection's own tracker (TrackerServer, the code p2p_tracker runs)
listens on 127.0.0.2 with one registered torrent; real HTTP announces give it
hosts in different states. Chromium loads the page, the page's own script
fetches /status.json and builds the table, and the test reads what came out:
the DOM after the script ran (--dump-dom) and a screenshot (--screenshot),
decoded here with zlib alone. Chromium only ever talks to 127.0.0.0/8: its
background networking, component updates, sync, QUIC and proxies are off.

scripts/setup.sh installs Debian's chromium. Without it the tests fail as
root (CI) and are skipped otherwise, as the lab tests are.
"""
import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import threading
import time
import urllib.request
import zlib
from urllib.parse import quote_from_bytes

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import tracker

BIND = '127.0.0.2'
INFO_HASH = bytes.fromhex('5a' * 20)
NAME = 'payload.bin'
SIZE = 4000000                 # decimal, so the page's percentages are round
WINDOW = (1200, 800)
RUN_TIMEOUT = 120              # seconds for one Chromium run
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Colours of the progress bars in the page's stylesheet (tracker.PAGE).
GREEN = (0x33, 0xaa, 0x88)     # .bar div
RED = (0xcc, 0x33, 0x33)       # tr.stopped .bar div
BAR_WIDTH = 220                # .bar { width: 220px }


def chromium_path():
    found = shutil.which('chromium') or ('/usr/bin/chromium' if os.path.exists('/usr/bin/chromium') else None)
    if found:
        return found
    message = 'chromium is not installed (scripts/setup.sh installs it: apt-get install chromium)'
    if os.geteuid() == 0:
        pytest.fail(message)      # CI runs as root after setup.sh: missing is a failure
    pytest.skip(message)
    return None


@pytest.fixture
def chromium():
    return chromium_path()


class Page:
    """A tracker on 127.0.0.2 with one torrent, and ways to look at its page."""

    def __init__(self, workdir, browser):
        self.workdir = workdir
        self.browser = browser
        self.state_dir = os.path.join(workdir, 'state')
        os.makedirs(self.state_dir)
        with open(os.path.join(self.state_dir, 'torrents.json'), 'w') as handle:
            json.dump({INFO_HASH.hex(): {'name': NAME, 'size': SIZE}}, handle)
        self.server = tracker.TrackerServer(self.state_dir, bind=BIND, port=0, poll_interval=0.05)
        self.server.start()
        self.url = 'http://%s:%d/' % (BIND, self.server.port)
        self.runs = 0
        self.announced = 0

    def announce(self, host, number, percent, event=''):
        """One announce of `host` (its own peer id and port) having `percent` of the file."""
        left = SIZE - SIZE * percent // 100
        query = 'info_hash=%s&peer_id=%s&port=%d&uploaded=%d&downloaded=%d&left=%d&p2p_host=%s' % (
            quote_from_bytes(INFO_HASH), quote_from_bytes(('-PP0001-%012d' % number).encode()),
            6880 + number, 0, SIZE - left, left, host)
        if event:
            query += '&event=' + event
        with OPENER.open(self.url + 'announce?' + query, timeout=10) as resp:
            body = resp.read()
        assert body.startswith(b'd') and b'failure reason' not in body, body
        self.announced += 1

    def get(self, path):
        with OPENER.open(self.url + path, timeout=10) as resp:
            return resp.headers.get('Content-Type'), resp.read().decode('utf-8')

    def chromium(self, *extra):
        """Run headless Chromium on the page; returns its stdout."""
        self.runs += 1
        home = os.path.join(self.workdir, 'home%d' % self.runs)
        os.makedirs(home)
        env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
        env.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, '.config'),
                   XDG_CACHE_HOME=os.path.join(home, '.cache'))
        argv = [self.browser, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                '--no-first-run', '--disable-background-networking', '--disable-component-update',
                '--disable-sync', '--disable-extensions', '--no-proxy-server',
                '--user-data-dir=%s' % os.path.join(home, 'profile')] + list(extra) + [self.url]
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                                  check=False)
        except subprocess.TimeoutExpired:
            pytest.fail('chromium did not finish within %d s: %s' % (RUN_TIMEOUT, ' '.join(argv)))
        assert proc.returncode == 0, 'chromium rc=%d\n%s' % (proc.returncode, proc.stderr[-3000:])
        return proc.stdout

    def dom(self, budget_ms=3000):
        """The page's DOM once its script has run for budget_ms of virtual time."""
        return parse_dom(self.chromium('--dump-dom', '--virtual-time-budget=%d' % budget_ms))

    def screenshot(self, path):
        self.chromium('--screenshot=%s' % path, '--window-size=%d,%d' % WINDOW,
                      '--hide-scrollbars', '--virtual-time-budget=3000')
        return path

    def stop(self):
        self.server.stop()


@pytest.fixture
def page(tmp_path, chromium):
    the_page = Page(str(tmp_path), chromium)
    try:
        yield the_page
    finally:
        the_page.stop()


def first_swarm(page):
    """Hosts in the three states the page colours differently."""
    page.announce('alpha', 1, 100)
    page.announce('bravo', 2, 25)
    page.announce('charlie', 3, 50)
    page.announce('delta', 4, 5, event='stopped')


# ---------------------------------------------------------------- reading the DOM

class _DomParser(html.parser.HTMLParser):
    """Table rows (cell texts and bar widths), the summary lines and #error."""

    def __init__(self):
        html.parser.HTMLParser.__init__(self)
        self.rows = []           # [{'class': ..., 'cells': [...], 'bar': '25%'}]
        self.summaries = []
        self.error = None
        self.titles = []
        self._stack = []         # what text goes to: ('cell'|'summary'|'error'|'h2'|None)
        self._row = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        target = None
        if tag == 'tr':
            self._row = {'class': attrs.get('class', ''), 'cells': [], 'bar': None}
            self.rows.append(self._row)
        elif tag in ('td', 'th') and self._row is not None:
            self._row['cells'].append('')
            target = 'cell'
        elif tag == 'div' and attrs.get('class') == 'summary':
            self.summaries.append('')
            target = 'summary'
        elif tag == 'div' and attrs.get('id') == 'error':
            self.error = ''
            target = 'error'
        elif tag == 'h2':
            self.titles.append('')
            target = 'h2'
        elif tag == 'div' and self._row is not None and 'width' in attrs.get('style', ''):
            self._row['bar'] = re.search(r'width:\s*([\d.]+%)', attrs['style']).group(1)
        self._stack.append(target if target else (self._stack[-1] if self._stack else None))

    def handle_endtag(self, tag):
        if self._stack:
            self._stack.pop()
        if tag == 'tr':
            self._row = None

    def handle_data(self, data):
        target = self._stack[-1] if self._stack else None
        if target == 'cell':
            self._row['cells'][-1] += data
        elif target == 'summary':
            self.summaries[-1] += data
        elif target == 'error':
            self.error += data
        elif target == 'h2':
            self.titles[-1] += data


def parse_dom(text):
    parser = _DomParser()
    parser.feed(text)
    header = [r for r in parser.rows if r['cells'][:1] == ['host']]
    hosts = {r['cells'][0]: r for r in parser.rows if r not in header}
    return {'text': text, 'header': header, 'hosts': hosts, 'summaries': parser.summaries,
            'error': parser.error, 'titles': parser.titles}


COLUMNS = ['host', 'ip', 'state', 'progress', '%', 'rate', 'uploaded', 'downloaded', 'last seen']


def row(dom, host):
    assert host in dom['hosts'], 'no row for %s in the rendered page:\n%s' % (host, dom['text'][-4000:])
    return dict(zip(COLUMNS, dom['hosts'][host]['cells']), _class=dom['hosts'][host]['class'],
                _bar=dom['hosts'][host]['bar'])


def assert_host(dom, host, port, state, pct):
    cells = row(dom, host)
    assert cells['ip'] == '127.0.0.1:%d' % port, cells
    assert cells['state'] == state and cells['_class'] == state, cells
    assert cells['%'] == '%.1f' % pct, cells
    assert cells['_bar'] == ('%g%%' % pct), cells      # the bar's fill width
    assert cells['downloaded'] == bytes_text(SIZE * pct // 100), cells
    assert re.fullmatch(r'\d+ s ago', cells['last seen']), cells


def bytes_text(n):
    """The page's bytes() in Python, for expected values."""
    units, i = ['B', 'kB', 'MB', 'GB', 'TB'], 0
    n = float(n)
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return '%.*f %s' % (1 if i else 0, n, units[i])


# ---------------------------------------------------------------- reading the PNG

def read_png(path):
    """(width, height, bytes per pixel, pixel bytes) of an 8-bit RGB(A) PNG, with zlib only."""
    with open(path, 'rb') as handle:
        data = handle.read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG: %r' % data[:8]
    pos, kinds, idat, header = 8, [], [], None
    while pos < len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack('>I', data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xffffffff == crc, 'bad CRC in chunk %r' % kind
        kinds.append(kind)
        if kind == b'IHDR':
            header = struct.unpack('>IIBBBBB', body)
        elif kind == b'IDAT':
            idat.append(body)
        pos += 12 + length
    assert kinds[0] == b'IHDR' and kinds[-1] == b'IEND', kinds
    width, height, depth, colour, _compression, _filter, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b''.join(idat))
    stride = width * bpp
    assert len(raw) == height * (stride + 1), 'pixel data does not match %dx%d' % (width, height)
    pixels = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:        # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xff
        elif kind == 2:      # Up
            line = bytearray((a + b) & 0xff for a, b in zip(line, prev))
        elif kind == 3:      # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xff
        elif kind == 4:      # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xff
        else:
            assert kind == 0, 'unknown PNG filter %d on row %d' % (kind, y)
        pixels += line
        prev = line
    return width, height, bpp, bytes(pixels)


def colour_runs(width, height, bpp, pixels, colour, slack=3):
    """Lengths of the horizontal runs of `colour`, one entry per run."""
    runs = []
    for y in range(height):
        run = 0
        for x in range(width + 1):
            i = (y * width + x) * bpp
            if x < width and all(abs(pixels[i + k] - colour[k]) <= slack for k in range(3)):
                run += 1
            elif run:
                runs.append(run)
                run = 0
    return runs


# ---------------------------------------------------------------- tests

def test_page_shows_every_host_its_progress_state_and_the_totals(page):
    first_swarm(page)
    ctype, source = page.get('')
    assert ctype.startswith('text/html')
    assert 'id="swarms">loading...' in source     # the table is the script's work, not the server's
    dom = page.dom()
    assert dom['error'] == '', dom['error']
    assert dom['titles'] == [NAME]
    assert len(dom['header']) == 1 and dom['header'][0]['cells'] == COLUMNS
    assert sorted(dom['hosts']) == ['alpha', 'bravo', 'charlie', 'delta']
    assert_host(dom, 'alpha', 6881, 'complete', 100)
    assert_host(dom, 'bravo', 6882, 'downloading', 25)
    assert_host(dom, 'charlie', 6883, 'downloading', 50)
    assert_host(dom, 'delta', 6884, 'stopped', 5)
    # Totals: (100 + 25 + 50 + 5) / 4 = 45 %; the stopped host counts as neither.
    assert dom['summaries'] == ['1/4 hosts done, 45.0%, 0 B/s aggregate, 1 seeding, 2 downloading, size 4.0 MB'], \
        dom['summaries']


def test_screenshot_is_a_real_render_of_the_table(page, tmp_path):
    first_swarm(page)
    path = page.screenshot(str(tmp_path / 'page.png'))
    assert os.path.exists(path), 'chromium wrote no screenshot'
    width, height, bpp, pixels = read_png(path)
    assert (width, height) == WINDOW
    distinct = set(pixels[i:i + 3] for i in range(0, len(pixels), bpp))
    # A blank page has one colour; text (anti-aliased) and bars give hundreds.
    assert len(distinct) > 50, '%d distinct colours: a blank or broken render' % len(distinct)
    # Each bar's fill is as wide as its percentage of the 220 px bar, 10 px high.
    green = colour_runs(width, height, bpp, pixels, GREEN)
    for pct in (100, 25, 50):
        wanted = BAR_WIDTH * pct // 100
        count = sum(1 for r in green if abs(r - wanted) <= 1)
        assert count >= 8, 'no %d%% bar (%d px green runs) in %s' % (pct, wanted, sorted(set(green)))
    red = colour_runs(width, height, bpp, pixels, RED)
    assert sum(1 for r in red if abs(r - BAR_WIDTH * 5 // 100) <= 1) >= 8, \
        'no red 5%% bar for the stopped host: %s' % sorted(set(red))


def test_page_refreshes_live_and_computes_rates(page):
    first_swarm(page)
    before = page.dom()
    assert row(before, 'bravo')['%'] == '25.0'

    # Between two renders: bravo finishes, charlie moves on, echo joins.
    page.announce('bravo', 2, 100, event='completed')
    page.announce('charlie', 3, 60)
    page.announce('echo', 5, 10)

    # Within one page load: after the page's second status fetch, charlie and
    # echo progress again. Only a page that polls shows those numbers, and
    # the rate is what it measured between two fetches.
    fetches = []
    original = page.server.swarm.status_json     # what the tracker serves /status.json from

    def more_progress():
        page.announce('charlie', 3, 80)
        page.announce('echo', 5, 40)

    def counting_status():
        fetches.append(time.monotonic())
        if len(fetches) == 2:
            # From another thread: the tracker serves one request at a time
            # from its event loop, and this runs inside one.
            threading.Thread(target=more_progress, daemon=True).start()
        return original()

    page.server.swarm.status_json = counting_status
    dom = page.dom(budget_ms=5000)
    assert len(fetches) >= 3, 'the page fetched status.json %d times: it does not refresh' % len(fetches)
    assert dom['error'] == ''
    assert_host(dom, 'alpha', 6881, 'complete', 100)
    assert_host(dom, 'bravo', 6882, 'complete', 100)
    assert_host(dom, 'charlie', 6883, 'downloading', 80)
    assert_host(dom, 'echo', 6885, 'downloading', 40)
    assert_host(dom, 'delta', 6884, 'stopped', 5)
    # (100 + 100 + 80 + 40 + 5) / 5 = 65 %
    summary = dom['summaries'][0]
    assert summary.startswith('2/5 hosts done, 65.0%, '), summary
    assert summary.endswith(' aggregate, 2 seeding, 2 downloading, size 4.0 MB'), summary
    # charlie and echo moved between two fetches: a rate, and so an aggregate rate.
    for host in ('charlie', 'echo'):
        assert row(dom, host)['rate'] != '0 B/s', row(dom, host)
    assert not summary.split(', ')[2].startswith('0 B/s'), summary
    for host in ('alpha', 'bravo', 'delta'):
        assert row(dom, host)['rate'] == '0 B/s', row(dom, host)


METRIC_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'                                # name
    r'(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})?'   # {labels}
    r' (\S+)$')                                                    # value


def parse_metrics(text):
    """{(name, labels): value}; fails on anything that is not Prometheus text format."""
    types, helps, samples = {}, set(), {}
    assert text.endswith('\n'), 'metrics must end with a newline'
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith('#'):
            parts = line.split(None, 3)
            assert len(parts) >= 3 and parts[1] in ('HELP', 'TYPE'), 'line %d: %r' % (number, line)
            if parts[1] == 'TYPE':
                assert parts[3] in ('counter', 'gauge', 'histogram', 'summary', 'untyped'), line
                types[parts[2]] = parts[3]
            else:
                helps.add(parts[2])
            continue
        match = METRIC_LINE.match(line)
        assert match, 'line %d is not `name{labels} value`: %r' % (number, line)
        name, labels, value = match.groups()
        float(value)   # raises on a malformed value
        assert name in types and name in helps, 'line %d: %s has no TYPE/HELP before it' % (number, name)
        samples[(name, labels or '')] = float(value)
    return types, samples


def test_metrics_are_prometheus_text(page):
    first_swarm(page)
    ctype, text = page.get('metrics')
    assert ctype.startswith('text/plain; version=0.0.4'), ctype
    types, samples = parse_metrics(text)
    assert types['p2p_tracker_announces_total'] == 'counter'
    assert types['p2p_tracker_peers'] == 'gauge'
    assert samples[('p2p_tracker_announces_total', 'result="ok"')] == page.announced
    assert samples[('p2p_tracker_torrents_registered', '')] == 1
    labels = 'info_hash="%s",name="%s"' % (INFO_HASH.hex(), NAME)
    for state, count in (('complete', 1), ('downloading', 2), ('stopped', 1), ('expired', 0)):
        assert samples[('p2p_tracker_peers', '%s,state="%s"' % (labels, state))] == count, state
    assert samples[('p2p_tracker_uptime_seconds', '')] >= 0

# -*- coding: utf-8 -*-
"""The tracker against strangers and junk: the allow list, and a bounded fuzz
run (loopback only, at most 10 000 requests and 60 s) of malformed announces
and scrapes, oversized and slow clients, while good clients keep being served
and the tracker's memory stays bounded."""

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import daemon, tracker

from tracker_process import free_port, tracker_process as running_tracker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
COLLECTIONS = os.path.join(ROOT, '.collections')
HASH = bytes(range(20))
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
MAX_REQUESTS = 4000          # the bound is 10 000
TIME_BUDGET = 60.0


def announce_query(info_hash=HASH, peer_id=b'-GD0001-000000000000', port=6881, left=100, **extra):
    params = {'info_hash': info_hash, 'peer_id': peer_id, 'port': port, 'uploaded': 0,
              'downloaded': 0, 'left': left, 'compact': 1}
    params.update(extra)
    return urllib.parse.urlencode(params)


def get(url, timeout=5):
    with OPENER.open(url, timeout=timeout) as resp:
        return resp.read()


# ----------------------------------------------------------------- allow list

@pytest.fixture
def state(tmp_path):
    path = tmp_path / 'tracker'
    path.mkdir()
    (path / 'torrents.json').write_text(json.dumps({HASH.hex(): {'name': 'x', 'size': 100}}))
    return str(path)


def from_address(source, port, query):
    """An announce to the tracker on 127.0.0.2, sent from the loopback address source."""
    sock = socket.create_connection(('127.0.0.2', port), timeout=5, source_address=(source, 0))
    try:
        sock.sendall(('GET /announce?%s HTTP/1.0\r\n\r\n' % query).encode())
        answer = b''
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return answer
            answer += chunk
    finally:
        sock.close()


def test_allow_list_refuses_announce_and_scrape_from_elsewhere(state):
    # The tracker on 127.0.0.2; clients connect from 127.0.0.1 (refused) or 127.0.0.3 (allowed).
    with tracker.TrackerServer(state, bind='127.0.0.2', port=0, allowed=['127.0.0.3/32']) as server:
        base = 'http://127.0.0.2:%d' % server.port
        refused = get(base + '/announce?' + announce_query())
        assert b'failure reason' in refused and b'not allowed' in refused
        assert b'not allowed' in get(base + '/scrape')
        answer = from_address('127.0.0.3', server.port, announce_query())
        assert b'8:intervali' in answer and b'failure' not in answer, answer
        # An allowed host cannot register an outsider's address with ip=.
        answer = from_address('127.0.0.3', server.port, announce_query(ip='192.0.2.9', peer_id=b'-GD0001-111111111111'))
        assert b'not allowed' in answer, answer
        status = json.loads(get(base + '/status.json'))   # status stays readable (the controller polls it)
        peers = list(status['torrents'].values())[0]['peers']
        assert [p['ip'] for p in peers] == ['127.0.0.3']
        assert 'p2p_tracker_announces_total{result="refused"} 2' in get(base + '/metrics').decode()


def test_no_allow_list_serves_anyone(state):
    with tracker.TrackerServer(state, bind='127.0.0.1', port=0) as server:
        assert b'8:intervali' in get('http://127.0.0.1:%d/announce?%s' % (server.port, announce_query()))


def run_module(**args):
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    proc = subprocess.run([sys.executable, '-m', 'ansible_collections.p2p.swarm.plugins.modules.p2p_tracker'],
                          input=json.dumps({'ANSIBLE_MODULE_ARGS': args}), capture_output=True, text=True,
                          env=env, timeout=60, cwd="/", check=False)
    return json.loads(proc.stdout)


def test_p2p_tracker_allowed_networks(tmp_path):
    args = {'state_dir': str(tmp_path / 't'), 'port': free_port(), 'bind_address': '127.0.0.1',
            'info_hashes': [HASH.hex()]}
    script = os.path.join(args['state_dir'], 'tracker.py')
    try:
        bad = run_module(allowed_networks=['10.0.0.0/33'], **args)
        assert bad.get('failed') and 'allowed_networks' in bad['msg'], bad
        first = run_module(allowed_networks=['10.1.0.5', '10.1.0.4/31', 'localhost'], **args)
        assert not first.get('failed') and first['started'], first
        with open(os.path.join(args['state_dir'], 'torrents.json')) as handle:
            allowed = json.load(handle)[HASH.hex()]['allowed']
        assert allowed == ['10.1.0.4/31', '127.0.0.1/32'], allowed
        url = 'http://127.0.0.1:%d/announce?%s' % (args['port'], announce_query())
        assert b'8:intervali' in get(url)             # localhost is in the list
        second = run_module(allowed_networks=['10.1.0.0/24'], **args)
        # The allow list is the torrent's: it changes without a restart.
        assert not second['started'] and second['pid'] == first['pid'], second
        assert b'not allowed' in get(url)
    finally:
        pid = daemon.read_pidfile(os.path.join(args['state_dir'], 'tracker.pid'), script)
        if pid:
            daemon.stop(pid, script, timeout=5)


# ---------------------------------------------------------------------- fuzz

def junk_requests(rng, port):
    """(name, raw bytes) of one malformed or hostile request."""
    good = announce_query()
    choices = [
        ('bad percent', 'GET /announce?info_hash=%zz&peer_id=%4&port=1 HTTP/1.0\r\n\r\n'),
        ('lone percent', 'GET /announce?' + good + '&x=% HTTP/1.0\r\n\r\n'),
        ('short hash', 'GET /announce?%s HTTP/1.0\r\n\r\n' % announce_query(info_hash=HASH[:19])),
        ('long hash', 'GET /announce?%s HTTP/1.0\r\n\r\n' % announce_query(info_hash=HASH + b'x')),
        ('short peer id', 'GET /announce?%s HTTP/1.0\r\n\r\n' % announce_query(peer_id=b'abc')),
        ('huge port', 'GET /announce?%s HTTP/1.0\r\n\r\n' % announce_query(port=10 ** 30)),
        ('port 0', 'GET /announce?%s HTTP/1.0\r\n\r\n' % announce_query(port=0)),
        ('negative left', 'GET /announce?%s HTTP/1.0\r\n\r\n' % announce_query(left=-1)),
        ('huge left', 'GET /announce?%s HTTP/1.0\r\n\r\n' % announce_query(left=10 ** 40)),
        ('huge numwant', 'GET /announce?%s HTTP/1.0\r\n\r\n' % announce_query(numwant=10 ** 12)),
        ('bad event', 'GET /announce?%s HTTP/1.0\r\n\r\n' % announce_query(event='exploded')),
        ('bad ip', 'GET /announce?%s HTTP/1.0\r\n\r\n' % announce_query(ip='999.1.1.1')),
        ('bad host utf8', 'GET /announce?%s&p2p_host=%%ff%%fe HTTP/1.0\r\n\r\n' % good),
        ('control host', 'GET /announce?%s&p2p_host=a%%0ab HTTP/1.0\r\n\r\n' % good),
        ('missing params', 'GET /announce?info_hash=%s HTTP/1.0\r\n\r\n' % urllib.parse.quote(HASH)),
        ('empty announce', 'GET /announce HTTP/1.0\r\n\r\n'),
        ('repeated param', 'GET /announce?%s&port=1&port=2 HTTP/1.0\r\n\r\n' % good),
        ('many params', 'GET /announce?%s HTTP/1.0\r\n\r\n' % '&'.join('p%d=1' % i for i in range(400))),
        ('unregistered', 'GET /announce?%s HTTP/1.0\r\n\r\n' % announce_query(info_hash=os.urandom(20))),
        ('scrape short hash', 'GET /scrape?info_hash=abc HTTP/1.0\r\n\r\n'),
        ('scrape many', 'GET /scrape?%s HTTP/1.0\r\n\r\n' % '&'.join(
            'info_hash=' + urllib.parse.quote(os.urandom(20)) for dummy in range(200))),
        ('scrape bad percent', 'GET /scrape?info_hash=%g1 HTTP/1.0\r\n\r\n'),
        ('long path', 'GET /%s HTTP/1.0\r\n\r\n' % ('a' * 20000)),
        ('long header', 'GET /announce HTTP/1.0\r\nX: %s\r\n\r\n' % ('b' * 20000)),
        ('many headers', 'GET /scrape HTTP/1.0\r\n%s\r\n' % ''.join('H%d: v\r\n' % i for i in range(2000))),
        ('post', 'POST /announce HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello'),
        ('bad method', 'BREW /announce HTTP/1.0\r\n\r\n'),
        ('http 0.9', 'GET /announce\r\n\r\n'),
        ('bad version', 'GET /announce HTTP/9.9\r\n\r\n'),
        ('no space', 'GET/announce?%sHTTP/1.0\r\n\r\n' % good),
        ('unknown path', 'GET /../../etc/passwd HTTP/1.0\r\n\r\n'),
        ('keep-alive', 'GET /announce?%s HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n' % good),
        ('nul bytes', 'GET /announce?\x00\x00 HTTP/1.0\r\n\r\n'),
        ('non-ascii query', 'GET /announce?info_hash=\xff\xfe HTTP/1.0\r\n\r\n'),
    ]
    name, text = rng.choice(choices)
    if rng.random() < 0.08:
        return 'binary garbage', os.urandom(rng.randint(1, 3000))
    if rng.random() < 0.04:
        return 'truncated', text.encode('latin-1')[:rng.randint(1, 40)]
    return name, text.encode('latin-1')


def exchange(port, data, timeout=5.0):
    """Send raw bytes, half-close, read the answer; b'' when the tracker just closed."""
    sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    try:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass    # the tracker may close on an oversized request before reading it all
        answer = b''
        while len(answer) < 1 << 20:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        return answer
    finally:
        sock.close()


def check_answer(name, answer):
    """An error answer or a close; never a crash page or a hang."""
    if not answer:
        return
    assert answer.startswith(b'HTTP/1.'), (name, answer[:200])
    head, _sep, body = answer.partition(b'\r\n\r\n')
    code = int(head.split()[1])
    assert code in (200, 400, 404, 405, 408, 414, 431, 501, 505), (name, head)
    if code == 200 and b'text/plain' in head and body.startswith(b'd'):
        assert body.endswith(b'e'), (name, body[:200])


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as handle:
        for line in handle:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError('no VmRSS for %d' % pid)


@pytest.fixture
def tracker_process(state):
    with running_tracker(state) as (proc, port):
        yield proc, port


@pytest.mark.slow
def test_fuzz_run_gets_errors_good_clients_served_memory_bounded(tracker_process):
    proc, port = tracker_process
    base = 'http://127.0.0.1:%d' % port
    rng = random.Random(4)
    started = time.monotonic()
    # Warm up (imports, first threads), then the baseline.
    for i in range(50):
        get(base + '/announce?' + announce_query(peer_id=b'-GD0001-%012d' % i))
    baseline = rss_kib(proc.pid)
    counts = {'requests': 0, 'good': 0, 'slowest_good': 0.0}
    errors = []
    lock = threading.Lock()
    stop = threading.Event()

    def slow_clients():
        """Slowloris: connections that dribble a byte now and then, never finishing."""
        socks = []
        try:
            for dummy in range(60):
                s = socket.create_connection(('127.0.0.1', port), timeout=5)
                s.sendall(b'GET /announce?')
                socks.append(s)
            while not stop.is_set():
                for s in socks:
                    try:
                        s.sendall(b'a')
                    except OSError:
                        pass   # closed by the tracker's deadline: what we want
                stop.wait(1.0)
        finally:
            for s in socks:
                s.close()

    def worker(seed, quota):
        wrng = random.Random(seed)
        for n in range(quota):
            if stop.is_set():
                return
            try:
                if n % 25 == 0:
                    # A good client, among the junk: answered, and quickly.
                    t0 = time.monotonic()
                    body = get(base + '/announce?' + announce_query(
                        peer_id=b'-GD0001-%012d' % wrng.randrange(10 ** 12), p2p_host='good-%d' % seed))
                    took = time.monotonic() - t0
                    assert b'8:intervali' in body, body[:200]
                    with lock:
                        counts['good'] += 1
                        counts['slowest_good'] = max(counts['slowest_good'], took)
                else:
                    name, data = junk_requests(wrng, port)
                    check_answer(name, exchange(port, data))
            except AssertionError as exc:
                with lock:
                    errors.append(str(exc))
            except OSError as exc:
                with lock:
                    errors.append('connection error: %r' % exc)
            except Exception as exc:  # a bug in the test itself must show too
                with lock:
                    errors.append('test error: %r' % exc)
            with lock:
                counts['requests'] += 1
            if time.monotonic() - started > TIME_BUDGET - 10:
                return

    slow = threading.Thread(target=slow_clients, daemon=True)
    slow.start()
    workers = [threading.Thread(target=worker, args=(i, MAX_REQUESTS // 8), daemon=True) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIME_BUDGET)
    stop.set()
    slow.join(10)
    elapsed = time.monotonic() - started
    assert proc.poll() is None, proc.stderr.read()
    assert not errors, errors[:10]
    assert counts['requests'] <= 10000 and elapsed < TIME_BUDGET, (counts, elapsed)
    assert counts['good'] >= MAX_REQUESTS // 25 - 8, counts
    assert counts['slowest_good'] < 3.0, counts
    # Still serving, and it counted what it refused.
    status = json.loads(get(base + '/status.json'))
    assert status['torrents'][HASH.hex()]['peers'], status
    metrics = get(base + '/metrics').decode()
    assert 'p2p_tracker_announces_total{result="malformed"}' in metrics
    # Memory: bounded growth over the baseline (thread stacks, peer records).
    grown = rss_kib(proc.pid) - baseline
    assert grown < 40 * 1024, 'RSS grew by %d KiB' % grown

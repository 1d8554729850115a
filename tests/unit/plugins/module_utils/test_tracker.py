# -*- coding: utf-8 -*-
"""The tracker, served in-process on 127.0.0.1 and spoken to over real HTTP."""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote_from_bytes

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import tracker, tracker_http

V1 = bytes.fromhex('11' * 20)
V1_OTHER = bytes.fromhex('22' * 20)
UNKNOWN = bytes.fromhex('99' * 20)
V2_HEX = '33' * 16 + '44' * 16          # 64 hex digits: a v2 info-hash
HYBRID_V1_HEX = '55' * 20
HYBRID_V2_HEX = '66' * 32

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ------------------------------------------------------------------ helpers

def bdecode(data):
    """Strict bencode decoder (raises on anything left over or malformed)."""
    def parse(i):
        c = data[i:i + 1]
        if c == b'i':
            end = data.index(b'e', i)
            return int(data[i + 1:end]), end + 1
        if c == b'l':
            i, out = i + 1, []
            while data[i:i + 1] != b'e':
                item, i = parse(i)
                out.append(item)
            return out, i + 1
        if c == b'd':
            i, out = i + 1, {}
            while data[i:i + 1] != b'e':
                key, i = parse(i)
                out[key], i = parse(i)
            return out, i + 1
        if c.isdigit():
            colon = data.index(b':', i)
            length = int(data[i:colon])
            start = colon + 1
            if start + length > len(data):
                raise ValueError('string past end')
            return data[start:start + length], start + length
        raise ValueError('bad bencode at %d' % i)
    value, end = parse(0)
    if end != len(data):
        raise ValueError('trailing data')
    return value


def get(url):
    """GET url; return (status, content type, body) even for HTTP errors."""
    try:
        with OPENER.open(url, timeout=10) as resp:
            return resp.status, resp.headers.get('Content-Type'), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get('Content-Type'), exc.read()


def announce_query(info_hash=V1, peer_id=b'A' * 20, port=6881, left=100, uploaded=0, downloaded=0,
                   **extra):
    query = 'info_hash=%s&peer_id=%s&port=%d&uploaded=%d&downloaded=%d&left=%d' % (
        quote_from_bytes(info_hash), quote_from_bytes(peer_id), port, uploaded, downloaded, left)
    for key, value in extra.items():
        query += '&%s=%s' % (key, value)
    return query


def announce(srv, **kwargs):
    status, _ctype, body = get(srv.base_url + '/announce?' + announce_query(**kwargs))
    assert status == 200
    return bdecode(body)


def compact_peers(blob):
    assert len(blob) % 6 == 0
    return sorted((socket.inet_ntoa(blob[i:i + 4]), struct.unpack('>H', blob[i + 4:i + 6])[0])
                  for i in range(0, len(blob), 6))


def register(state_dir, entries):
    path = os.path.join(str(state_dir), 'torrents.json')
    tmp = path + '.tmp'
    with open(tmp, 'w') as handle:
        json.dump(entries, handle)
    os.rename(tmp, path)


def status_of(srv):
    status, ctype, body = get(srv.base_url + '/status.json')
    assert status == 200 and ctype.startswith('application/json')
    return json.loads(body)


def peer_id(n):
    return ('-PT0001-%012d' % n).encode()


class Clock:
    def __init__(self):
        self.now = 1000000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def srv(tmp_path, clock):
    register(tmp_path, {
        V1.hex(): {'name': 'one.bin', 'size': 1000},
        V1_OTHER.hex(): {'name': 'two.bin', 'size': 500},
        V2_HEX: {'name': 'v2only.bin', 'size': 300},
        HYBRID_V1_HEX: {'name': 'hybrid.bin', 'size': 700, 'aliases': [HYBRID_V2_HEX]},
    })
    server = tracker.TrackerServer(str(tmp_path), bind='127.0.0.1', port=0, interval=2, clock=clock,
                                   poll_interval=0.02)
    server.start()
    yield server
    server.stop()


# ------------------------------------------------------------------ announce

def test_compact_peers_are_the_other_peers(srv):
    announce(srv, peer_id=peer_id(1), port=7001, event='started', compact=1)
    announce(srv, peer_id=peer_id(2), port=7002, event='started', compact=1)
    answer = announce(srv, peer_id=peer_id(3), port=7003, event='started', compact=1)
    assert answer[b'interval'] == 2
    assert answer[b'min interval'] == 2
    assert answer[b'incomplete'] == 3 and answer[b'complete'] == 0
    assert compact_peers(answer[b'peers']) == [('127.0.0.1', 7001), ('127.0.0.1', 7002)]
    # The first peer, asking again, sees the other two and not itself.
    again = announce(srv, peer_id=peer_id(1), port=7001)
    assert compact_peers(again[b'peers']) == [('127.0.0.1', 7002), ('127.0.0.1', 7003)]


def test_non_compact_peer_list(srv):
    announce(srv, peer_id=peer_id(1), port=7001)
    answer = announce(srv, peer_id=peer_id(2), port=7002, compact=0)
    assert answer[b'peers'] == [{b'ip': b'127.0.0.1', b'port': 7001, b'peer id': peer_id(1)}]
    answer = announce(srv, peer_id=peer_id(2), port=7002, compact=0, no_peer_id=1)
    assert answer[b'peers'] == [{b'ip': b'127.0.0.1', b'port': 7001}]


def test_numwant_is_honoured(srv):
    for n in range(6):
        announce(srv, peer_id=peer_id(n), port=7000 + n)
    answer = announce(srv, peer_id=peer_id(99), port=7099, numwant=2)
    peers = compact_peers(answer[b'peers'])
    assert len(peers) == 2
    assert all(port in range(7000, 7006) for _ip, port in peers)
    assert announce(srv, peer_id=peer_id(99), port=7099, numwant=0)[b'peers'] == b''
    assert len(compact_peers(announce(srv, peer_id=peer_id(99), port=7099)[b'peers'])) == 6


def test_ip_parameter_and_seeders_get_only_leechers(srv):
    announce(srv, peer_id=peer_id(1), port=7001, left=0, ip='10.1.2.3')
    announce(srv, peer_id=peer_id(2), port=7002, left=50, ip='10.1.2.4')
    seeder_view = announce(srv, peer_id=peer_id(3), port=7003, left=0, ip='10.1.2.5')
    assert compact_peers(seeder_view[b'peers']) == [('10.1.2.4', 7002)]
    assert seeder_view[b'complete'] == 2 and seeder_view[b'incomplete'] == 1
    leecher_view = announce(srv, peer_id=peer_id(4), port=7004, left=10)
    assert compact_peers(leecher_view[b'peers']) == [('10.1.2.3', 7001), ('10.1.2.4', 7002), ('10.1.2.5', 7003)]


def test_ipv6_peers_go_to_peers6(srv):
    announce(srv, peer_id=peer_id(1), port=7001, ip='fd00::7')
    answer = announce(srv, peer_id=peer_id(2), port=7002)
    assert answer[b'peers'] == b''
    assert answer[b'peers6'] == socket.inet_pton(socket.AF_INET6, 'fd00::7') + struct.pack('>H', 7001)


def test_unknown_info_hash_is_refused(srv):
    status, _ctype, body = get(srv.base_url + '/announce?' + announce_query(info_hash=UNKNOWN))
    assert status == 200
    assert bdecode(body) == {b'failure reason': b'unregistered torrent'}


MALFORMED = {
    'missing info_hash': 'peer_id=%s&port=1&uploaded=0&downloaded=0&left=0' % ('A' * 20),
    'short info_hash': announce_query(info_hash=b'x' * 19),
    'long info_hash': announce_query(info_hash=b'x' * 21),
    'repeated info_hash': announce_query() + '&info_hash=' + quote_from_bytes(V1),
    'bad percent': announce_query().replace('info_hash=', 'info_hash=%zz'),
    'truncated percent': announce_query() + '&key=%4',
    'missing peer_id': announce_query().replace('peer_id=', 'peer_xx='),
    'short peer_id': announce_query(peer_id=b'short'),
    'missing port': announce_query().replace('port=', 'prt='),
    'port zero': announce_query(port=0),
    'port too big': announce_query(port=70000),
    'port not a number': announce_query().replace('port=6881', 'port=68x1'),
    'negative left': announce_query().replace('left=100', 'left=-1'),
    'huge left': announce_query().replace('left=100', 'left=99999999999999999999999'),
    'left above 2**63': announce_query().replace('left=100', 'left=9223372036854775808'),
    'missing uploaded': announce_query().replace('uploaded=', 'upl='),
    'empty downloaded': announce_query().replace('downloaded=0', 'downloaded='),
    'bad event': announce_query(event='exploded'),
    'bad numwant': announce_query(numwant='-3'),
    'bad compact': announce_query(compact=2),
    'bad ip': announce_query(ip='not.an.ip'),
    'control chars in p2p_host': announce_query(p2p_host='a%0Ab'),
    'non-utf8 p2p_host': announce_query(p2p_host='%ff%fe'),
    'unknown p2p_outcome': announce_query(p2p_outcome='maybe'),
    'empty query': '',
}


@pytest.mark.parametrize('name', sorted(MALFORMED))
def test_malformed_announce_gets_a_failure_reason(srv, name):
    status, ctype, body = get(srv.base_url + '/announce?' + MALFORMED[name])
    assert status == 200 and ctype == 'text/plain'
    answer = bdecode(body)
    assert list(answer) == [b'failure reason'], answer
    assert answer[b'failure reason']
    # The server is still fine afterwards.
    assert b'peers' in announce(srv, peer_id=peer_id(1), port=7001)


def test_malformed_counted_in_metrics(srv):
    get(srv.base_url + '/announce?' + MALFORMED['short info_hash'])
    get(srv.base_url + '/announce?' + announce_query(info_hash=UNKNOWN))
    announce(srv)
    text = get(srv.base_url + '/metrics')[2].decode()
    assert 'p2p_tracker_announces_total{result="malformed"} 1' in text
    assert 'p2p_tracker_announces_total{result="unregistered"} 1' in text
    assert 'p2p_tracker_announces_total{result="ok"} 1' in text


def raw_request(srv, data, read_timeout=5):
    sock = socket.create_connection(('127.0.0.1', srv.port), timeout=read_timeout)
    try:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b''.join(chunks)
    finally:
        sock.close()


def test_oversized_request_line_is_refused(srv):
    reply = raw_request(srv, b'GET /announce?' + b'a' * 40000 + b' HTTP/1.1\r\nHost: x\r\n\r\n')
    assert reply.startswith(b'HTTP/1.0 414')
    assert b'peers' in announce(srv)


def test_oversized_headers_are_refused(srv):
    headers = b''.join(b'X-Filler-%d: %s\r\n' % (i, b'y' * 200) for i in range(200))
    reply = raw_request(srv, b'GET /status.json HTTP/1.1\r\nHost: x\r\n' + headers + b'\r\n')
    assert reply.startswith(b'HTTP/1.0 431')
    assert b'peers' in announce(srv)


def test_garbage_and_raw_bytes_do_not_hurt(srv):
    assert raw_request(srv, b'\x16\x03\x01garbage\r\n\r\n').startswith(b'HTTP/1.0 400')
    assert raw_request(srv, b'POST /announce HTTP/1.0\r\n\r\n').startswith(b'HTTP/1.0 405')
    reply = raw_request(srv, b'GET /announce?info_hash=\xff\xfe HTTP/1.0\r\n\r\n')
    assert reply.startswith(b'HTTP/1.0 200')
    assert b'failure reason' in reply
    assert get(srv.base_url + '/nothing-here')[0] == 404
    assert b'peers' in announce(srv)


def test_slow_client_is_cut_off_and_does_not_block_others(srv, monkeypatch):
    monkeypatch.setattr(tracker_http, 'HEAD_DEADLINE', 1.0)
    slow = socket.create_connection(('127.0.0.1', srv.port), timeout=10)
    try:
        slow.sendall(b'GET /status.json HT')   # and then nothing
        started = time.monotonic()
        assert status_of(srv)['torrents']      # others are served meanwhile
        assert slow.recv(100) == b''           # the server hangs up on it
        assert time.monotonic() - started < 5
    finally:
        slow.close()


# -------------------------------------------------------- states and expiry

def test_stopped_peer_leaves_peer_lists_but_stays_in_status(srv):
    announce(srv, peer_id=peer_id(1), port=7001, p2p_host='h1', event='started')
    announce(srv, peer_id=peer_id(2), port=7002, p2p_host='h2', event='started')
    answer = announce(srv, peer_id=peer_id(1), port=7001, p2p_host='h1', event='stopped', left=40)
    assert answer[b'peers'] == b''          # nothing for a peer that is leaving
    after = announce(srv, peer_id=peer_id(2), port=7002, p2p_host='h2')
    assert after[b'peers'] == b'' and after[b'incomplete'] == 1
    peers = {p['host']: p for p in status_of(srv)['torrents'][V1.hex()]['peers']}
    assert peers['h1']['state'] == 'stopped' and peers['h1']['left'] == 40
    assert peers['h2']['state'] == 'downloading'


def test_agents_report_their_outcome_in_announces(srv):
    announce(srv, peer_id=peer_id(1), port=7001, p2p_host='h1', event='started')
    announce(srv, peer_id=peer_id(2), port=7002, p2p_host='h2', event='started')
    announce(srv, peer_id=peer_id(3), port=7003, p2p_host='h3', event='started')
    announce(srv, peer_id=peer_id(1), port=7001, p2p_host='h1', left=0, p2p_outcome='placed')
    # A long error with a control character: cut and cleaned, never refused.
    announce(srv, peer_id=peer_id(2), port=7002, p2p_host='h2', event='stopped', left=40,
             p2p_outcome='failed', p2p_error='disk%20full%0A' + 'x' * 500)
    peers = {p['host']: p for p in status_of(srv)['torrents'][V1.hex()]['peers']}
    assert (peers['h1']['outcome'], peers['h1']['error']) == ('placed', None)
    assert peers['h2']['outcome'] == 'failed'
    assert peers['h2']['error'].startswith('disk full x') and len(peers['h2']['error']) == 300
    assert (peers['h3']['outcome'], peers['h3']['error']) == (None, None)
    # A new session of the failed host (a rerun) starts without a verdict.
    announce(srv, peer_id=peer_id(2), port=7002, p2p_host='h2', event='started')
    peers = {p['host']: p for p in status_of(srv)['torrents'][V1.hex()]['peers']}
    assert peers['h2']['outcome'] is None


def test_expired_peers_are_dropped_until_they_come_back(srv, clock):
    announce(srv, peer_id=peer_id(1), port=7001, p2p_host='h1')
    clock.now += 3 * 2 + tracker.EXPIRY_MARGIN + 1
    answer = announce(srv, peer_id=peer_id(2), port=7002, p2p_host='h2')
    assert answer[b'peers'] == b'' and answer[b'incomplete'] == 1
    peers = {p['host']: p for p in status_of(srv)['torrents'][V1.hex()]['peers']}
    assert peers['h1']['state'] == 'expired'
    announce(srv, peer_id=peer_id(1), port=7001, p2p_host='h1')
    answer = announce(srv, peer_id=peer_id(2), port=7002, p2p_host='h2')
    assert compact_peers(answer[b'peers']) == [('127.0.0.1', 7001)]


def test_completion_time_downloads_and_restart_by_host(srv, clock):
    announce(srv, peer_id=peer_id(1), port=7001, p2p_host='h1', event='started', left=1000)
    first_seen = clock.now
    clock.now += 5
    announce(srv, peer_id=peer_id(1), port=7001, p2p_host='h1', event='completed', left=0,
             downloaded=1000)
    peer = status_of(srv)['torrents'][V1.hex()]['peers'][0]
    assert peer['first_seen'] == first_seen and peer['completed_at'] == first_seen + 5
    assert peer['state'] == 'complete'
    # A seeder joining complete is not a download.
    announce(srv, peer_id=peer_id(2), port=7002, p2p_host='h2', event='started', left=0)
    torrent = status_of(srv)['torrents'][V1.hex()]
    assert torrent['downloaded'] == 1 and torrent['complete'] == 2
    # h1 stops, then a new agent (new peer id) on h1 starts over: one record, new timings.
    announce(srv, peer_id=peer_id(1), port=7001, p2p_host='h1', event='stopped', left=0)
    clock.now += 100
    announce(srv, peer_id=peer_id(11), port=7011, p2p_host='h1', event='started', left=1000)
    peers = [p for p in status_of(srv)['torrents'][V1.hex()]['peers'] if p['host'] == 'h1']
    assert len(peers) == 1
    assert peers[0]['peer_id'] == peer_id(11).hex() and peers[0]['port'] == 7011
    assert peers[0]['first_seen'] == clock.now and peers[0]['completed_at'] is None
    assert peers[0]['state'] == 'downloading'


# -------------------------------------------------------------- hybrid / v2

def test_v2_hash_accepts_its_truncation(srv):
    answer = announce(srv, info_hash=bytes.fromhex(V2_HEX)[:20], p2p_host='h1')
    assert b'failure reason' not in answer
    assert status_of(srv)['torrents'][V2_HEX]['peers'][0]['host'] == 'h1'


def test_hybrid_forms_share_one_swarm_and_one_entry_per_host(srv):
    v1 = bytes.fromhex(HYBRID_V1_HEX)
    v2_short = bytes.fromhex(HYBRID_V2_HEX)[:20]
    announce(srv, info_hash=v1, peer_id=peer_id(1), port=7001, p2p_host='h1')
    announce(srv, info_hash=v2_short, peer_id=peer_id(1), port=7001, p2p_host='h1')
    answer = announce(srv, info_hash=v2_short, peer_id=peer_id(2), port=7002, p2p_host='h2')
    assert compact_peers(answer[b'peers']) == [('127.0.0.1', 7001)]
    entry = status_of(srv)['torrents'][HYBRID_V1_HEX]
    assert entry['info_hashes'] == [HYBRID_V1_HEX, HYBRID_V2_HEX]
    assert sorted(p['host'] for p in entry['peers']) == ['h1', 'h2']
    assert HYBRID_V2_HEX not in status_of(srv)['torrents']


def test_separate_v1_and_v2_entries_are_merged(tmp_path):
    register(tmp_path, {HYBRID_V1_HEX: {'name': 'h', 'aliases': [HYBRID_V2_HEX]},
                        HYBRID_V2_HEX: {'name': 'h'}})
    with tracker.TrackerServer(str(tmp_path), poll_interval=0.02) as server:
        torrents = status_of(server)['torrents']
        assert list(torrents) == [HYBRID_V1_HEX]


# -------------------------------------------------------------- registration

def test_registration_is_reloaded_when_the_file_changes(srv, tmp_path):
    new = bytes.fromhex('77' * 20)
    assert announce(srv, info_hash=new) == {b'failure reason': b'unregistered torrent'}
    announce(srv, info_hash=V1, p2p_host='keep-me')
    register(tmp_path, {V1.hex(): {'name': 'renamed', 'size': 1000}, new.hex(): {'name': 'new'}})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if b'failure reason' not in announce(srv, info_hash=new):
            break
        time.sleep(0.1)
    else:
        pytest.fail('registration was not picked up')
    torrents = status_of(srv)['torrents']
    assert sorted(torrents) == sorted([V1.hex(), new.hex()])
    assert torrents[V1.hex()]['name'] == 'renamed'
    assert torrents[V1.hex()]['peers'][0]['host'] == 'keep-me'   # peers survive a reload
    assert announce(srv, info_hash=V1_OTHER) == {b'failure reason': b'unregistered torrent'}


def test_a_torrent_registered_just_now_is_served_at_once(srv, tmp_path):
    """The seeder announces right after the role registers its torrent; a
    refusal there would make libtorrent wait a minute before trying again."""
    new = bytes.fromhex('88' * 20)
    assert announce(srv, info_hash=new) == {b'failure reason': b'unregistered torrent'}
    register(tmp_path, {V1.hex(): {'name': 'pkg'}, new.hex(): {'name': 'new'}})
    assert b'peers' in announce(srv, info_hash=new)


@pytest.mark.parametrize('text', [
    '{not json',
    # a claim whose expiry has the wrong JSON type
    json.dumps({'aa' * 20: {'name': 'x', 'users': {'run-1': {'expires': [1], 'allowed': []}}}}),
    json.dumps({'aa' * 20: {'name': 'x', 'users': {'run-1': {'expires': {'at': 1}}}}}),
    json.dumps(['not', 'a', 'mapping']),
])
def test_bad_registration_file_keeps_previous_registrations(srv, tmp_path, text):
    assert V1.hex() in status_of(srv)['torrents']
    with open(os.path.join(str(tmp_path), 'torrents.json'), 'w') as handle:
        handle.write(text)
    time.sleep(tracker.RELOAD_EVERY + 0.1)
    assert V1.hex() in status_of(srv)['torrents']
    assert b'peers' in announce(srv)


def test_missing_registration_file_serves_nothing(tmp_path):
    with tracker.TrackerServer(str(tmp_path), poll_interval=0.02) as server:
        assert status_of(server)['torrents'] == {}
        assert announce(server) == {b'failure reason': b'unregistered torrent'}


# --------------------------------------------------------------- scrape

def test_scrape_counts(srv):
    announce(srv, peer_id=peer_id(1), port=7001, left=0)
    announce(srv, peer_id=peer_id(2), port=7002, left=10, event='started')
    announce(srv, peer_id=peer_id(2), port=7002, left=0, event='completed')
    announce(srv, peer_id=peer_id(3), port=7003, left=10)
    announce(srv, info_hash=V1_OTHER, peer_id=peer_id(4), port=7004, left=5)
    url = srv.base_url + '/scrape?info_hash=%s&info_hash=%s&info_hash=%s' % (
        quote_from_bytes(V1), quote_from_bytes(V1_OTHER), quote_from_bytes(UNKNOWN))
    status, _ctype, body = get(url)
    assert status == 200
    files = bdecode(body)[b'files']
    assert files == {
        V1: {b'complete': 2, b'incomplete': 1, b'downloaded': 1},
        V1_OTHER: {b'complete': 0, b'incomplete': 1, b'downloaded': 0},
    }
    everything = bdecode(get(srv.base_url + '/scrape')[2])[b'files']
    assert V1 in everything and V1_OTHER in everything
    bad = bdecode(get(srv.base_url + '/scrape?info_hash=abc')[2])
    assert b'failure reason' in bad


# --------------------------------------------------------- status, metrics, page

def test_status_json_shape(srv, clock):
    announce(srv, peer_id=peer_id(1), port=7001, p2p_host='web01', left=250, uploaded=5, downloaded=750)
    status = status_of(srv)
    assert status['time'] == clock.now
    assert set(status) >= {'torrents', 'time'}
    assert sorted(status['torrents']) == sorted([V1.hex(), V1_OTHER.hex(), V2_HEX, HYBRID_V1_HEX])
    torrent = status['torrents'][V1.hex()]
    assert {k: torrent[k] for k in ('name', 'size', 'complete', 'incomplete')} == {
        'name': 'one.bin', 'size': 1000, 'complete': 0, 'incomplete': 1}
    assert torrent['peers'] == [{
        'host': 'web01', 'ip': '127.0.0.1', 'port': 7001, 'peer_id': peer_id(1).hex(),
        'left': 250, 'uploaded': 5, 'downloaded': 750, 'state': 'downloading',
        'first_seen': clock.now, 'last_seen': clock.now, 'completed_at': None,
        'outcome': None, 'error': None}]


METRIC_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? '
                         r'-?[0-9.e+]+$')


def test_metrics_parse(srv):
    announce(srv, peer_id=peer_id(1), port=7001, left=0)
    announce(srv, peer_id=peer_id(2), port=7002, left=9, event='stopped')
    status, ctype, body = get(srv.base_url + '/metrics')
    assert status == 200 and ctype.startswith('text/plain')
    samples = {}
    for line in body.decode().splitlines():
        if line.startswith('#'):
            assert re.match(r'^# (HELP|TYPE) \w+ ', line), line
            continue
        assert METRIC_LINE.match(line), line
        name, value = line.rsplit(' ', 1)
        samples[name] = float(value)
    assert samples['p2p_tracker_torrents_registered'] == 4
    assert samples['p2p_tracker_announces_total{result="ok"}'] == 2
    labels = 'info_hash="%s",name="one.bin"' % V1.hex()
    assert samples['p2p_tracker_peers{%s,state="complete"}' % labels] == 1
    assert samples['p2p_tracker_peers{%s,state="stopped"}' % labels] == 1
    assert samples['p2p_tracker_peers{%s,state="downloading"}' % labels] == 0


def test_html_page_is_self_contained(srv):
    status, ctype, body = get(srv.base_url + '/')
    assert status == 200 and ctype.startswith('text/html')
    page = body.decode()
    assert '<script>' in page and 'status.json' in page and 'setTimeout(tick, 1000)' in page
    assert not re.search(r'(src|href)\s*=', page)        # no external assets
    assert 'http://' not in page and 'https://' not in page
    assert 'innerHTML' not in page                       # host names are shown as text only


def test_head_request(srv):
    reply = raw_request(srv, b'HEAD /status.json HTTP/1.0\r\n\r\n')
    head, _sep, body = reply.partition(b'\r\n\r\n')
    assert head.startswith(b'HTTP/1.0 200') and b'Content-Length' in head and body == b''


def test_bencode():
    assert tracker.bencode({'b': [1, b'xy'], 'a': 'z'}) == b'd1:a1:z1:bli1e2:xyee'
    with pytest.raises(TypeError):
        tracker.bencode(True)


# ------------------------------------------------------- with a real client

def test_libtorrent_client_announces_and_downloads(tmp_path):
    lt = pytest.importorskip('libtorrent')
    content = os.urandom(96 * 1024)
    seed_dir, leech_dir = tmp_path / 'seed', tmp_path / 'leech'
    seed_dir.mkdir()
    leech_dir.mkdir()
    (seed_dir / 'blob.bin').write_bytes(content)
    ct = lt.create_torrent(lt.list_files(str(seed_dir / 'blob.bin')), 16384)   # hybrid by default
    lt.set_piece_hashes(ct, str(seed_dir))
    ct.set_priv(True)
    info = lt.torrent_info(ct.generate())
    v1_hex = str(info.info_hashes().v1)
    v2_hex = str(info.info_hashes().v2)
    register(tmp_path, {v1_hex: {'name': 'blob.bin', 'size': len(content), 'aliases': [v2_hex]}})
    settings = {
        'listen_interfaces': '127.0.0.1:0', 'enable_dht': False, 'enable_lsd': False,
        'enable_upnp': False, 'enable_natpmp': False, 'allow_multiple_connections_per_ip': True,
        'enable_incoming_utp': False, 'enable_outgoing_utp': False, 'alert_mask': 0,
    }
    sessions = []
    with tracker.TrackerServer(str(tmp_path), interval=1, poll_interval=0.02) as server:
        try:
            for host, path in (('seeder', seed_dir), ('leecher', leech_dir)):
                ses = lt.session(settings)
                sessions.append(ses)
                params = lt.add_torrent_params()
                params.ti = lt.torrent_info(info)
                params.save_path = str(path)
                params.trackers = [server.base_url + '/announce?p2p_host=' + host]
                ses.add_torrent(params)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                peers = status_of(server)['torrents'][v1_hex]['peers']
                if sorted((p['host'], p['state']) for p in peers) == [('leecher', 'complete'), ('seeder', 'complete')]:
                    break
                time.sleep(0.2)
            else:
                pytest.fail('swarm did not complete: %r' % status_of(server))
        finally:
            for ses in sessions:
                for handle in ses.get_torrents():
                    ses.remove_torrent(handle)
            del sessions[:]
    assert (leech_dir / 'blob.bin').read_bytes() == content
    entry_hosts = [p['host'] for p in peers]
    assert sorted(entry_hosts) == ['leecher', 'seeder']   # one entry per host, v1 and v2 merged


# ----------------------------------------------------------------- the script

def test_import_has_no_side_effects():
    code = ('import threading, sys; sys.path.insert(0, %r); import tracker; '
            'print(threading.active_count())' % os.path.dirname(tracker.__file__))
    out = subprocess.run([sys.executable, '-I', '-c', code], capture_output=True, check=False, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == '1' and out.stderr == ''


def test_cli_runs_logs_and_stops_on_sigterm(tmp_path):
    register(tmp_path, {V1.hex(): {'name': 'cli'}})
    proc = subprocess.Popen([sys.executable, '-I', tracker.__file__, '--bind', '127.0.0.1', '--port', '0',
                             '--state-dir', str(tmp_path), '--interval', '3'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        match = re.search(r'started pid (\d+) on 127\.0\.0\.1:(\d+)', line)
        assert match, line
        assert int(match.group(1)) == proc.pid
        url = 'http://127.0.0.1:%s' % match.group(2)
        status = json.loads(get(url + '/status.json')[2])
        assert status['pid'] == proc.pid and status['interval'] == 3
        assert list(status['torrents']) == [V1.hex()]
        for _attempt in range(20):
            get(url + '/announce?' + announce_query())   # no per-request log lines
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert err.strip().splitlines() == ['p2p-tracker: stopped pid %d' % proc.pid]
        assert out == ''
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_reports_port_in_use(tmp_path):
    busy = socket.socket()
    busy.bind(('127.0.0.1', 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, '-I', tracker.__file__, '--bind', '127.0.0.1', '--port', str(port),
                              '--state-dir', str(tmp_path)], capture_output=True, check=False, text=True, timeout=30)
    finally:
        busy.close()
    assert out.returncode == 2
    assert 'port %d already in use' % port in out.stderr
    assert 'Traceback' not in out.stderr


NODE_HARNESS = r'''
// Just enough DOM for the page's script: elements, rows, textContent.
function El(tag) { this.tag = tag; this.children = []; this.style = {}; this._text = ''; this.className = ''; }
Object.defineProperty(El.prototype, 'textContent', {
  get: function () { return this._text; },
  set: function (v) { this._text = String(v); this.children = []; }
});
El.prototype.appendChild = function (c) { this.children.push(c); return c; };
El.prototype.insertRow = function () { return this.appendChild(new El('tr')); };
var root = new El('div'), err = new El('div');
var document = { createElement: function (t) { return new El(t); },
                 getElementById: function (id) { return id === 'swarms' ? root : err; } };
var statuses = STATUSES, timers = [];
function fetch() { var s = statuses.shift(); return Promise.resolve({ ok: true, json: function () { return s; } }); }
function setTimeout(fn) { timers.push(fn); }
function rows(el, out) {
  if (el.tag === 'tr') { out.push(el.children.map(function (c) { return c.textContent; })); }
  el.children.forEach(function (c) { rows(c, out); });
  return out;
}
function settle() { return new Promise(function (r) { global.setImmediate(r); }); }
PAGE_SCRIPT
settle().then(function () { timers.shift()(); return settle(); }).then(function () {
  var summary = root.children.filter(function (c) { return c.className === 'summary'; })[0];
  console.log(JSON.stringify({summary: summary.textContent, rows: rows(root, []), error: err.textContent}));
});
'''


def test_html_page_script_renders_progress(tmp_path):
    """Run the page's own script under node with a minimal DOM and two samples."""
    node = shutil.which('node') or shutil.which('nodejs')
    if not node:
        pytest.skip('node is not installed')
    page = tracker.PAGE
    script = page[page.index('<script>') + len('<script>'):page.index('</script>')]
    first = {'host': 'web01', 'ip': '10.0.0.1', 'port': 6881, 'left': 1000, 'uploaded': 0,
             'downloaded': 0, 'state': 'downloading', 'last_seen': 10}
    seeder = {'host': '<b>seed</b>', 'ip': '10.0.0.2', 'port': 6881, 'left': 0, 'uploaded': 5000000,
              'downloaded': 0, 'state': 'complete', 'last_seen': 10}
    later = dict(first, left=500, downloaded=500, last_seen=12)
    statuses = [
        {'time': 10, 'torrents': {'aa': {'name': 'rel', 'size': 1000, 'complete': 1, 'incomplete': 1,
                                         'peers': [first, seeder]}}},
        {'time': 12, 'torrents': {'aa': {'name': 'rel', 'size': 1000, 'complete': 1, 'incomplete': 1,
                                         'peers': [later, seeder]}}},
    ]
    source = NODE_HARNESS.replace('STATUSES', json.dumps(statuses)).replace('PAGE_SCRIPT', script)
    (tmp_path / 'page.js').write_text(source)
    out = subprocess.run([node, str(tmp_path / 'page.js')], capture_output=True, check=False, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown['error'] == ''
    assert shown['summary'] == '1/2 hosts done, 75.0%, 250 B/s aggregate, 1 seeding, 1 downloading, size 1.0 kB'
    by_host = {row[0]: row for row in shown['rows'][1:]}
    assert by_host['web01'][2:] == ['downloading', '', '50.0', '250 B/s', '0 B', '500 B', '0 s ago']
    assert by_host['<b>seed</b>'][2] == 'complete'   # shown as text, never as markup

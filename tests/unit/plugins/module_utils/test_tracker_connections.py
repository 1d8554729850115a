# -*- coding: utf-8 -*-
"""The tracker's connections: keep-alive, pipelining, the connection limit,
idle timeouts, and a completion burst (loopback only, bounded in time)."""

import asyncio
import json
import socket
import time
import urllib.request
from urllib.parse import quote_from_bytes

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import tracker

from tracker_process import tracker_process

HASH = bytes(range(20))
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def announce_path(n, left=100, event=''):
    path = '/announce?info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d&compact=1&p2p_host=h%04d' % (
        quote_from_bytes(HASH), quote_from_bytes(b'-CT0001-%012d' % n), 10000 + n, left, n)
    return path + ('&event=' + event if event else '')


@pytest.fixture
def state(tmp_path):
    (tmp_path / 'torrents.json').write_text(json.dumps({HASH.hex(): {'name': 'x', 'size': 100}}))
    return str(tmp_path)


def read_answer(sock):
    """One HTTP answer (head, body) read by its Content-Length; (b'', b'') on EOF."""
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b'', b''
        data += chunk
    head, _sep, body = data.partition(b'\r\n\r\n')
    length = int([line.split(b':')[1] for line in head.split(b'\r\n')
                  if line.lower().startswith(b'content-length:')][0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, 'closed in the middle of an answer'
        body += chunk
    assert len(body) == length, 'more bytes than one answer'
    return head, body


def closed_by_server(sock, within):
    sock.settimeout(within)
    try:
        return sock.recv(1) == b''
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_two_requests_on_one_http11_connection(state):
    with tracker.TrackerServer(state) as server:
        sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
        try:
            for n in (1, 2):
                sock.sendall(b'GET %s HTTP/1.1\r\nHost: x\r\n\r\n' % announce_path(n).encode())
                head, body = read_answer(sock)
                assert head.startswith(b'HTTP/1.1 200') and b'Connection: close' not in head, head
                assert body.startswith(b'd8:completei') and b'failure' not in body, body
            # Pipelined: two requests in one send, two answers in order.
            sock.sendall(b'GET /status.json HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')
            head, body = read_answer(sock)
            assert b'application/json' in head and len(json.loads(body)['torrents'][HASH.hex()]['peers']) == 2
            head, body = read_answer(sock)
            assert b'p2p_tracker_announces_total{result="ok"} 2' in body
            # Connection: close is honoured.
            sock.sendall(b'GET /status.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
            head, body = read_answer(sock)
            assert b'Connection: close' in head and json.loads(body)
            assert closed_by_server(sock, 5)
        finally:
            sock.close()


def test_http10_keeps_alive_only_when_asked(state):
    with tracker.TrackerServer(state) as server:
        sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
        try:
            sock.sendall(b'GET %s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n' % announce_path(1).encode())
            head, _body = read_answer(sock)
            assert head.startswith(b'HTTP/1.0 200') and b'Connection: keep-alive' in head, head
            sock.sendall(b'GET %s HTTP/1.0\r\n\r\n' % announce_path(1).encode())
            head, _body = read_answer(sock)
            assert head.startswith(b'HTTP/1.0 200') and b'Connection: close' in head, head
            assert closed_by_server(sock, 5)
        finally:
            sock.close()


def test_idle_keep_alive_connections_time_out(state):
    with tracker.TrackerServer(state, keepalive_idle=0.5) as server:
        sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
        try:
            sock.sendall(b'GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n')
            assert read_answer(sock)[0].startswith(b'HTTP/1.1 200')
            started = time.monotonic()
            assert closed_by_server(sock, 5)
            assert 0.4 < time.monotonic() - started < 3
            assert not server.httpd.connections
        finally:
            sock.close()


def test_connection_limit_evicts_the_longest_idle_and_drops_when_all_busy(state):
    with tracker.TrackerServer(state, max_connections=4) as server:
        idle = []
        try:
            for n in range(4):
                sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
                sock.sendall(b'GET %s HTTP/1.1\r\nHost: x\r\n\r\n' % announce_path(n).encode())
                assert read_answer(sock)[0].startswith(b'HTTP/1.1 200')
                idle.append(sock)
            # A fifth client is served; the connection idle the longest made room.
            head, body = exchange_new(server.port, b'GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
                                      % announce_path(9).encode())
            assert head.startswith(b'HTTP/1.1 200') and b'failure' not in body
            assert closed_by_server(idle[0], 5)
            assert len(server.httpd.connections) <= 4
            # Every slot busy with a request in progress: a new connection is dropped...
            for sock in idle:
                sock.close()
            busy = []
            deadline = time.monotonic() + 5
            while server.httpd.connections and time.monotonic() < deadline:
                time.sleep(0.02)
            for _n in range(4):
                sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
                sock.sendall(b'GET /status.json HT')
                busy.append(sock)
            deadline = time.monotonic() + 5
            while len(server.httpd.connections) < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            extra = socket.create_connection(('127.0.0.1', server.port), timeout=5)
            try:
                extra.sendall(b'GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n')
            except OSError:
                pass
            assert closed_by_server(extra, 5)
            extra.close()
            # ...and the busy ones are still served when they finish their request.
            busy[0].sendall(b'TP/1.1\r\nHost: x\r\n\r\n')
            assert read_answer(busy[0])[0].startswith(b'HTTP/1.1 200')
            for sock in busy:
                sock.close()
        finally:
            for sock in idle:
                sock.close()


def exchange_new(port, data):
    sock = socket.create_connection(('127.0.0.1', port), timeout=5)
    try:
        sock.sendall(data)
        return read_answer(sock)
    finally:
        sock.close()


def test_backlog_and_limit_leave_room_for_a_burst():
    assert tracker.LISTEN_BACKLOG >= 4096
    assert tracker.MAX_CONNECTIONS >= 5000


# ------------------------------------------------------------- the burst

@pytest.fixture
def tracker_script(state):
    """The tracker run as p2p_tracker runs it: the script, a process of its own."""
    with tracker_process(state) as (_proc, port):
        yield port


async def _get(port, path):
    """A new connection per request, as libtorrent announces; (status line, body) or the error."""
    try:
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
    except OSError as exc:
        return 'connect: %r' % exc, b''
    try:
        writer.write(b'GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' % path.encode())
        data = await reader.read()
    except OSError as exc:
        return 'exchange: %r' % exc, b''
    finally:
        writer.close()
    head, _sep, body = data.partition(b'\r\n\r\n')
    return head.split(b'\r\n', 1)[0].decode('latin-1'), body


async def _burst(port, count):
    await asyncio.gather(*(_get(port, announce_path(n, event='started')) for n in range(count)))
    # Every peer completes at once: all connections opened together.
    sent = time.monotonic()
    answers = await asyncio.wait_for(
        asyncio.gather(*(_get(port, announce_path(n, left=0, event='completed')) for n in range(count))), 30)
    return sent, answers


def test_500_concurrent_completions_all_answered_and_visible(tracker_script):
    count = 500
    sent, answers = asyncio.run(_burst(tracker_script, count))
    bad = [(status, body[:80]) for status, body in answers
           if status != 'HTTP/1.1 200 OK' or not body.startswith(b'd') or b'failure' in body]
    assert not bad, bad[:5]
    with OPENER.open('http://127.0.0.1:%d/status.json' % tracker_script, timeout=10) as resp:
        status = json.loads(resp.read())
    visible_after = time.monotonic() - sent
    peers = status['torrents'][HASH.hex()]['peers']
    done = [p for p in peers if p['state'] == 'complete' and p['completed_at'] is not None]
    assert len(done) == count, len(done)
    assert status['torrents'][HASH.hex()]['downloaded'] == count
    assert visible_after < 3.0, visible_after

# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracker's HTTP server: one asyncio event loop, asyncio.Protocol
connections, HTTP/1.1 keep-alive, bounded per connection (the live page
itself is in tracker_page).

Part of the tracker script (see tracker.py); standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import asyncio
import re
import resource
import socket
import threading
import time

if __package__:   # imported from the collection (the module, tests)
    from ansible_collections.p2p.swarm.plugins.module_utils.tracker_bencode import failure
    from ansible_collections.p2p.swarm.plugins.module_utils.tracker_page import page_bytes
    from ansible_collections.p2p.swarm.plugins.module_utils.tracker_requests import BadRequest, parse_announce, parse_scrape
    from ansible_collections.p2p.swarm.plugins.module_utils.tracker_swarm import DEFAULT_INTERVAL, Swarm, log
else:             # the script on the host: tracker.py put its directory on sys.path
    from tracker_bencode import failure  # pylint: disable=import-error
    from tracker_page import page_bytes  # pylint: disable=import-error
    from tracker_requests import BadRequest, parse_announce, parse_scrape  # pylint: disable=import-error
    from tracker_swarm import DEFAULT_INTERVAL, Swarm, log  # pylint: disable=import-error

MAX_HEAD = 16384           # request line + headers, bytes
HEAD_DEADLINE = 10.0       # a client gets this long to send its request, in total
KEEPALIVE_IDLE = 15.0      # seconds a kept-alive connection may sit idle between requests
SEND_TIMEOUT = 10.0        # seconds an answer may take to leave before the connection is cut
SWEEP_CONNECTIONS_EVERY = 0.25   # how often the timeouts above are checked
# Open connections at most (also kept below the process's file limit, which
# main() raises to its hard maximum). A completion burst of 5000 hosts within
# 2 s must fit, with room to spare.
MAX_CONNECTIONS = 16384
LISTEN_BACKLOG = 4096      # the kernel caps it at net.core.somaxconn


# ---------------------------------------------------------------- HTTP side
#
# One asyncio event loop serves every connection (asyncio.Protocol, no
# streams: a request costs a few callbacks, not a thread or a task).
# HTTP/1.1 connections stay open for the next request unless the client asks
# otherwise; HTTP/1.0 ones only with "Connection: keep-alive". What a client
# may hold is bounded: MAX_HEAD bytes of request head, no more reading while
# its answers are not being read, HEAD_DEADLINE seconds to send a request,
# KEEPALIVE_IDLE seconds idle between requests, SEND_TIMEOUT seconds for an
# answer to leave, and at most max_connections connections in all (at the
# limit, the connection idle the longest makes room for the new one).

_REASONS = {200: 'OK', 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed',
            414: 'URI Too Long', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error',
            503: 'Service Unavailable', 505: 'HTTP Version Not Supported'}
_VERSION_RE = re.compile(rb'\AHTTP/([0-9]+)\.([0-9]+)\Z')
MAX_HEADERS = 100


class _Connection(asyncio.Protocol):
    """One client connection: parse request heads, answer them in order."""

    def __init__(self, server):
        self.server = server
        self.transport = None
        self.peer_ip = ''
        self.buf = b''
        self.since = 0.0          # connect, or end of the last answer: idle (keep-alive) clock
        self.request_since = None  # first byte of a pending request (None: idle)
        self.closing_since = None
        self.write_paused = False
        self.read_paused = False

    # -- asyncio callbacks

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info('peername')
        self.peer_ip = peer[0] if peer else ''
        now = time.monotonic()
        self.since = now
        self.request_since = now    # the first request is due within HEAD_DEADLINE
        self.server.opened(self)

    def connection_lost(self, exc):
        self.server.closed(self)
        self.buf = b''

    def pause_writing(self):
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self):
        self.write_paused = False
        if self.read_paused and self.closing_since is None:
            self.read_paused = False
            self.transport.resume_reading()
        self._process()

    def eof_received(self):
        # A half-closed client still gets the answers to what it sent.
        self._process()
        if self.closing_since is None:
            self._close()
        return True

    def data_received(self, data):
        if self.closing_since is not None:
            return
        if self.request_since is None:
            self.request_since = time.monotonic()
        self.buf = self.buf + data if self.buf else data
        self._process()

    # -- requests

    def _pause_reading(self):
        if not self.read_paused and self.transport is not None and not self.transport.is_closing():
            self.read_paused = True
            self.transport.pause_reading()

    def _process(self):
        while self.buf and self.closing_since is None and not self.write_paused:
            buf = self.buf
            end = buf.find(b'\r\n\r\n')
            lf = buf.find(b'\n\n', 0, end if end >= 0 else len(buf))
            if lf >= 0 and (end < 0 or lf < end):
                end = lf + 2
            elif end >= 0:
                end += 4
            if end < 0 or end > MAX_HEAD:
                if len(buf) > MAX_HEAD or end > MAX_HEAD:
                    line_end = buf.find(b'\n')
                    self._error(414 if line_end < 0 or line_end > MAX_HEAD else 431)
                return
            self.buf = buf[end:]
            self._request(buf[:end])
            self.request_since = time.monotonic() if self.buf else None
            self.since = time.monotonic()

    def _request(self, head):
        lines = head.split(b'\n')
        words = lines[0].split()
        if len(words) == 3:
            match = _VERSION_RE.match(words[2])
            if match is None:
                self._error(400)
                return
            version = (int(match.group(1)), int(match.group(2)))
            if version >= (2, 0) or version < (1, 0):
                self._error(505 if version >= (2, 0) else 400)
                return
        elif len(words) == 2 and words[0] == b'GET':
            version = (1, 0)     # an HTTP/0.9-style request line: answered as 1.0, then closed
        else:
            self._error(400)
            return
        method, target = words[0], words[1]
        if len(lines) - 2 > MAX_HEADERS:
            self._error(431)
            return
        connection = b''
        has_body = False
        for line in lines[1:]:
            name, sep, value = line.partition(b':')
            if not sep:
                continue
            name = name.strip().lower()
            if name == b'connection':
                connection = value.strip().lower()
            elif name == b'content-length':
                has_body = value.strip() not in (b'', b'0')
            elif name == b'transfer-encoding':
                has_body = True
        if method not in (b'GET', b'HEAD'):
            self._error(405)
            return
        if version >= (1, 1):
            keep = b'close' not in connection
        else:
            keep = b'keep-alive' in connection and len(words) == 3
        keep = keep and not has_body and not self.server.closing
        try:
            path = target.decode('iso-8859-1')
        except UnicodeDecodeError:   # never, latin-1 takes any byte; kept for clarity
            self._error(400)
            return
        code, ctype, body = self.server.answer(path, self.peer_ip)
        if code != 200:
            self._error(code)
            return
        self._send(code, ctype, body, keep, version, method == b'HEAD')

    def _send(self, code, ctype, body, keep, version, head_only):
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        parts = [b'HTTP/1.1' if version >= (1, 1) else b'HTTP/1.0',
                 b' %d %s\r\nServer: p2p-tracker/1\r\nContent-Type: ' % (code, _REASONS[code].encode()),
                 ctype, b'\r\nContent-Length: %d\r\nCache-Control: no-store\r\n' % len(body)]
        if not keep:
            parts.append(b'Connection: close\r\n\r\n')
        elif version < (1, 1):
            parts.append(b'Connection: keep-alive\r\n\r\n')
        else:
            parts.append(b'\r\n')
        if not head_only:
            parts.append(body)
        transport.write(b''.join(parts))
        if not keep:
            self._close()

    def _error(self, code):
        """An error answer, always HTTP/1.0, and the connection closes."""
        body = ('%d %s\n' % (code, _REASONS[code])).encode()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b'HTTP/1.0 %d %s\r\nServer: p2p-tracker/1\r\nContent-Type: text/plain\r\n'
                                 b'Content-Length: %d\r\nConnection: close\r\n\r\n%s'
                                 % (code, _REASONS[code].encode(), len(body), body))
        self._close()

    def _close(self):
        """Stop reading, let the answers already written leave, then close."""
        if self.closing_since is None:
            self.closing_since = time.monotonic()
            self.buf = b''
            if self.transport is not None:
                self.transport.close()

    def abort(self):
        self.buf = b''
        if self.closing_since is None:
            self.closing_since = time.monotonic()
        if self.transport is not None:
            self.transport.abort()

    def idle(self):
        return self.request_since is None and self.closing_since is None and not self.write_paused

    def expired(self, now, keepalive_idle):
        if self.closing_since is not None:
            return now - self.closing_since > SEND_TIMEOUT
        if self.write_paused:
            return now - self.since > SEND_TIMEOUT
        if self.request_since is not None:
            return now - self.request_since > HEAD_DEADLINE
        return now - self.since > keepalive_idle


class HttpServer:
    """The listening socket, the connections, and the swarm they talk to."""

    def __init__(self, address, swarm, max_connections=MAX_CONNECTIONS, keepalive_idle=None):
        family = socket.AF_INET6 if ':' in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.server_address = sock.getsockname()
        self.swarm = swarm
        # Never more connections than file descriptors allow: accept() failing
        # with EMFILE would make asyncio stop accepting for a whole second.
        self.max_connections = max(1, min(max_connections, _fd_limit() - 64))
        self.keepalive_idle = keepalive_idle
        self.connections = {}     # _Connection -> None, oldest first
        self.closing = False
        self.loop = None
        self._aserver = None
        self._sweeper = None

    async def start(self):
        self.loop = asyncio.get_running_loop()
        self._aserver = await self.loop.create_server(lambda: _Connection(self), sock=self.sock,
                                                      backlog=LISTEN_BACKLOG)
        self._sweeper = self.loop.call_later(SWEEP_CONNECTIONS_EVERY, self._sweep)

    async def stop(self):
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._aserver is not None:
            self._aserver.close()
        for conn in list(self.connections):
            conn.abort()
        if self._aserver is not None:
            await self._aserver.wait_closed()
        self.sock.close()

    def opened(self, conn):
        if len(self.connections) >= self.max_connections:
            victim = next((c for c in self.connections if c.idle()), None)
            if victim is None:
                conn.abort()    # every slot busy with a request in progress
                return
            victim.abort()
            self.connections.pop(victim, None)
        self.connections[conn] = None

    def closed(self, conn):
        self.connections.pop(conn, None)

    def _sweep(self):
        now = time.monotonic()
        idle = self.keepalive_idle if self.keepalive_idle is not None else KEEPALIVE_IDLE
        for conn in [c for c in self.connections if c.expired(now, idle)]:
            conn.abort()
            self.connections.pop(conn, None)
        self._sweeper = self.loop.call_later(SWEEP_CONNECTIONS_EVERY, self._sweep)

    def answer(self, target, client_ip):
        """(status code, content type, body) for a GET of target from client_ip."""
        swarm = self.swarm
        path, _sep, query = target.partition('?')
        try:
            if path == '/announce':
                if not swarm.allows(client_ip):
                    # Only the run's own hosts may join or even look at a swarm.
                    swarm.count('refused')
                    return 200, b'text/plain', failure('address %s not allowed by this tracker' % client_ip)
                try:
                    req = parse_announce(query, client_ip)
                except BadRequest as exc:
                    swarm.count('malformed')
                    return 200, b'text/plain', failure(str(exc))
                if not swarm.allows(req['ip']):   # an allowed host may not hand out an outsider's address
                    swarm.count('refused')
                    return 200, b'text/plain', failure('address %s not allowed by this tracker' % req['ip'])
                return 200, b'text/plain', swarm.announce(req)
            if path == '/scrape':
                if not swarm.allows(client_ip):
                    return 200, b'text/plain', failure('address %s not allowed by this tracker' % client_ip)
                try:
                    return 200, b'text/plain', swarm.scrape(parse_scrape(query))
                except BadRequest as exc:
                    return 200, b'text/plain', failure(str(exc))
            if path == '/status.json':
                return 200, b'application/json', swarm.status_json()
            if path == '/metrics':
                return 200, b'text/plain; version=0.0.4; charset=utf-8', swarm.metrics().encode('utf-8')
            if path in ('/', '/index.html'):
                return 200, b'text/html; charset=utf-8', page_bytes()
            return 404, None, None
        except Exception as exc:  # one bad request must never take the server down
            log('error answering %s: %s: %s' % (path[:100], type(exc).__name__, exc))
            if path in ('/announce', '/scrape'):
                if path == '/announce':
                    swarm.count('error')
                return 200, b'text/plain', failure('internal tracker error')
            return 500, None, None


def _fd_limit():
    try:
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return 1024


def raise_fd_limit():
    """Lift the soft limit on open files to the hard one: a completion burst
    is thousands of connections at once, more than the usual 1024."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else 1 << 16
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError):
        pass


class TrackerServer:
    """The tracker on a socket, served from an event loop in a background thread.

    Used in-process by tests (port=0 picks a free port); main() runs the same
    server on its own loop in the main thread.
    """

    def __init__(self, state_dir, bind='127.0.0.1', port=0, interval=DEFAULT_INTERVAL,
                 clock=time.time, ttl=None, max_connections=MAX_CONNECTIONS, poll_interval=0.5,
                 allowed=None, keepalive_idle=None):
        self.swarm = Swarm(state_dir, interval, clock=clock, ttl=ttl, allowed=allowed)
        self.httpd = HttpServer((bind, port), self.swarm, max_connections, keepalive_idle)
        self.bind = bind
        self.port = self.httpd.server_address[1]
        self._poll_interval = poll_interval   # kept for callers; the loop needs no polling
        self._thread = None
        self._loop = None

    @property
    def base_url(self):
        host = {'0.0.0.0': '127.0.0.1', '::': '::1', '': '127.0.0.1'}.get(self.bind, self.bind)
        if ':' in host:
            host = '[%s]' % host
        return 'http://%s:%d' % (host, self.port)

    def start(self):
        loop = self._loop = asyncio.new_event_loop()
        loop.run_until_complete(self.httpd.start())
        self._thread = threading.Thread(target=loop.run_forever, name='p2p-tracker', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        loop = self._loop
        if loop is None:
            self.httpd.sock.close()
            return
        if self._thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
            self._thread = None
        loop.run_until_complete(self.httpd.stop())
        loop.close()
        self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

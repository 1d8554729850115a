# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small HTTP BitTorrent tracker for a private swarm (standard library only).

It ships in module_utils so it travels with the collection, and the
p2p_tracker module writes this very file to disk and runs it as a script:

    python3 tracker.py --bind 0.0.0.0 --port 6969 --state-dir DIR [--interval 2]

Endpoints: /announce (BEP 3, compact peers BEP 23, peers6 BEP 7), /scrape
(BEP 48), /status.json (per-peer progress for the controller), /metrics
(Prometheus text) and / (a live HTML view of the swarm).

Only info-hashes listed in <state-dir>/torrents.json are served; the file is
re-read when it changes, which is how the module registers torrents.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import asyncio
import errno
import ipaddress
import json
import logging
import math
import os
import random
import re
import resource
import signal
import socket
import sys
import threading
import time
from urllib.parse import unquote_to_bytes

DEFAULT_INTERVAL = 2
EXPIRY_MARGIN = 5          # seconds of slack on top of 3 x interval before a peer expires
RELOAD_EVERY = 0.5         # seconds between checks of torrents.json
FORGET_AFTER = 86400       # stopped/expired records are dropped after this long
SWEEP_EVERY = 60
DEFAULT_NUMWANT = 50
MAX_NUMWANT = 200
MAX_INT = 2 ** 63 - 1
MAX_PARAMS = 256           # query parameters per request (scrape may repeat info_hash)
MAX_HOSTNAME = 255
MAX_PEERS_PER_TORRENT = 20000
# Above this many peer records an announce is answered from a random sample
# and counts at most COUNTS_EVERY seconds old, so it costs O(numwant), not
# O(swarm): a 5000-host swarm would otherwise cost 5000 steps per announce.
SAMPLE_ABOVE = 400
COUNTS_EVERY = 1.0
# Re-announces a torrent's swarm may send per second: a big swarm is told a
# longer interval (5000 hosts: 20 s instead of 2 s), which keeps the tracker
# well inside what it answers (docs/benchmark.md, "Tracker capacity").
ANNOUNCE_BUDGET = 250
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
REGISTRATION_FILE = 'torrents.json'
EVENTS = ('', 'started', 'completed', 'stopped', 'paused')

_HEX_RE = re.compile(r'\A(?:[0-9a-f]{40}|[0-9a-f]{64})\Z')
_NUMBER_RE = re.compile(rb'\A[0-9]{1,19}\Z')
_BAD_PERCENT_RE = re.compile(r'%(?![0-9A-Fa-f]{2})')
_QUERY_CHARS_RE = re.compile(r'\A[\x21-\x7e]*\Z')


def log(message):
    sys.stderr.write('p2p-tracker: %s\n' % message)
    sys.stderr.flush()


# ---------------------------------------------------------------- bencoding

def bencode(value):
    """Encode int, bytes, str, list and dict (keys sorted as raw bytes)."""
    out = []
    _bencode(value, out)
    return b''.join(out)


def _bencode(value, out):
    if isinstance(value, bool):
        raise TypeError('cannot bencode a bool')
    if isinstance(value, int):
        out.append(b'i%de' % value)
    elif isinstance(value, (bytes, str)):
        if isinstance(value, str):
            value = value.encode('utf-8')
        out.append(b'%d:' % len(value))
        out.append(value)
    elif isinstance(value, (list, tuple)):
        out.append(b'l')
        for item in value:
            _bencode(item, out)
        out.append(b'e')
    elif isinstance(value, dict):
        items = []
        for key, item in value.items():
            items.append((key.encode('utf-8') if isinstance(key, str) else key, item))
        out.append(b'd')
        for key, item in sorted(items):
            _bencode(key, out)
            _bencode(item, out)
        out.append(b'e')
    else:
        raise TypeError('cannot bencode %r' % type(value))


def failure(reason):
    return bencode({'failure reason': reason})


# ------------------------------------------------------------ query parsing

class BadRequest(Exception):
    """A malformed request: answered with a bencoded failure reason."""


def parse_query(query):
    """Split a raw query string into {name: [raw byte values]}.

    urllib's parse_qs decodes to text, but info_hash and peer_id are raw
    bytes, so values are unquoted to bytes here, strictly.
    """
    if not _QUERY_CHARS_RE.match(query):
        raise BadRequest('invalid characters in query')
    if _BAD_PERCENT_RE.search(query):
        raise BadRequest('invalid percent-encoding')
    params = {}
    count = 0
    for part in query.split('&'):
        if not part:
            continue
        count += 1
        if count > MAX_PARAMS:
            raise BadRequest('too many parameters')
        name, _sep, value = part.partition('=')
        if '%' in name or '+' in name:
            try:
                name = unquote_to_bytes(name.replace('+', ' ')).decode('ascii')
            except UnicodeDecodeError:
                raise BadRequest('invalid parameter name')
        # Most values (numbers, events) carry no escapes: skip the unquoting.
        if '%' in value or '+' in value:
            value = unquote_to_bytes(value.replace('+', ' '))
        else:
            value = value.encode('ascii')
        if name in params:
            params[name].append(value)
        else:
            params[name] = [value]
    return params


def _single(params, name, required=True):
    values = params.get(name)
    if not values:
        if required:
            raise BadRequest('missing %s' % name)
        return None
    if len(values) > 1:
        raise BadRequest('%s given more than once' % name)
    return values[0]


def _number(params, name, low=0, high=MAX_INT, default=None):
    raw = _single(params, name, required=default is None)
    if raw is None:
        return default
    if not _NUMBER_RE.match(raw):
        raise BadRequest('invalid %s' % name)
    value = int(raw)
    if value < low or value > high:
        raise BadRequest('%s out of range' % name)
    return value


_IP_CACHE = {}
_IP_CACHE_SIZE = 8192


def normalize_ip(text):
    """Return the canonical text form of an IP address (IPv4-mapped -> IPv4).

    ipaddress is slow next to the rest of an announce, and a swarm's hosts
    keep announcing from the same addresses: answers are cached (bounded).
    """
    try:
        return _IP_CACHE[text]
    except KeyError:
        pass
    addr = ipaddress.ip_address(text.split('%', 1)[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if len(_IP_CACHE) >= _IP_CACHE_SIZE:
        _IP_CACHE.clear()
    result = _IP_CACHE[text] = str(addr)
    return result


def pack_peer(ip, port):
    """The compact form of an address (BEP 23 / BEP 7): 6 bytes for IPv4, 18 for IPv6."""
    if ':' in ip:
        return socket.inet_pton(socket.AF_INET6, ip) + port.to_bytes(2, 'big')
    return socket.inet_aton(ip) + port.to_bytes(2, 'big')


def parse_announce(query, client_ip):
    """Validate an announce query; return a dict of typed fields."""
    params = parse_query(query)
    info_hash = _single(params, 'info_hash')
    if len(info_hash) != 20:
        raise BadRequest('info_hash must be 20 bytes')
    peer_id = _single(params, 'peer_id')
    if len(peer_id) != 20:
        raise BadRequest('peer_id must be 20 bytes')
    req = {
        'info_hash': info_hash,
        'peer_id': peer_id,
        'port': _number(params, 'port', 1, 65535),
        'uploaded': _number(params, 'uploaded'),
        'downloaded': _number(params, 'downloaded'),
        'left': _number(params, 'left'),
        'numwant': min(_number(params, 'numwant', default=DEFAULT_NUMWANT), MAX_NUMWANT),
        'compact': _number(params, 'compact', 0, 1, default=1) == 1,
        'no_peer_id': _number(params, 'no_peer_id', 0, 1, default=0) == 1,
    }
    event = _single(params, 'event', required=False) or b''
    try:
        event = event.decode('ascii')
    except UnicodeDecodeError:
        raise BadRequest('invalid event')
    if event not in EVENTS:
        raise BadRequest('invalid event')
    req['event'] = event
    ip = _single(params, 'ip', required=False)
    try:
        req['ip'] = normalize_ip(ip.decode('ascii') if ip else client_ip)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest('invalid ip')
    host = _single(params, 'p2p_host', required=False)
    if host is not None:
        try:
            host = host.decode('utf-8').strip()
        except UnicodeDecodeError:
            raise BadRequest('invalid p2p_host')
        if len(host) > MAX_HOSTNAME or any(ord(c) < 32 or ord(c) == 127 for c in host):
            raise BadRequest('invalid p2p_host')
    req['host'] = host or None
    return req


def parse_scrape(query):
    params = parse_query(query)
    hashes = params.get('info_hash', [])
    for value in hashes:
        if len(value) != 20:
            raise BadRequest('info_hash must be 20 bytes')
    return hashes


# ---------------------------------------------------------------- registry

def hash_key(hex_hash):
    """The 20 bytes a client announces: the v1 hash, or a v2 hash truncated."""
    return bytes.fromhex(hex_hash)[:20]


def parse_registrations(data):
    """Turn the torrents.json document into [(hexes, name, size)].

    Entries that do not validate are skipped (and reported) rather than
    failing the whole file, so one bad line cannot take the tracker down.
    """
    if not isinstance(data, dict):
        raise ValueError('top level must be an object')
    result = []
    for hex_hash, entry in data.items():
        hex_hash = str(hex_hash).lower()
        entry = entry if isinstance(entry, dict) else {}
        if not _HEX_RE.match(hex_hash):
            log('ignoring registration %r: not a 40 or 64 hex digit info-hash' % hex_hash)
            continue
        hexes = [hex_hash]
        aliases = entry.get('aliases') or []
        if isinstance(aliases, str):
            aliases = [aliases]
        for alias in aliases if isinstance(aliases, list) else []:
            alias = str(alias).lower()
            if _HEX_RE.match(alias) and alias not in hexes:
                hexes.append(alias)
        name = entry.get('name')
        size = entry.get('size')
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            size = None
        result.append((hexes, str(name) if name else '', size))
    return result


class Peer:
    __slots__ = ('peer_id', 'host', 'ip', 'port', 'left', 'uploaded', 'downloaded',
                 'state', 'first_seen', 'last_seen', 'completed_at', 'compact', 'slot')

    def __init__(self, now):
        self.peer_id = b''
        self.host = None
        self.ip = ''
        self.port = 0
        self.left = 0
        self.uploaded = 0
        self.downloaded = 0
        self.state = 'downloading'
        self.first_seen = now
        self.last_seen = now
        self.completed_at = None
        self.compact = b''    # pack_peer(ip, port), kept with them
        self.slot = -1        # index in Torrent.order


class Torrent:
    def __init__(self, hexes, name, size):
        self.hexes = list(hexes)
        self.name = name
        self.size = size
        self.peers = {}       # identity -> Peer; identity is the host name, else the peer id
        self.order = []       # the same Peers in a list, for O(numwant) random samples
        self.downloaded = 0   # completions seen, for scrape
        self.counts = None    # (when, complete, incomplete) for big swarms, see SAMPLE_ABOVE

    @property
    def primary(self):
        return self.hexes[0]

    def add(self, ident, peer):
        peer.slot = len(self.order)
        self.order.append(peer)
        self.peers[ident] = peer

    def remove(self, ident):
        peer = self.peers.pop(ident)
        last = self.order.pop()
        if last is not peer:
            self.order[peer.slot] = last
            last.slot = peer.slot


class Swarm:
    """All tracker state; every public method takes the lock."""

    def __init__(self, state_dir, interval=DEFAULT_INTERVAL, clock=time.time, ttl=None, allowed=None):
        self.state_dir = state_dir
        self.interval = int(interval)
        # Networks whose hosts may announce and scrape; None or empty: anyone.
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in allowed or []]
        self._allows_cache = {}
        self.ttl = ttl if ttl is not None else 3 * self.interval + EXPIRY_MARGIN
        self.announce_interval = self.interval   # what announces are told; grows with the swarm
        self.clock = clock
        self.lock = threading.Lock()
        self.torrents = {}    # primary hex -> Torrent
        self.by_key = {}      # 20-byte announced hash -> Torrent
        self.announces = {'ok': 0, 'unregistered': 0, 'malformed': 0, 'error': 0, 'refused': 0}
        self.scrapes = 0
        self.started = clock()
        self._reg_signature = False   # never equal to a real stat signature
        self._reg_checked = None
        self._last_sweep = time.monotonic()
        self._maybe_reload(force=True)

    # -- registrations

    def _maybe_reload(self, force=False):
        now = time.monotonic()
        if not force and self._reg_checked is not None and now - self._reg_checked < RELOAD_EVERY:
            return
        self._reg_checked = now
        path = os.path.join(self.state_dir, REGISTRATION_FILE)
        try:
            st = os.stat(path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            signature = None
        except OSError as exc:
            log('cannot stat %s: %s' % (path, exc))
            return
        if signature == self._reg_signature:
            return
        self._reg_signature = signature
        if signature is None:
            entries = []
        else:
            try:
                with open(path, 'rb') as handle:
                    entries = parse_registrations(json.loads(handle.read().decode('utf-8')))
            except (OSError, ValueError) as exc:
                # Keep serving what we had; try again once the file changes.
                log('ignoring unreadable %s: %s' % (path, exc))
                return
        self._apply_registrations(entries)

    def _apply_registrations(self, entries):
        torrents, by_key, reused = {}, {}, set()
        for hexes, name, size in entries:
            keys = [hash_key(h) for h in hexes]
            merged = next((by_key[k] for k in keys if k in by_key), None)
            if merged is not None:
                # Another entry names the same torrent (v1 and v2 forms of a hybrid).
                for hex_hash in hexes:
                    if hex_hash not in merged.hexes:
                        merged.hexes.append(hex_hash)
                torrent = merged
            else:
                old = next((self.by_key[k] for k in keys if k in self.by_key
                            and id(self.by_key[k]) not in reused), None)
                if old is not None:
                    reused.add(id(old))   # keep its peers across the reload
                    old.hexes, old.name, old.size = list(hexes), name, size
                    torrent = old
                else:
                    torrent = Torrent(hexes, name, size)
                torrents[torrent.primary] = torrent
            for key in keys:
                by_key.setdefault(key, torrent)
        self.torrents, self.by_key = torrents, by_key

    # -- peers

    def _state(self, peer, now):
        if peer.state == 'stopped':
            return 'stopped'
        if now - peer.last_seen > self.ttl:
            return 'expired'
        return 'complete' if peer.left == 0 else 'downloading'

    def _counts(self, torrent, now):
        complete = incomplete = 0
        for peer in torrent.peers.values():
            state = self._state(peer, now)
            if state == 'complete':
                complete += 1
            elif state == 'downloading':
                incomplete += 1
        return complete, incomplete

    def _sweep(self, now):
        """Forget long-gone peers so memory stays bounded."""
        mono = time.monotonic()
        if mono - self._last_sweep < SWEEP_EVERY:
            return
        self._last_sweep = mono
        for torrent in self.torrents.values():
            for ident, peer in list(torrent.peers.items()):
                if self._state(peer, now) in ('stopped', 'expired') and now - peer.last_seen > FORGET_AFTER:
                    torrent.remove(ident)

    def _make_room(self, torrent, now):
        inactive = [(peer.last_seen, ident) for ident, peer in torrent.peers.items()
                    if self._state(peer, now) in ('stopped', 'expired')]
        inactive.sort()
        for _seen, ident in inactive[:max(1, len(torrent.peers) - MAX_PEERS_PER_TORRENT + 1)]:
            torrent.remove(ident)
        return len(torrent.peers) < MAX_PEERS_PER_TORRENT

    def announce(self, req):
        """Record one announce and return the bencoded answer."""
        with self.lock:
            self._maybe_reload()
            torrent = self.by_key.get(req['info_hash'])
            if torrent is None:
                # A seeder announces right after its torrent is registered,
                # often before the periodic check: look again before refusing
                # (a refusal makes libtorrent back off for a long while).
                self._maybe_reload(force=True)
                torrent = self.by_key.get(req['info_hash'])
            if torrent is None:
                self.announces['unregistered'] += 1
                return failure('unregistered torrent')
            now = self.clock()
            self._sweep(now)
            ident = req['host'] or req['peer_id']
            peer = torrent.peers.get(ident)
            previous_left = None
            if peer is None:
                if len(torrent.peers) >= MAX_PEERS_PER_TORRENT and not self._make_room(torrent, now):
                    self.announces['error'] += 1
                    return failure('too many peers')
                peer = Peer(now)
                torrent.add(ident, peer)
            elif req['event'] == 'started' and self._state(peer, now) in ('stopped', 'expired'):
                # A new session of a known host: its timings start over.
                peer.first_seen = now
                peer.completed_at = None
            else:
                previous_left = peer.left
            peer.peer_id = req['peer_id']
            peer.host = req['host']
            if peer.ip != req['ip'] or peer.port != req['port']:
                peer.ip = req['ip']
                peer.port = req['port']
                peer.compact = pack_peer(peer.ip, peer.port)
            peer.left = req['left']
            peer.uploaded = req['uploaded']
            peer.downloaded = req['downloaded']
            peer.last_seen = now
            if req['event'] == 'stopped':
                peer.state = 'stopped'
            else:
                peer.state = 'complete' if req['left'] == 0 else 'downloading'
            if req['left'] > 0:
                peer.completed_at = None
            elif peer.completed_at is None:
                peer.completed_at = now
                # Count a download only when we saw it happen, not a seeder joining.
                if req['event'] == 'completed' or (previous_left or 0) > 0:
                    torrent.downloaded += 1
            complete, incomplete = self._announce_counts(torrent, now)
            interval = self._interval_for(complete + incomplete)
            answer = {
                'interval': interval,
                'min interval': interval,
                'complete': complete,
                'incomplete': incomplete,
                'downloaded': torrent.downloaded,
            }
            peers = []
            if req['event'] != 'stopped' and req['numwant'] > 0:
                peers = self._peers_for(torrent, peer, req['numwant'], now)
            self.announces['ok'] += 1
        if req['compact']:
            # The common answer, formatted directly (the same bytes bencode() gives).
            v4 = b''.join([p.compact for p in peers if len(p.compact) == 6])
            v6 = b''.join([p.compact for p in peers if len(p.compact) == 18])
            return b''.join((
                b'd8:completei%de10:downloadedi%de10:incompletei%de8:intervali%de12:min intervali%de'
                % (complete, torrent.downloaded, incomplete, interval, interval),
                b'5:peers%d:' % len(v4), v4,
                b'6:peers6%d:' % len(v6) + v6 if v6 else b'', b'e'))
        answer.update(_peer_lists(peers, req['compact'], req['no_peer_id']))
        return bencode(answer)

    def _announce_counts(self, torrent, now):
        """(complete, incomplete) for an announce answer; cached in big swarms."""
        if len(torrent.peers) <= SAMPLE_ABOVE:
            return self._counts(torrent, now)
        if torrent.counts is None or not 0 <= now - torrent.counts[0] < COUNTS_EVERY:
            torrent.counts = (now,) + self._counts(torrent, now)
        return torrent.counts[1:]

    def _interval_for(self, active):
        """The configured interval, stretched so `active` peers re-announce at
        most ANNOUNCE_BUDGET times a second; it never shrinks back, so no peer
        told a long interval expires early."""
        wanted = max(self.interval, int(math.ceil(active / float(ANNOUNCE_BUDGET))))
        if wanted > self.announce_interval:
            self.announce_interval = wanted
            self.ttl = max(self.ttl, 3 * wanted + EXPIRY_MARGIN)
        return self.announce_interval

    def _peers_for(self, torrent, peer, numwant, now):
        """Up to numwant random peers worth giving to `peer`.

        Worth giving: not the requester (nor a stale record of its address),
        neither stopped nor expired, and not a seeder when the requester
        seeds too (seeders have nothing to give each other).
        """
        ttl, ip, port = self.ttl, peer.ip, peer.port
        seeding = peer.left == 0
        everyone = torrent.order
        if len(everyone) > SAMPLE_ABOVE:
            # random.choices is much cheaper than random.sample; the few
            # duplicates among 2 x numwant of thousands are dropped.
            drawn = dict.fromkeys(random.choices(everyone, k=2 * numwant))
            found = [o for o in drawn if o is not peer and o.state != 'stopped' and now - o.last_seen <= ttl
                     and not (seeding and o.left == 0) and not (o.port == port and o.ip == ip)]
            # A seeder needs no full list: downloaders find it through theirs.
            if len(found) >= numwant or seeding:
                return found[:numwant]
        found = [o for o in everyone if o is not peer and o.state != 'stopped' and now - o.last_seen <= ttl
                 and not (seeding and o.left == 0) and not (o.port == port and o.ip == ip)]
        return random.sample(found, numwant) if len(found) > numwant else found

    def count(self, result):
        with self.lock:
            self.announces[result] += 1

    def allows(self, ip_text):
        """True when ip_text may take part (no allow list, or inside one of its networks)."""
        if not self.allowed:
            return True
        cache = self._allows_cache
        try:
            return cache[ip_text]
        except KeyError:
            pass
        try:
            addr = ipaddress.ip_address(normalize_ip(ip_text))
        except ValueError:
            return False
        if len(cache) >= _IP_CACHE_SIZE:
            cache.clear()
        result = cache[ip_text] = any(addr in net for net in self.allowed)
        return result

    def scrape(self, hashes):
        with self.lock:
            self._maybe_reload()
            self.scrapes += 1
            now = self.clock()
            if not hashes:
                hashes = [hash_key(t.primary) for t in self.torrents.values()]
            files = {}
            for key in hashes:
                torrent = self.by_key.get(key)
                if torrent is None:
                    continue
                complete, incomplete = self._counts(torrent, now)
                files[key] = {'complete': complete, 'incomplete': incomplete,
                              'downloaded': torrent.downloaded}
        return bencode({'files': files, 'flags': {'min_request_interval': self.interval}})

    def status(self):
        """The JSON-able view of every registered torrent and its peers."""
        with self.lock:
            # Always current: the module reads it to see its registrations
            # applied (a stat() per status request; re-read only on change).
            self._maybe_reload(force=True)
            now = self.clock()
            torrents = {}
            for torrent in self.torrents.values():
                complete, incomplete = self._counts(torrent, now)
                peers = []
                for peer in torrent.peers.values():
                    peers.append({
                        'host': peer.host,
                        'ip': peer.ip,
                        'port': peer.port,
                        'peer_id': peer.peer_id.hex(),
                        'left': peer.left,
                        'uploaded': peer.uploaded,
                        'downloaded': peer.downloaded,
                        'state': self._state(peer, now),
                        'first_seen': peer.first_seen,
                        'last_seen': peer.last_seen,
                        'completed_at': peer.completed_at,
                    })
                peers.sort(key=lambda p: (p['host'] or '', p['ip'], p['port']))
                torrents[torrent.primary] = {
                    'name': torrent.name or torrent.primary,
                    'size': torrent.size,
                    'info_hashes': list(torrent.hexes),
                    'complete': complete,
                    'incomplete': incomplete,
                    'downloaded': torrent.downloaded,
                    'peers': peers,
                }
            return {'torrents': torrents, 'time': now, 'interval': self.interval,
                    'peer_ttl': self.ttl, 'pid': os.getpid()}

    def metrics(self):
        """Prometheus text exposition."""
        with self.lock:
            self._maybe_reload()
            now = self.clock()
            lines = [
                '# HELP p2p_tracker_announces_total Announce requests answered, by result.',
                '# TYPE p2p_tracker_announces_total counter',
            ]
            for result in sorted(self.announces):
                lines.append('p2p_tracker_announces_total{result="%s"} %d' % (result, self.announces[result]))
            lines += [
                '# HELP p2p_tracker_scrapes_total Scrape requests answered.',
                '# TYPE p2p_tracker_scrapes_total counter',
                'p2p_tracker_scrapes_total %d' % self.scrapes,
                '# HELP p2p_tracker_torrents_registered Info-hashes this tracker serves.',
                '# TYPE p2p_tracker_torrents_registered gauge',
                'p2p_tracker_torrents_registered %d' % len(self.torrents),
                '# HELP p2p_tracker_peers Peers known per torrent, by state.',
                '# TYPE p2p_tracker_peers gauge',
            ]
            downloads = ['# HELP p2p_tracker_downloads_total Completed downloads seen per torrent.',
                         '# TYPE p2p_tracker_downloads_total counter']
            for torrent in sorted(self.torrents.values(), key=lambda t: t.primary):
                counts = dict.fromkeys(('downloading', 'complete', 'stopped', 'expired'), 0)
                for peer in torrent.peers.values():
                    counts[self._state(peer, now)] += 1
                labels = 'info_hash="%s",name="%s"' % (torrent.primary, _label(torrent.name))
                for state in sorted(counts):
                    lines.append('p2p_tracker_peers{%s,state="%s"} %d' % (labels, state, counts[state]))
                downloads.append('p2p_tracker_downloads_total{%s} %d' % (labels, torrent.downloaded))
            lines += downloads
            lines += [
                '# HELP p2p_tracker_uptime_seconds Seconds since the tracker started.',
                '# TYPE p2p_tracker_uptime_seconds gauge',
                'p2p_tracker_uptime_seconds %.3f' % (now - self.started),
            ]
        return '\n'.join(lines) + '\n'


def _label(value):
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def _peer_lists(peers, compact, no_peer_id):
    if not compact:
        result = []
        for peer in peers:
            item = {'ip': peer.ip, 'port': peer.port}
            if not no_peer_id:
                item['peer id'] = peer.peer_id
            result.append(item)
        return {'peers': result}
    v4, v6 = [], []
    for peer in peers:
        packed = peer.compact or pack_peer(peer.ip, peer.port)
        (v4 if len(packed) == 6 else v6).append(packed)
    answer = {'peers': b''.join(v4)}
    if v6:
        answer['peers6'] = b''.join(v6)
    return answer


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


class _Server:
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
                return 200, b'application/json', json.dumps(swarm.status(), sort_keys=True).encode('utf-8')
            if path == '/metrics':
                return 200, b'text/plain; version=0.0.4; charset=utf-8', swarm.metrics().encode('utf-8')
            if path in ('/', '/index.html'):
                return 200, b'text/html; charset=utf-8', _page_bytes()
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


def _raise_fd_limit():
    """Lift the soft limit on open files to the hard one: a completion burst
    is thousands of connections at once, more than the usual 1024."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else 1 << 16
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError):
        pass


_PAGE_BYTES = []


def _page_bytes():
    if not _PAGE_BYTES:
        _PAGE_BYTES.append(PAGE.encode('utf-8'))
    return _PAGE_BYTES[0]


class TrackerServer:
    """The tracker on a socket, served from an event loop in a background thread.

    Used in-process by tests (port=0 picks a free port); main() runs the same
    server on its own loop in the main thread.
    """

    def __init__(self, state_dir, bind='127.0.0.1', port=0, interval=DEFAULT_INTERVAL,
                 clock=time.time, ttl=None, max_connections=MAX_CONNECTIONS, poll_interval=0.5,
                 allowed=None, keepalive_idle=None):
        self.swarm = Swarm(state_dir, interval, clock=clock, ttl=ttl, allowed=allowed)
        self.httpd = _Server((bind, port), self.swarm, max_connections, keepalive_idle)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description='HTTP BitTorrent tracker for a private swarm')
    parser.add_argument('--bind', default='0.0.0.0')
    parser.add_argument('--port', type=int, default=6969)
    parser.add_argument('--state-dir', required=True)
    parser.add_argument('--interval', type=int, default=DEFAULT_INTERVAL)
    parser.add_argument('--allow', action='append', default=[], metavar='CIDR',
                        help='only hosts in these networks may announce and scrape (repeatable)')
    args = parser.parse_args(argv)
    try:
        allowed = [str(ipaddress.ip_network(n, strict=False)) for n in args.allow]
    except ValueError as exc:
        parser.error('--allow: %s' % exc)
    if args.interval < 1:
        parser.error('--interval must be at least 1')
    if not 0 <= args.port <= 65535:
        parser.error('--port must be between 0 and 65535')
    os.makedirs(args.state_dir, exist_ok=True)
    _raise_fd_limit()
    # asyncio reports a client vanishing mid-answer through logging: not news here.
    logging.getLogger('asyncio').setLevel(logging.CRITICAL)
    try:
        swarm = Swarm(args.state_dir, args.interval, allowed=allowed)
        server = _Server((args.bind, args.port), swarm)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log('cannot listen: port %d already in use on %s' % (args.port, args.bind))
        else:
            log('cannot listen on %s:%d: %s' % (args.bind, args.port, exc))
        return 2
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(server.start())
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, loop.stop)
        log('started pid %d on %s:%d, state dir %s, interval %ds%s'
            % (os.getpid(), args.bind, server.server_address[1], args.state_dir, args.interval,
               ', peers only from %s' % ' '.join(allowed) if allowed else ''))
        loop.run_forever()
        loop.run_until_complete(server.stop())
    finally:
        loop.close()
    log('stopped pid %d' % os.getpid())
    return 0


PAGE = r'''<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>p2p swarm</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h2 { margin-bottom: .2em; }
.summary { color: #555; margin-bottom: .6em; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e4e4e4; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bar { width: 220px; height: 10px; background: #eee; }
.bar div { height: 100%; background: #3a8; }
tr.stopped .bar div { background: #c33; }
tr.expired .bar div { background: #ca3; }
tr.stopped td, tr.expired td { color: #777; }
#error { color: #b00; }
</style>
</head>
<body>
<h1>p2p swarm</h1>
<div id="error"></div>
<div id="swarms">loading...</div>
<script>
"use strict";
// Rates come from successive samples of each peer's progress, per host.
var samples = {};

function bytes(n) {
  var units = ["B", "kB", "MB", "GB", "TB"], i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function cell(row, text, cls) {
  var td = document.createElement("td");
  td.textContent = text;
  if (cls) { td.className = cls; }
  row.appendChild(td);
  return td;
}

function done(peer, size) {
  if (size) { return Math.max(0, size - peer.left); }
  return peer.downloaded;
}

function percent(peer, size) {
  if (peer.left === 0) { return 100; }
  var total = size || (peer.downloaded + peer.left);
  return total ? Math.max(0, Math.min(100, 100 * done(peer, size) / total)) : 0;
}

function rate(key, peer, size) {
  var d = done(peer, size), s = samples[key];
  if (!s) { samples[key] = {t: peer.last_seen, d: d, r: 0}; return 0; }
  if (peer.last_seen > s.t) {
    s.r = Math.max(0, (d - s.d) / (peer.last_seen - s.t));
    s.t = peer.last_seen; s.d = d;
  }
  return peer.state === "downloading" ? s.r : 0;
}

function render(status) {
  var root = document.getElementById("swarms");
  var hashes = Object.keys(status.torrents).sort();
  root.textContent = hashes.length ? "" : "no torrents registered";
  hashes.forEach(function (hash) {
    var t = status.torrents[hash], total = 0, finished = 0, pct = 0;
    var h2 = document.createElement("h2");
    h2.textContent = t.name;
    root.appendChild(h2);
    var summary = document.createElement("div");
    summary.className = "summary";
    root.appendChild(summary);
    var table = document.createElement("table");
    var head = table.insertRow();
    ["host", "ip", "state", "progress", "%", "rate", "uploaded", "downloaded", "last seen"].forEach(function (h) {
      var th = document.createElement("th"); th.textContent = h; head.appendChild(th);
    });
    t.peers.forEach(function (p) {
      var name = p.host || (p.ip + ":" + p.port);
      var r = rate(hash + "/" + name, p, t.size), pc = percent(p, t.size);
      total += r; pct += pc;
      if (p.left === 0) { finished++; }
      var row = table.insertRow();
      row.className = p.state;
      cell(row, name);
      cell(row, p.ip + ":" + p.port);
      cell(row, p.state);
      var bar = document.createElement("div"), fill = document.createElement("div");
      bar.className = "bar"; fill.style.width = pc.toFixed(1) + "%"; bar.appendChild(fill);
      cell(row, "").appendChild(bar);
      cell(row, pc.toFixed(1), "n");
      cell(row, bytes(r) + "/s", "n");
      cell(row, bytes(p.uploaded), "n");
      cell(row, bytes(p.downloaded), "n");
      cell(row, Math.max(0, status.time - p.last_seen).toFixed(0) + " s ago", "n");
    });
    summary.textContent = finished + "/" + t.peers.length + " hosts done, " +
      (t.peers.length ? (pct / t.peers.length).toFixed(1) : "0.0") + "%, " +
      bytes(total) + "/s aggregate, " + t.complete + " seeding, " + t.incomplete + " downloading" +
      (t.size ? ", size " + bytes(t.size) : "");
    root.appendChild(table);
  });
}

function tick() {
  fetch("status.json", {cache: "no-store"})
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(function (s) { document.getElementById("error").textContent = ""; render(s); })
    .catch(function (e) { document.getElementById("error").textContent = "tracker unreachable: " + e; })
    .then(function () { setTimeout(tick, 1000); });
}
tick();
</script>
</body>
</html>
'''


if __name__ == '__main__':
    raise SystemExit(main())

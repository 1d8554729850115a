# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracker's swarm state: registrations (torrents.json), peers and
torrents, announces, scrapes and peer selection.

No sockets here: tracker_http serves this over HTTP, requests come parsed
by tracker_requests, and tracker_status reports on it. Part of the tracker
script (see tracker.py); standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import math
import os
import random
import sys
import threading
import time

if __package__:   # imported from the collection (the module, tests)
    from ansible_collections.p2p.swarm.plugins.module_utils.tracker_bencode import bencode, failure
    from ansible_collections.p2p.swarm.plugins.module_utils import tracker_registry as registry
    from ansible_collections.p2p.swarm.plugins.module_utils.tracker_requests import networks_allow, pack_peer
    from ansible_collections.p2p.swarm.plugins.module_utils.tracker_status import SwarmReportsMixin
else:             # the script on the host: tracker.py put its directory on sys.path
    from tracker_bencode import bencode, failure  # pylint: disable=import-error
    import tracker_registry as registry  # pylint: disable=import-error
    from tracker_requests import networks_allow, pack_peer  # pylint: disable=import-error
    from tracker_status import SwarmReportsMixin  # pylint: disable=import-error

DEFAULT_INTERVAL = 2
EXPIRY_MARGIN = 5          # seconds of slack on top of 3 x interval before a peer expires
RELOAD_EVERY = 0.5         # seconds between checks of torrents.json
FORGET_AFTER = 86400       # stopped/expired records are dropped after this long
SWEEP_EVERY = 60
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
REGISTRATION_FILE = registry.FILE_NAME
# A tracker that ends when unused still waits this long for its first registration.
UNUSED_GRACE = 60


def log(message):
    sys.stderr.write('p2p-tracker: %s\n' % message)
    sys.stderr.flush()


# ---------------------------------------------------------------- registry

def hash_key(hex_hash):
    """The 20 bytes a client announces: the v1 hash, or a v2 hash truncated."""
    return bytes.fromhex(hex_hash)[:20]


def parse_registrations(data, now=None):
    """[(hexes, name, size, allowed or None)] served now (see tracker_registry)."""
    return registry.effective(data, time.time() if now is None else now)


class Peer:
    __slots__ = ('peer_id', 'host', 'ip', 'port', 'left', 'uploaded', 'downloaded',
                 'state', 'first_seen', 'last_seen', 'completed_at', 'compact', 'slot', 'fragment',
                 'outcome')

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
        self.fragment = None  # (state, its status.json text): rebuilt after a change
        self.outcome = None   # ('placed' | 'failed', error) once the agent reported one


class Torrent:
    def __init__(self, hexes, name, size, allowed=None):
        self.hexes = list(hexes)
        self.name = name
        self.size = size
        self.set_allowed(allowed)
        self.peers = {}       # identity -> Peer; identity is the host name, else the peer id
        self.order = []       # the same Peers in a list, for O(numwant) random samples
        self.downloaded = 0   # completions seen, for scrape
        self.counts = None    # (when, complete, incomplete) for big swarms, see SAMPLE_ABOVE

    @property
    def primary(self):
        return self.hexes[0]

    def set_allowed(self, allowed):
        # Each run that registered the torrent adds its hosts; None: anyone.
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in allowed] if allowed else None
        self._allows_cache = {}

    def allows(self, ip_text):
        return self.allowed is None or networks_allow(self.allowed, self._allows_cache, ip_text)

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


class Swarm(SwarmReportsMixin):
    """All tracker state; every public method takes the lock (status and
    metrics come from SwarmReportsMixin)."""

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
        self._reg_data = {}
        self._next_expiry = None      # wall-clock time the next claim runs out
        self.ever_registered = False  # some run claimed a torrent here once
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
        wall = self.clock()
        if signature == self._reg_signature:
            if self._next_expiry is None or wall < self._next_expiry:
                return
        elif signature is None:
            self._reg_data = {}
        else:
            try:
                with open(path, 'rb') as handle:
                    data = json.loads(handle.read().decode('utf-8'))
                parse_registrations(data, wall)
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                # (TypeError, AttributeError: a field of the wrong JSON type, e.g. a list as expiry)
                # Keep serving what we had; try again once the file changes.
                log('ignoring unreadable %s: %s' % (path, exc))
                self._reg_signature = signature
                return
            self._reg_data = data
        self._reg_signature = signature
        live = registry.prune(self._reg_data, wall)
        self.ever_registered = self.ever_registered or registry.has_claims(live, wall)
        self._next_expiry = registry.next_expiry(live)
        self._apply_registrations(parse_registrations(live, wall))

    def _apply_registrations(self, entries):
        torrents, by_key, reused = {}, {}, set()
        for hexes, name, size, allowed in entries:
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
                    old.set_allowed(allowed)
                    torrent = old
                else:
                    torrent = Torrent(hexes, name, size, allowed)
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
            if not (torrent.allows(req['ip']) and torrent.allows(req.get('client_ip') or req['ip'])):
                # Only the hosts of the runs that registered it may join or look at a swarm.
                self.announces['refused'] += 1
                return failure('address %s not allowed for this torrent' % req['ip'])
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
                peer.outcome = None
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
            peer.fragment = None
            if req.get('outcome') is not None:
                peer.outcome = req['outcome']
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
            v4 = b''.join([p.compact for p in peers])
            v6 = b''
            if len(v4) != 6 * len(peers):    # IPv6 peers among them: split the two lists
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
            # random.choices is much cheaper than random.sample (the few
            # duplicates among a draw from thousands are dropped), and most
            # draws are useful: draw a quarter more than wanted, then, if
            # that was not enough, 2 x numwant more.
            drawn = dict.fromkeys(random.choices(everyone, k=numwant + numwant // 4 + 2))
            found = [o for o in drawn if o is not peer and o.state != 'stopped' and now - o.last_seen <= ttl
                     and not (seeding and o.left == 0) and not (o.port == port and o.ip == ip)]
            if len(found) >= numwant:
                return found[:numwant]
            for other in random.choices(everyone, k=2 * numwant):
                if other not in drawn:
                    drawn[other] = None
                    if other is not peer and other.state != 'stopped' and now - other.last_seen <= ttl \
                            and not (seeding and other.left == 0) and not (other.port == port and other.ip == ip):
                        found.append(other)
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
        return not self.allowed or networks_allow(self.allowed, self._allows_cache, ip_text)

    def unused(self):
        """True when a tracker that ends when unused should end: no run's claim
        left (after having had one, or none for UNUSED_GRACE s) and no keep file.
        Permanent registrations (older versions wrote only those) are served
        while it runs but keep only a kept-running tracker alive."""
        with self.lock:
            self._maybe_reload(force=True)
            if registry.keep_running(self.state_dir):
                return False
            if registry.has_claims(self._reg_data, self.clock()):
                self.ever_registered = True
                return False
            return self.ever_registered or self.clock() - self.started > UNUSED_GRACE

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

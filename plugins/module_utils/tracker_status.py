# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracker's reports: the status (/status.json, read by the controller
and the live page) and the Prometheus metrics (/metrics).

Part of the tracker script (see tracker.py); standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os


class SwarmReportsMixin:
    """What tracker_swarm.Swarm reports, kept apart from how it keeps state.

    Swarm's base class: it reads the swarm's lock, torrents and counters and
    calls its _maybe_reload, _counts and _state; it holds no state itself.
    """

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
                peers = [self._peer_status(peer, self._state(peer, now)) for peer in torrent.peers.values()]
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

    def status_json(self):
        """status() as JSON bytes (keys sorted), built from per-peer pieces.

        Equal to json.dumps(status(), sort_keys=True) as data, but each
        peer's piece is kept until the peer announces or changes state, so
        a poll of a 5000-host swarm costs a few milliseconds of the event
        loop, not tens.
        """
        dumps = json.dumps
        with self.lock:
            self._maybe_reload(force=True)
            now = self.clock()
            parts = []
            for primary in sorted(self.torrents):
                torrent = self.torrents[primary]
                complete, incomplete = self._counts(torrent, now)
                pieces = []
                for peer in torrent.order:
                    state = self._state(peer, now)
                    cached = peer.fragment
                    if cached is None or cached[0] != state:
                        cached = peer.fragment = (state, dumps(self._peer_status(peer, state), sort_keys=True))
                    pieces.append(((peer.host or '', peer.ip, peer.port), cached[1]))
                pieces.sort(key=lambda piece: piece[0])
                parts.append('%s: {"complete": %d, "downloaded": %d, "incomplete": %d, "info_hashes": %s, '
                             '"name": %s, "peers": [%s], "size": %s}' % (
                                 dumps(primary), complete, torrent.downloaded, incomplete,
                                 dumps(list(torrent.hexes)), dumps(torrent.name or torrent.primary),
                                 ', '.join([piece[1] for piece in pieces]), dumps(torrent.size)))
            text = '{"interval": %d, "peer_ttl": %s, "pid": %d, "time": %s, "torrents": {%s}}' % (
                self.interval, dumps(self.ttl), os.getpid(), dumps(now), ', '.join(parts))
        return text.encode('utf-8')

    @staticmethod
    def _peer_status(peer, state):
        return {
            'host': peer.host,
            'ip': peer.ip,
            'port': peer.port,
            'peer_id': peer.peer_id.hex(),
            'left': peer.left,
            'uploaded': peer.uploaded,
            'downloaded': peer.downloaded,
            'state': state,
            'first_seen': peer.first_seen,
            'last_seen': peer.last_seen,
            'completed_at': peer.completed_at,
            'outcome': peer.outcome[0] if peer.outcome else None,
            'error': peer.outcome[1] if peer.outcome else None,
        }

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

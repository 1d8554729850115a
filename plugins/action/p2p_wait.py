# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side wait on a swarm: poll the tracker, print progress, judge.

Everything that decides (matching the torrent, per-host state, percentiles,
the progress line, the final verdict) is a pure function of status.json
documents, so it is tested without a network; ActionModule.run only wires
it to urllib and Display.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import json
import math
import socket
import time
import urllib.error
import urllib.request

from ansible_collections.p2p.swarm.plugins.plugin_utils.controller_action import ControllerAction
from ansible.utils.display import Display

display = Display()

MAX_STATUS_BYTES = 64 * 1024 * 1024
RATE_WINDOW = 5.0          # seconds of samples behind the aggregate rate
SLOWEST_SHOWN = 2
NEVER = 'never announced'
LOST_AFTER = 30.0         # seconds without an announce after which an expired host is gone
# An agent announces p2p_outcome=placed right after it has put the verified
# file in place; a host complete for this long without it counts as done
# anyway (unconfirmed: its outcome then comes from the host itself).
PLACED_GRACE = 10.0
# Once every other host has finished, hosts the tracker never heard of are
# not waited for beyond this: they may be downloading from their listed
# peers without the tracker, and the peer role asks them directly.
NEVER_QUIET = 15.0

ARGUMENT_SPEC = dict(
    status_url=dict(type='str', required=True),
    info_hash=dict(type='str', required=True),
    hosts=dict(type='list', elements='str', required=True),
    timeout=dict(type='float', default=3600),
    poll=dict(type='float', default=1.0),
    progress_every=dict(type='float', default=2.0),
    size=dict(type='int'),
    stale_grace=dict(type='float', default=60.0),
    announce_grace=dict(type='float', default=120.0),
    tracker_lost_after=dict(type='float', default=60.0),
)


class TrackerUnreachable(Exception):
    pass


# ------------------------------------------------------------ pure functions

def find_torrent(status, info_hash):
    """Return (key, entry) of the torrent matching info_hash, or (None, None).

    info_hash may be the v1 hex, the v2 hex, or the 40-hex truncation of a
    v2 hash (what v2 clients announce with).
    """
    wanted = info_hash.strip().lower()
    for key, entry in sorted((status.get('torrents') or {}).items()):
        forms = [key] + list(entry.get('info_hashes') or [])
        for form in forms:
            form = str(form).lower()
            if form == wanted or (len(form) == 64 and len(wanted) == 40 and form[:40] == wanted) \
                    or (len(form) == 40 and len(wanted) == 64 and wanted[:40] == form):
                return key, entry
    return None, None


def peer_percent(peer, size):
    """Percent of the torrent a peer holds, from size if known, else its own counters."""
    left = max(0, int(peer.get('left') or 0))
    if left == 0:
        return 100.0
    if size:
        return max(0.0, min(100.0, 100.0 * (size - left) / size))
    downloaded = max(0, int(peer.get('downloaded') or 0))
    total = downloaded + left
    return 100.0 * downloaded / total if total else 0.0


def peer_done_bytes(peer, size):
    if size:
        return max(0, size - max(0, int(peer.get('left') or 0)))
    return max(0, int(peer.get('downloaded') or 0))


def peers_by_host(entry):
    """Latest record per host name; peers that gave no host name are skipped."""
    result = {}
    for peer in entry.get('peers') or []:
        host = peer.get('host')
        if not host:
            continue
        if host not in result or (peer.get('last_seen') or 0) > (result[host].get('last_seen') or 0):
            result[host] = peer
    return result


def host_view(peer, size, wait_start, now, stale_grace, announce_grace=0):
    """Judge one host: its state, whether it is finished, and its timings.

    A stopped record older than the wait (a failed earlier run) may belong to
    a host whose new agent has not announced yet, so it only counts as final
    once stale_grace seconds of the wait have passed. A host never heard of
    counts as final after announce_grace seconds (0: never): its agent gives
    up by itself when it cannot reach the tracker.
    """
    if peer is None:
        final = bool(announce_grace) and now - wait_start >= announce_grace
        return {'state': NEVER, 'percent': 0.0, 'done': False, 'final': final, 'outcome': None,
                'error': None, 'completed_at': None, 'download_seconds': None, 'done_bytes': 0}
    left = max(0, int(peer.get('left') or 0))
    tracker_state = peer.get('state') or 'downloading'
    view = {
        'percent': round(peer_percent(peer, size), 1),
        'done_bytes': peer_done_bytes(peer, size),
        'completed_at': None,
        'download_seconds': None,
        'outcome': peer.get('outcome'),
        'error': peer.get('error'),
    }
    if peer.get('outcome') == 'failed':
        view.update(state='failed', done=False, final=True)
        return view
    if left == 0:
        completed = peer.get('completed_at')
        if completed is None:
            completed = peer.get('last_seen') or now
        if peer.get('outcome') != 'placed' and now - completed < PLACED_GRACE \
                and (peer.get('last_seen') or 0) >= wait_start:
            # Verified, being put in place: its confirmation is a moment away.
            view.update(state='placing', done=False, final=False)
            return view
        view.update(state='complete', done=True, final=True,
                    completed_at=round(max(0.0, completed - wait_start), 3))
        if peer.get('first_seen') is not None:
            view['download_seconds'] = round(max(0.0, completed - peer['first_seen']), 3)
        return view
    stale = (peer.get('last_seen') or 0) < wait_start
    if tracker_state == 'stopped':
        final = not stale or now - wait_start >= stale_grace
        view.update(state='stopped', done=False, final=final)
        return view
    if tracker_state == 'expired' and now - (peer.get('last_seen') or 0) >= LOST_AFTER \
            and (not stale or now - wait_start >= stale_grace):
        # Silent for LOST_AFTER seconds: its agent is gone (killed, host down)
        # and sent no 'stopped'. Waiting longer would only run into the timeout.
        view.update(state='lost', done=False, final=True)
        return view
    # 'downloading', or 'expired' for a short while (may come back): keep waiting.
    view.update(state=tracker_state, done=False, final=False)
    return view


def evaluate(status, info_hash, hosts, size=None, wait_start=None, stale_grace=60.0, announce_grace=0):
    """Summarize one status.json document for the expected hosts."""
    now = float(status.get('time') or 0)
    if wait_start is None:
        wait_start = now
    key, entry = find_torrent(status, info_hash)
    snap = {'found': entry is not None, 'key': key, 'time': now, 'name': info_hash, 'size': size,
            'hosts': {}, 'complete': [], 'stopped': [], 'pending': [], 'never': []}
    if entry is not None:
        snap['name'] = entry.get('name') or key
        if not size and entry.get('size'):
            snap['size'] = int(entry['size'])
    records = peers_by_host(entry) if entry is not None else {}
    for host in hosts:
        view = host_view(records.get(host), snap['size'], wait_start, now, stale_grace, announce_grace)
        snap['hosts'][host] = view
        if view['state'] == NEVER:
            snap['never'].append(host)
        if view['done']:
            snap['complete'].append(host)
        elif view['state'] in ('stopped', 'lost', 'failed', NEVER) and view['final']:
            snap['stopped'].append(host)
        else:
            snap['pending'].append(host)
    silent = [h for h in snap['pending'] if snap['hosts'][h]['state'] == NEVER]
    if silent and len(silent) == len(snap['pending']) and announce_grace \
            and now - wait_start >= min(announce_grace, NEVER_QUIET):
        for host in silent:
            snap['hosts'][host]['final'] = True
            snap['stopped'].append(host)
        snap['pending'] = []
    snap['finished'] = not snap['pending']
    snap['done_bytes'] = sum(v['done_bytes'] for v in snap['hosts'].values())
    if hosts:
        snap['percent'] = sum(v['percent'] for v in snap['hosts'].values()) / len(hosts)
    else:
        snap['percent'] = 100.0
    return snap


def percentile(values, fraction):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(math.ceil(fraction * len(ordered))))
    return ordered[min(rank, len(ordered)) - 1]


def completion_stats(snap):
    times = [snap['hosts'][h]['completed_at'] for h in snap['complete']
             if snap['hosts'][h]['completed_at'] is not None]
    return {'p50': percentile(times, 0.50), 'p99': percentile(times, 0.99),
            'max': max(times) if times else None}


class RateMeter:
    """Aggregate bytes/s over the last few seconds of samples."""

    def __init__(self, window=RATE_WINDOW):
        self.window = window
        self.samples = collections.deque(maxlen=1000)

    def add(self, when, total_bytes):
        self.samples.append((when, total_bytes))
        while len(self.samples) > 2 and when - self.samples[1][0] >= self.window:
            self.samples.popleft()

    def rate(self):
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return max(0.0, (b1 - b0) / (t1 - t0)) if t1 > t0 else 0.0


def format_rate(rate):
    return '%.1f MB/s' % (rate / 1e6)


def describe(host, view):
    if view['state'] == NEVER:
        return '%s (never announced)' % host
    if view['state'] in ('downloading',):
        return '%s (%.0f%%)' % (host, view['percent'])
    if view['state'] == 'failed':
        return '%s (%.0f%%, failed: %s)' % (host, view['percent'], view.get('error') or 'no reason given')
    return '%s (%.0f%%, %s)' % (host, view['percent'], view['state'])


def progress_line(snap, rate):
    """One human line: 'swarm NAME: 7/10 hosts done, 83.4%, 41.2 MB/s aggregate, slowest: ...'."""
    total = len(snap['hosts'])
    parts = ['%d/%d hosts done' % (len(snap['complete']), total),
             '%.1f%%' % snap['percent'], '%s aggregate' % format_rate(rate)]
    pending = sorted(snap['pending'], key=lambda h: (snap['hosts'][h]['percent'], h))
    if pending:
        parts.append('slowest: ' + ', '.join(describe(h, snap['hosts'][h]) for h in pending[:SLOWEST_SHOWN]))
    if snap['stopped']:
        parts.append('stopped: ' + ', '.join(describe(h, snap['hosts'][h]) for h in snap['stopped']))
    if not snap['found']:
        parts.append('torrent not registered on the tracker yet')
    return 'swarm %s: %s' % (snap['name'], ', '.join(parts))


def build_result(snap, hosts, elapsed, status_url, info_hash, timed_out, last_error):
    """The task result (and failure message) from the last snapshot."""
    result = {'changed': False, 'elapsed': round(elapsed, 3), 'status_url': status_url,
              'info_hash': info_hash}
    if snap is None:
        result.update(failed=True, msg='tracker %s unreachable: %s' % (status_url, last_error or 'no answer'),
                      complete_hosts=[], incomplete_hosts=list(hosts), stopped_hosts=[],
                      never_announced=list(hosts), per_host={}, p50=None, p99=None, max=None)
        return result
    per_host = {}
    for host, view in snap['hosts'].items():
        per_host[host] = {'state': view['state'], 'percent': view['percent'],
                          'completed_at': view['completed_at'], 'download_seconds': view['download_seconds'],
                          'outcome': view['outcome'], 'error': view['error']}
    result.update(
        name=snap['name'], complete_hosts=list(snap['complete']), incomplete_hosts=list(snap['pending']),
        stopped_hosts=list(snap['stopped']), never_announced=list(snap['never']), per_host=per_host,
        **completion_stats(snap))
    problems = []
    if snap['stopped']:
        problems.append('%d host(s) stopped before completing: %s' % (
            len(snap['stopped']), ', '.join(describe(h, snap['hosts'][h]) for h in snap['stopped'])))
    if timed_out and snap['pending']:
        if last_error is not None:
            problems.insert(0, 'tracker %s unreachable: %s' % (status_url, last_error))
        elif not snap['found']:
            problems.insert(0, 'torrent %s is not registered on tracker %s' % (info_hash, status_url))
        problems.append('timed out after %d s with %d of %d host(s) not finished: %s' % (
            elapsed, len(snap['pending']), len(hosts),
            ', '.join(describe(h, snap['hosts'][h]) for h in snap['pending'])))
    if problems:
        result.update(failed=True, msg='swarm %s: %s' % (snap['name'], '; '.join(problems)))
    else:
        result['msg'] = 'swarm %s: all %d host(s) complete' % (snap['name'], len(hosts))
    return result


def wait_for_swarm(fetch, status_url, info_hash, hosts, timeout=3600.0, poll=1.0, progress_every=2.0,
                   size=None, stale_grace=60.0, announce_grace=0, emit=None, clock=time.monotonic,
                   sleep=time.sleep, tracker_lost_after=0):
    """Poll fetch() until every host is complete or stopped, or timeout.

    fetch returns a status.json document or raises TrackerUnreachable.
    clock/sleep are injectable so tests run without real time passing.
    """
    emit = emit or (lambda line: None)
    start = clock()
    if not hosts:
        return {'changed': False, 'elapsed': 0.0, 'status_url': status_url, 'info_hash': info_hash,
                'msg': 'no hosts to wait for', 'complete_hosts': [], 'incomplete_hosts': [],
                'stopped_hosts': [], 'never_announced': [], 'per_host': {},
                'p50': None, 'p99': None, 'max': None}
    wait_start = None        # wait start on the tracker's clock
    snap = None
    last_error = None
    meter = RateMeter()
    next_progress = start + progress_every
    timed_out = False
    lost_since = None        # start of the current run of failed polls
    while True:
        now = clock()
        try:
            status = fetch()
            if not isinstance(status, dict) or not isinstance(status.get('torrents'), dict) \
                    or not isinstance(status.get('time'), (int, float)):
                raise TrackerUnreachable('unexpected answer (not a p2p tracker status)')
        except TrackerUnreachable as exc:
            last_error = str(exc)
            lost_since = now if lost_since is None else lost_since
            if tracker_lost_after and now - lost_since >= tracker_lost_after:
                # A tracker that is gone will not tell us more: end now, say so.
                last_error = '%s (for %d s, giving up)' % (last_error, now - lost_since)
                timed_out = True
                break
        else:
            last_error = None
            lost_since = None
            if wait_start is None:
                wait_start = status['time'] - (now - start)
            snap = evaluate(status, info_hash, hosts, size, wait_start, stale_grace, announce_grace)
            meter.add(now, snap['done_bytes'])
            if snap['found'] and snap['finished']:
                emit(progress_line(snap, meter.rate()))
                break
        if now >= next_progress:
            if snap is not None:
                line = progress_line(snap, meter.rate())
                emit(line + ('' if last_error is None else ' (tracker unreachable: %s)' % last_error))
            else:
                emit('swarm %s: waiting for tracker %s: %s' % (info_hash, status_url, last_error))
            next_progress = now + progress_every
        remaining = start + timeout - clock()
        if remaining <= 0:
            timed_out = True
            break
        sleep(max(0.0, min(poll, remaining)))
    return build_result(snap, hosts, clock() - start, status_url, info_hash, timed_out, last_error)


def summary_line(result):
    """Per-host completion times after the wait, fastest first, and p50/p99/max."""
    done = sorted((v['completed_at'], h) for h, v in result.get('per_host', {}).items()
                  if v.get('completed_at') is not None)
    if not done:
        return None
    return 'swarm %s: completed in p50 %.1f s, p99 %.1f s, max %.1f s after the wait began; per host: %s' % (
        result.get('name'), result['p50'], result['p99'], result['max'],
        ', '.join('%s %.1f s' % (h, t) for t, h in done))


# ------------------------------------------------------------- the plugin

def fetch_status(url, timeout):
    """GET status.json, bounded in time and size; errors become TrackerUnreachable."""
    # A private swarm is reached directly: never through an environment proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            body = response.read(MAX_STATUS_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise TrackerUnreachable('HTTP %d %s' % (exc.code, exc.reason))
    except urllib.error.URLError as exc:
        raise TrackerUnreachable(str(exc.reason))
    except (socket.timeout, OSError) as exc:
        raise TrackerUnreachable(str(exc) or type(exc).__name__)
    except ValueError as exc:   # malformed URL
        raise TrackerUnreachable(str(exc))
    if len(body) > MAX_STATUS_BYTES:
        raise TrackerUnreachable('status larger than %d bytes' % MAX_STATUS_BYTES)
    try:
        return json.loads(body.decode('utf-8'))
    except ValueError as exc:
        raise TrackerUnreachable('invalid JSON in status: %s' % exc)


class ActionModule(ControllerAction):
    ARGUMENT_SPEC = ARGUMENT_SPEC

    def act(self, result, args, task_vars):
        hosts = [h for h in args['hosts'] if h]
        if args['timeout'] < 0 or args['poll'] <= 0 or args['progress_every'] <= 0:
            result.update(failed=True, msg='timeout must be >= 0, poll and progress_every > 0')
            return result
        url = args['status_url']

        def fetch():
            return fetch_status(url, timeout=max(1.0, min(10.0, args['poll'] * 5)))

        # In check mode nothing was started, so look once and report instead of waiting.
        timeout = 0 if self._task.check_mode else args['timeout']
        outcome = wait_for_swarm(fetch, url, args['info_hash'], hosts, timeout=timeout, poll=args['poll'],
                                 progress_every=args['progress_every'], size=args['size'],
                                 stale_grace=args['stale_grace'], announce_grace=args['announce_grace'],
                                 emit=display.display, tracker_lost_after=args['tracker_lost_after'])
        summary = summary_line(outcome)
        if summary:
            display.display(summary)
        if self._task.check_mode and outcome.get('failed'):
            outcome.pop('failed')
            outcome['msg'] = 'check mode, not waiting: ' + outcome['msg']
        result.update(outcome)
        return result

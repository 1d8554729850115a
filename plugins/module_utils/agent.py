# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The swarm agent: one detached libtorrent session per torrent on a host.

p2p_fetch writes this file to the host's state directory and runs it as a
plain script (`python agent.py JOB.json`), so it may import only the standard
library and libtorrent. It downloads into a hidden file beside `dest`, lets
libtorrent check every piece, applies owner/group/mode and renames into place,
then seeds while the swarm still needs it. Progress and the outcome go to a
JSON status file that p2p_fetch reads.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import faulthandler
import ipaddress
import json
import os
import random
import signal
import socket
import sys
import time
import warnings

try:
    from urllib.parse import urlsplit, urlunsplit, urlencode
except ImportError:  # pragma: no cover - python 2 is not supported on hosts
    urlsplit = urlunsplit = urlencode = None

try:
    import libtorrent as lt
except ImportError:  # the module reports a missing libtorrent before starting us
    lt = None

TICK = 0.25  # seconds between status updates and alert polls
SWARM_DONE_HOLD = 5.0  # tracker must report no incomplete peer this long before we exit
STRIPE_EVERY = 0.2  # seconds between piece-priority updates while striping
STRIPE_STALL = 3.0  # seconds with the seeder shut out and no new piece before striping gives up
# ...unless the tracker still counts fewer downloaders than stripes: their owners
# are still being started (the start round sweeps over the hosts). Striping
# waits for them until no new one has joined for this long.
STRIPE_JOIN_QUIET = 10.0
PART_FILE_GRACE = 10.0  # seconds a finished download may wait for libtorrent to create its file
PEER_RETRY = 5.0  # seconds between attempts to reach the listed peers not connected yet
# A placed agent ends once the tracker has failed every announce for this
# long: the run is over and has stopped it (one failure is no proof).
TRACKER_GONE_AFTER = 5.0
# The seeding agent's peer-id prefix, so download agents can tell the
# original seeder from peers that finished (see StripePicker).
SEED_FINGERPRINT = '-PS0001-'
PEER_FINGERPRINT = '-PP0001-'
# libtorrent loads Diffie-Hellman parameters for every SSL torrent and flags
# the torrent with an error without them. These are the fixed, published
# ffdhe2048 group of RFC 7919 (what `openssl genpkey -genparam -algorithm DH
# -pkeyopt group:ffdhe2048` prints), so nothing has to be generated per run.
FFDHE2048_PEM = '''\
-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
'''


def part_name(dest):
    """The hidden name beside dest that holds data until it is complete."""
    return '.%s.p2p-part' % os.path.basename(dest)


def reserve_space(path, size):
    """Create the hidden part file with all its blocks allocated, so that
    "disk full" is one clear error now and not a failure mid-download
    (libtorrent itself allocates only when it first writes, which can be
    after another process has taken the space). Returns True when the file
    is new; an existing one holds a partial download to resume."""
    created = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if created:
            os.unlink(path)
        raise OSError(exc.errno, 'cannot allocate %s (%d bytes): %s' % (path, size, exc.strerror))
    finally:
        os.close(fd)
    return created


def free_port(low=20000, high=60000, tries=50, preferred=0):
    """A TCP port free on IPv4 and IPv6 alike: with port 0 libtorrent would
    pick one per family, but the tracker learns only one port per peer.
    `preferred` is tried first: the port other hosts were told to try."""
    candidates = random.sample(range(low, high + 1), tries)
    for port in ([preferred] if preferred else []) + candidates:
        try:
            for family, address in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):
                if family == socket.AF_INET6 and not socket.has_ipv6:
                    continue
                with socket.socket(family, socket.SOCK_STREAM) as probe:
                    if family == socket.AF_INET6:
                        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:   # no IPv6 on this host: IPv4 decides
                return port
            continue
        return port
    return 0


def listen_interfaces(address, port, preferred=0):
    """libtorrent's listen_interfaces: both families unless one address is given."""
    if address and address not in ('0.0.0.0', '::'):
        return '%s:%d' % ('[%s]' % address if ':' in address else address, port)
    port = port or free_port(preferred=preferred)
    return '0.0.0.0:%d,[::]:%d' % (port, port)


def peer_endpoints(entries):
    """[(ip, port)] from 'address:port' / '[v6]:port' / 'name:port' strings.

    The peers the module was given from the inventory: the agent connects
    to them itself, so the swarm forms even where the tracker is slow or
    out of reach. Entries that do not parse or resolve are skipped.
    """
    found = []
    for entry in entries or []:
        host, _sep, port = str(entry).rpartition(':')
        host = host.strip('[]')
        try:
            port = int(port)
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except (ValueError, socket.error, UnicodeError):
            continue
        address = infos[0][4][0].split('%', 1)[0]
        if (address, port) not in found:
            found.append((address, port))
    return found


def with_outcome(url, outcome, error=None):
    """The announce URL that carries this agent's verdict to the tracker."""
    fields = {'p2p_outcome': outcome}
    if error:
        fields['p2p_error'] = error[:300]
    return with_query(url, fields)


def session_settings(job):
    """libtorrent settings for a private datacenter swarm.

    libtorrent's defaults are tuned for the internet: discovery that calls
    out (DHT, LSD, UPnP, NAT-PMP), one connection per IP, a 5 minute minimum
    announce interval, few unchoke slots, and uTP, which costs about twice the
    CPU of TCP on a LAN. Everything here stays inside the swarm.
    """
    listen = listen_interfaces(job.get('listen_address'), int(job.get('listen_port') or 0),
                               int(job.get('preferred_port') or 0))
    if job.get('ssl'):
        # An SSL torrent talks to its peers over TLS only, on an SSL listen
        # socket (the 's' suffix); libtorrent announces that port for it.
        listen = ','.join(part + 's' for part in listen.split(','))
    return {
        'listen_interfaces': listen,
        'enable_dht': False,
        'enable_lsd': False,
        'enable_upnp': False,
        'enable_natpmp': False,
        'dht_bootstrap_nodes': '',
        'enable_ip_notifier': False,
        'enable_outgoing_utp': False,
        'enable_incoming_utp': False,
        'allow_multiple_connections_per_ip': True,
        'min_announce_interval': 1,
        'announce_to_all_trackers': True,
        'announce_to_all_tiers': True,
        'stop_tracker_timeout': 2,
        'tracker_completion_timeout': 10,
        'tracker_receive_timeout': 5,
        # A listed peer refuses until its agent starts (the seed joins last):
        # try it again within seconds, and never drop it from the list.
        'min_reconnect_time': 2,
        'max_failcount': 1000,
        'connections_limit': 400,
        'unchoke_slots_limit': 64,
        'active_downloads': -1,
        'active_seeds': -1,
        'active_limit': -1,
        'max_out_request_queue': 1500,
        'request_queue_time': 2,
        'upload_rate_limit': int(job.get('upload_rate') or 0),
        'download_rate_limit': int(job.get('download_rate') or 0),
        'user_agent': 'p2p.swarm-agent/libtorrent-%s' % (lt.__version__ if lt else '?'),
        # Striping keeps some pieces unwanted for a while; a torrent whose
        # wanted pieces are all in would otherwise drop its seed connections.
        'close_redundant_connections': not job.get('stripe_count'),
        # The tracker usually runs on the seeder's host: shutting the seeder
        # out (an ip filter rule) must not cut the tracker off.
        'apply_ip_filter_to_trackers': not job.get('stripe_count'),
        'peer_fingerprint': SEED_FINGERPRINT if job.get('seed') else PEER_FINGERPRINT,
        'alert_mask': (lt.alert.category_t.error_notification
                       | lt.alert.category_t.status_notification
                       | lt.alert.category_t.storage_notification
                       | lt.alert.category_t.peer_notification
                       | lt.alert.category_t.tracker_notification) if lt else 0,
    }


def with_query(url, fields):
    """An HTTP(S) announce URL with `fields` added to its query; others unchanged."""
    if not url.startswith(('http://', 'https://')):
        return url
    parts = urlsplit(url)
    extra = urlencode(fields)
    query = parts.query + '&' + extra if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def tracker_url_for(url, peer_name):
    """Add p2p_host=<inventory name> so the tracker can map peers to hosts."""
    return with_query(url, {'p2p_host': peer_name}) if peer_name else url


def tracker_addresses(urls):
    """IP addresses of the trackers' hosts, so an ip filter never cuts them off."""
    found = set()
    for url in urls:
        try:
            host, port = urlsplit(url).hostname, urlsplit(url).port or 80
            if not host:
                continue
            for info in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
                found.add(info[4][0].split('%', 1)[0])
        except (ValueError, TypeError, socket.error, UnicodeError):
            continue   # a malformed or unresolvable URL: the tracker errors say why
    return sorted(found)


def allowed_ranges(networks):
    """[(first, last)] address ranges of the allowed networks (CIDR strings)."""
    ranges = []
    for text in networks:
        net = ipaddress.ip_network(text, strict=False)
        ranges.append((str(net[0]), str(net[-1])))
    return ranges


def apply_rate_limits_to_lan(session):
    """Put every peer in the global peer class, the one the rate limits apply to.

    libtorrent exempts peers on local networks (10/8, 192.168/16, ...) from
    the session's rate limits; in a datacenter every peer is local, so the
    upload/download limits an operator sets would otherwise do nothing.
    """
    classes = lt.ip_filter()
    everyone = 1 << lt.session.global_peer_class_id
    classes.add_rule('0.0.0.0', '255.255.255.255', everyone)
    classes.add_rule('::', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', everyone)
    session.set_peer_class_filter(classes)


def build_ip_filter(networks):
    """A libtorrent ip filter that refuses every address but the given networks.

    libtorrent applies it to incoming and outgoing peer connections alike,
    so a host outside the run can neither fetch nor offer data.
    """
    ip_filter = lt.ip_filter()
    ip_filter.add_rule('0.0.0.0', '255.255.255.255', 1)
    ip_filter.add_rule('::', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 1)
    for first, last in allowed_ranges(networks):   # later rules win where they overlap
        ip_filter.add_rule(first, last, 0)
    return ip_filter


def write_json_atomic(path, data):
    tmp = '%s.tmp.%d' % (path, os.getpid())
    with open(tmp, 'w') as handle:
        json.dump(data, handle, sort_keys=True)
    os.rename(tmp, path)


class StripePicker(object):
    """Piece priorities that get each piece out of the seeder about once.

    In a naive swarm every peer asks the seeder for the same rare pieces, so
    the seeder uploads about twice the file and its uplink sets the pace.
    Here download peer `index` of `count` owns a stripe, the pieces p with
    p % count == index:

    - it fetches its own stripe first (top priority); only the seeder has
      those pieces at the start, so the seeder sends each piece to one peer;
    - every other piece stays at priority 0 (not wanted) until some peer
      other than the seeder holds it, then becomes normal priority and comes
      from that peer (rarest first); a released piece stays released;
    - once its own stripe is complete the peer takes no more data from the
      seeder (update() says block_seeder; the agent shuts the seeder out),
      since everything else is, or soon will be, at other peers.

    Safety net: if the seeder is shut out and no new piece has arrived for
    `stall` seconds (the owner of some stripe died or never started),
    striping is given up for good: every piece gets normal priority and the
    seeder is let back in, i.e. a plain swarm. While the tracker counts
    fewer downloaders than stripes and the last one joined less than
    `join_quiet` seconds ago, the owners are still starting: the peer keeps
    waiting for them rather than pull their stripes from the seeder too.
    Pure logic, no libtorrent.
    """

    OWN, RELEASED, HELD_BACK, NORMAL = 7, 1, 0, 4

    def __init__(self, num_pieces, index, count, stall=STRIPE_STALL, join_quiet=STRIPE_JOIN_QUIET):
        self.hosts = int(count)
        # More stripes than pieces would leave some peers an empty stripe.
        count = max(1, min(int(count), int(num_pieces)))
        self.num_pieces = int(num_pieces)
        self.index = int(index) % count
        self.count = count
        self.stall = stall
        self.own = [p for p in range(self.num_pieces) if p % count == self.index]
        self.released = [p % count == self.index for p in range(self.num_pieces)]
        self.active = True
        self.applied = False          # the first update always returns priorities
        self.have_count = -1
        self.last_progress = None
        self.join_quiet = join_quiet
        self.joined = None
        self.last_join = None

    def priorities(self):
        if not self.active:
            return [self.NORMAL] * self.num_pieces
        own = set(self.own)
        return [self.OWN if p in own else self.RELEASED if self.released[p] else self.HELD_BACK
                for p in range(self.num_pieces)]

    def owners_still_joining(self, joined, now):
        """joined: downloaders the tracker counts (None when it has not said).
        Only a rise is a join; hosts leaving at the end must not look like one."""
        if joined is not None and (self.joined is None or joined > self.joined):
            self.joined, self.last_join = joined, now
        return (self.joined is not None and self.joined < self.hosts
                and now - self.last_join < self.join_quiet)

    def update(self, have, held_elsewhere, now, joined=None):
        """One decision from what we have and what peers other than the seeder hold.

        have, held_elsewhere: one bool per piece; joined: how many downloaders
        the tracker counts, if known. Returns (priorities, block_seeder):
        the new priority list, or None when nothing changed since the last call,
        and whether the seeder must be shut out now.
        """
        if not self.active:
            return None, False
        changed = not self.applied
        for piece, held in enumerate(held_elsewhere):
            if held and not self.released[piece]:
                self.released[piece] = True
                changed = True
        count = sum(1 for h in have if h)
        if count != self.have_count:
            self.have_count, self.last_progress = count, now
        block = count < self.num_pieces and all(have[p] for p in self.own)
        joining = self.owners_still_joining(joined, now)
        if block and now - self.last_progress >= self.stall and not joining:
            self.active = False
            return self.priorities(), False
        self.applied = True
        return (self.priorities() if changed else None), block


class Agent(object):
    """Drives one torrent from start to exit; see run() for the loop."""

    def __init__(self, job):
        self.job = job
        self.seed = bool(job.get('seed'))
        self.dest = job['dest']
        self.started = time.time()
        self.placed_at = None
        self.swarm_done_since = None
        self.announced_ok = False
        self.last_tracker_error = None
        self.last_reply_at = None     # when the tracker last answered
        self.failing_since = None     # first failed announce since its last answer
        self.last_peer_at = None      # last tick with at least one peer connected
        self.stop_requested = False
        self.status = {
            'pid': os.getpid(), 'run_id': job.get('run_id'), 'state': 'starting',
            'dest': self.dest, 'seed': self.seed, 'placed': False,
            'error': None, 'started_at': self.started, 'progress': 0.0,
        }
        self.session = None
        self.handle = None
        self.picker = None            # StripePicker when the job asks for striping
        self.part_missing_since = None
        self.new_part = None          # the part file this run created, while it holds no data
        self.seeder_shut_out = False
        self.open_filter = None       # the ip filter from before the seeder was shut out
        self.listed_peers = []        # (ip, port) from the inventory, see peer_endpoints()
        self.peers_tried_at = 0.0
        self.trackers = []            # announce URLs as given to libtorrent

    # -- set-up ---------------------------------------------------------
    def start(self):
        ti = lt.torrent_info(self.job['torrent'])
        # An SSL torrent carries the root certificate of the run's CA.
        self.job['ssl'] = bool(ti.ssl_cert())
        self.status['ssl'] = self.job['ssl']
        if self.job['ssl'] and not (self.job.get('ssl_cert') and self.job.get('ssl_key')):
            raise ValueError('the torrent is an SSL torrent and no ssl_cert/ssl_key was given')
        settings = session_settings(self.job)
        # The port other hosts can reach us on (the seed is told it by the role).
        port = settings['listen_interfaces'].split(',')[0].rsplit(':', 1)[1].rstrip('s')   # 's': TLS only
        self.status['listen_port'] = int(port) or None
        self.session = lt.session(settings)
        apply_rate_limits_to_lan(self.session)
        if self.job.get('allowed_peers'):
            allowed = list(self.job['allowed_peers'])
            allowed += tracker_addresses([t.url for t in ti.trackers()])
            self.session.set_ip_filter(build_ip_filter(allowed))
        params = lt.add_torrent_params()
        params.ti = ti
        params.save_path = os.path.dirname(self.dest)
        name = os.path.basename(self.dest) if self.seed else part_name(self.dest)
        params.renamed_files = {0: name}
        params.storage_mode = lt.storage_mode_t.storage_mode_allocate
        if not self.seed and reserve_space(os.path.join(params.save_path, name), ti.total_size()):
            # A file just created holds no piece: nothing to check.
            params.flags |= lt.torrent_flags.no_verify_files
            self.new_part = os.path.join(params.save_path, name)
        self.trackers = [tracker_url_for(t.url, self.job.get('peer_name')) for t in ti.trackers()]
        params.trackers = list(self.trackers)
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        params.flags |= lt.torrent_flags.override_trackers
        if self.seed:
            # The seeder's copy was just hashed by p2p_torrent; seed mode
            # verifies each piece lazily the first time it is uploaded.
            params.flags |= lt.torrent_flags.seed_mode
        elif int(self.job.get('stripe_count') or 0) > 1:
            self.picker = StripePicker(ti.num_pieces(), self.job.get('stripe_index') or 0,
                                       self.job['stripe_count'])
            # Priorities from the first request on, not a moment after.
            params.piece_priorities = self.picker.priorities()
        self.handle = self.session.add_torrent(params)
        if self.job['ssl']:
            # This host's certificate, signed by the CA in the torrent; peers
            # without one from that CA fail the TLS handshake both ways.
            if hasattr(self.handle, 'set_ssl_certificate_buffer'):   # libtorrent >= 2.1's binding
                with open(self.job['ssl_cert']) as cert, open(self.job['ssl_key']) as key:
                    self.handle.set_ssl_certificate_buffer(cert.read(), key.read(), FFDHE2048_PEM)
            else:
                # 2.0.x's binding takes file paths only, the DH parameters too.
                dh_params = os.path.join(self.job['job_dir'], 'dhparams.pem')
                with open(dh_params, 'w') as handle:
                    handle.write(FFDHE2048_PEM)
                self.handle.set_ssl_certificate(self.job['ssl_cert'], self.job['ssl_key'], dh_params)
        self.listed_peers = peer_endpoints(self.job.get('peers'))
        self.connect_listed_peers()

    def connect_listed_peers(self):
        """Reach out to the listed peers we hold no connection to. libtorrent
        ignores a peer it is connected to already; a refused attempt (agent not
        started yet) is tried again on a later tick while data is missing."""
        if not self.listed_peers or self.handle is None:
            return
        self.peers_tried_at = time.time()
        connected = set((peer.ip[0], peer.ip[1]) for peer in self.handle.get_peer_info())
        for endpoint in self.listed_peers:
            if endpoint not in connected:
                self.handle.connect_peer(endpoint)

    def report_outcome(self, outcome, error=None):
        """Carry the verdict in every later announce (the next one is sent
        now; a failing agent's 'stopped' at exit carries it too)."""
        if self.handle is None or not self.trackers:
            return
        try:
            self.handle.replace_trackers([lt.announce_entry(with_outcome(url, outcome, error))
                                         for url in self.trackers])
            self.handle.force_reannounce()
        except (RuntimeError, TypeError, AttributeError) as exc:  # the verdict still reaches the module
            self.status['outcome_report_error'] = str(exc)

    # -- events ---------------------------------------------------------
    def on_alert(self, alert):
        if isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
            self.fail('%s' % alert.message(), fatal_storage=True)
        elif isinstance(alert, lt.file_rename_failed_alert):
            self.fail('could not rename into %s: %s' % (self.dest, alert.message()))
        elif isinstance(alert, lt.file_renamed_alert):
            self.placed_at = time.time()
            self.status.update(placed=True, placed_at=self.placed_at)
            self.write_placed_stamp()
            self.report_outcome('placed')
        elif isinstance(alert, lt.hash_failed_alert):
            # Corrupt data never reaches dest: the piece is dropped and fetched again.
            self.status['hash_failures'] = self.status.get('hash_failures', 0) + 1
        elif isinstance(alert, lt.peer_ban_alert):
            # libtorrent bans a peer whose data failed the hash check.
            banned = self.status.setdefault('banned_peers', [])
            if alert.ip[0] not in banned:
                banned.append(alert.ip[0])
        elif isinstance(alert, lt.tracker_reply_alert):
            self.announced_ok = True
            self.last_reply_at = time.time()
            self.failing_since = None
        elif isinstance(alert, lt.tracker_error_alert):
            url = alert.tracker_url().split('?', 1)[0]
            # The tracker's own words ("unregistered torrent") say more than
            # libtorrent's generic "tracker sent a failure message".
            reason = alert.failure_reason() or alert.error.message()
            self.last_tracker_error = '%s: %s' % (url, reason)
            if 'abort' not in reason.lower():   # replace_trackers() aborts the announce in flight
                self.failing_since = self.failing_since or time.time()

    def place(self):
        """Give the complete, hash-checked data its final name and attributes."""
        part = os.path.join(os.path.dirname(self.dest), part_name(self.dest))
        if not os.path.exists(part):
            # libtorrent hashes the last piece from its write buffer and may
            # report the download complete a moment before its disk thread
            # has created the file: try again on the next tick.
            self.part_missing_since = self.part_missing_since or time.time()
            if time.time() - self.part_missing_since < PART_FILE_GRACE:
                return
        try:
            owner, group = self.job.get('owner'), self.job.get('group')
            if owner is not None or group is not None:
                os.chown(part, -1 if owner is None else owner, -1 if group is None else group)
            mode = self.job.get('mode')
            os.chmod(part, mode if mode is not None else 0o644)
        except OSError as exc:
            self.fail('cannot set owner/mode on %s: %s' % (part, exc))
            return
        self.status['state'] = 'finishing'
        # libtorrent renames with rename(2) and keeps seeding from the new name.
        self.handle.rename_file(0, os.path.basename(self.dest))

    def write_placed_stamp(self):
        """Record what was placed so a rerun can skip re-hashing an untouched file."""
        try:
            st = os.stat(self.dest)
        except OSError:
            return
        stamp = {'dest': self.dest, 'size': st.st_size, 'mtime_ns': st.st_mtime_ns,
                 'ino': st.st_ino, 'placed_at': self.placed_at}
        write_json_atomic(os.path.join(self.job['job_dir'], 'placed.json'), stamp)

    def fail(self, message, fatal_storage=False):
        if self.status['state'] == 'failed':
            return
        self.status.update(state='failed', error=message)
        self.report_outcome('failed', message)
        if fatal_storage and self.handle is not None and not self.seed:
            # Nothing half-written stays behind after a storage error (disk
            # full, I/O error): drop the torrent and its hidden partial file.
            self.session.remove_torrent(self.handle, lt.session.delete_files)
            self.handle = None

    # -- main loop ------------------------------------------------------
    def tick(self):
        for alert in self.session.pop_alerts():
            self.on_alert(alert)
        if self.handle is None or self.status['state'] == 'failed':
            return
        st = self.handle.status()
        # st.progress is relative to the *wanted* pieces; with striped piece
        # priorities most are unwanted at first, so report the whole file's share.
        total = float(st.total)
        if 'resumed' not in self.status and not self.seed and st.state not in (
                lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data):
            # Verified bytes found on disk at start: what an interrupted run left.
            self.status['resumed'] = st.total_done
        self.status.update(
            progress=round(min(1.0, st.total_done / total), 4) if total else round(st.progress, 4),
            downloaded=st.total_payload_download,
            uploaded=st.all_time_upload, download_rate=st.download_payload_rate,
            upload_rate=st.upload_payload_rate, peers=st.num_peers, seeds=st.num_seeds,
            swarm_incomplete=st.num_incomplete, swarm_complete=st.num_complete,
            tracker_error=self.last_tracker_error, tracker_ok=self.announced_ok)
        if st.num_peers > 0:
            self.last_peer_at = time.time()
        if st.errc.value():
            self.fail(st.errc.message(), fatal_storage=True)
            return

        if st.state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data):
            self.status['state'] = 'checking'
        elif not st.is_seeding:
            self.status['state'] = 'downloading'
            self.steer_stripes(st)
            if time.time() - self.peers_tried_at >= PEER_RETRY:
                self.connect_listed_peers()
        elif self.seed or self.status['placed']:
            self.status['state'] = 'seeding'
        elif self.status['state'] != 'finishing':
            self.place()
        self.watch_swarm(st)

    def steer_stripes(self, st):
        """Feed the StripePicker and apply what it decides."""
        if self.picker is None or not self.picker.active:
            return
        seeders, others, seeder_connections = set(), set(), 0
        for peer in self.handle.get_peer_info():
            if peer.pid.to_bytes().startswith(SEED_FINGERPRINT.encode('ascii')):
                seeders.add(peer.ip[0])
                seeder_connections += 1
            else:
                others.add(peer.ip[0])
        # Availability counts every connection to a peer that has the piece,
        # seeds included; take the original seeder's connections off.
        avail = self.handle.piece_availability()
        held_elsewhere = [count > seeder_connections for count in avail] if avail else []
        have = self.handle.status(lt.torrent_handle.query_pieces).pieces
        # The tracker's counts include the original seeder (-1 when it sent none).
        joined = st.num_incomplete + st.num_complete - 1 if min(st.num_incomplete, st.num_complete) >= 0 else None
        priorities, shut_out = self.picker.update(have, held_elsewhere, time.time(), joined)
        if priorities is not None:
            self.handle.prioritize_pieces(priorities)
        # An address shared with another peer (agents on one machine) is never shut out.
        self.shut_out_seeder(seeders - others if shut_out else set())
        self.status['striping'] = 'on' if self.picker.active else 'given up'

    def shut_out_seeder(self, addresses):
        """Refuse the seeder's address(es) (libtorrent drops the connection
        at once), or let it back in when addresses is empty."""
        if addresses and not self.seeder_shut_out:
            self.open_filter = self.session.get_ip_filter()
            closed = self.session.get_ip_filter()
            for address in addresses:
                closed.add_rule(address, address, 1)
            self.session.set_ip_filter(closed)
            self.seeder_shut_out = True
        elif not addresses and self.seeder_shut_out and not self.picker.active:
            self.session.set_ip_filter(self.open_filter)
            self.seeder_shut_out = False

    def watch_swarm(self, st):
        """Note when the tracker says every peer is complete."""
        if self.status['state'] != 'seeding':
            return
        if st.num_incomplete == 0 and st.num_complete > 0:
            if self.swarm_done_since is None:
                self.swarm_done_since = time.time()
        else:
            self.swarm_done_since = None

    def exit_reason(self):
        """Why the agent should stop now, or None to keep going."""
        now = time.time()
        state = self.status['state']
        if self.stop_requested:
            return 'stopped on request'
        if state == 'failed':
            return 'failed'
        if now - self.started > float(self.job.get('lifetime') or 7200):
            if not (self.seed or self.status['placed']):
                self.fail('timed out after %d s at %.1f%%' % (now - self.started, 100 * self.status['progress']))
            return 'lifetime over'
        grace = float(self.job.get('tracker_grace') or 60)
        # Alone: no answer from the tracker ever, and no peer (listed or not) for `grace` seconds.
        if (not self.announced_ok and state != 'seeding'
                and now - (self.last_peer_at or self.started) > grace):
            self.fail('tracker unreachable and no peer for %d s: %s' % (grace, self.last_tracker_error or 'no answer'))
            return 'failed'
        if state == 'seeding' and not self.seed:
            if self.swarm_done_since and now - self.swarm_done_since >= SWARM_DONE_HOLD:
                return 'swarm complete'
            if self.tracker_gone_since(self.placed_at):
                # The run stops its tracker once every host is done.
                return 'tracker stopped'
            if self.placed_at and now - self.placed_at > float(self.job.get('linger') or 0):
                return 'linger time over'
        return None

    def tracker_gone_since(self, moment):
        """The tracker answered once, and has failed every announce for
        TRACKER_GONE_AFTER seconds, starting after `moment`."""
        return (moment is not None and self.announced_ok and self.failing_since is not None
                and self.failing_since > moment and time.time() - self.failing_since >= TRACKER_GONE_AFTER)

    def write_status(self):
        self.status['updated_at'] = time.time()
        write_json_atomic(self.job['status_path'], self.status)

    def wait(self):
        """Sleep until the next tick.

        Not session.wait_for_alert(): its Python binding wraps the alert it
        returns, and in libtorrent 2.0.x (Debian 12's 2.0.8) that alert can be
        freed by the network thread meanwhile: agents died of SIGSEGV in the
        binding's dynamic_cast at random (a core dump showed where), about one
        agent in a few hundred.
        Polling costs at most one tick of delay before a host places its file.
        """
        striping = self.picker is not None and self.picker.active and self.status['state'] == 'downloading'
        time.sleep(STRIPE_EVERY if striping else TICK)

    def run(self):
        def request_stop(signum, frame):
            self.stop_requested = True
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            self.start()
        except Exception as exc:  # bad torrent, unusable dest dir: report, do not crash silently
            self.status.update(state='failed', error='cannot start: %s' % exc)
            self.write_status()
            return 1
        reason = None
        while reason is None:
            self.tick()
            self.write_status()
            reason = self.exit_reason()
            if reason is None:
                self.wait()
        if self.status['state'] not in ('failed',):
            self.status['state'] = 'done' if (self.seed or self.status['placed']) else 'stopped'
        self.status['exit_reason'] = reason
        self.status['exited_at'] = time.time()
        self.write_status()
        # Dropping the session sends the tracker a 'stopped' event (bounded
        # by stop_tracker_timeout) and closes files.
        self.handle = None
        self.session = None
        if self.new_part and not self.status.get('downloaded') and os.path.exists(self.new_part):
            # A run that got no data (tracker unreachable, stopped early)
            # leaves nothing behind; one with data keeps it for a rerun.
            os.unlink(self.new_part)
        return 0 if self.status['state'] != 'failed' else 1


def main(argv):
    if len(argv) != 2:
        sys.stderr.write('usage: agent.py JOB.json\n')
        return 2
    with open(argv[1]) as handle:
        job = json.load(handle)
    if lt is None:
        sys.stderr.write('libtorrent is not importable by %s\n' % sys.executable)
        return 2
    os.umask(0o077)  # partial data is nobody else's business until placed
    # A crash inside libtorrent leaves no Python traceback; this puts the
    # fatal signal and the Python stack into the log the module quotes.
    faulthandler.enable()
    # libtorrent's deprecation notices would crowd the log tail that error messages quote.
    warnings.simplefilter('ignore', DeprecationWarning)
    return Agent(job).run()


if __name__ == '__main__':
    sys.exit(main(sys.argv))

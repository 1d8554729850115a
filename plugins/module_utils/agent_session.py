# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's libtorrent session set-up: settings, listen addresses and
ports, the peers it is given, announce URLs, ip filters.

Standard library and libtorrent only: shipped to the host beside agent.py
(agent.script_files()).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import ipaddress
import random
import socket

try:
    from urllib.parse import urlsplit, urlunsplit, urlencode
except ImportError:  # pragma: no cover - python 2 is not supported on hosts
    urlsplit = urlunsplit = urlencode = None

try:
    import libtorrent as lt
except ImportError:  # the module reports a missing libtorrent before starting us
    lt = None

# The seeding agent's peer-id prefix, so download agents can tell the
# original seeder from peers that finished (see StripePicker).
SEED_FINGERPRINT = '-PS0001-'
PEER_FINGERPRINT = '-PP0001-'
# Peers served at once: every host of a lab-sized swarm, 64 at a time beyond.
UNCHOKE_SLOTS = 64
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
                    # As libtorrent binds: connections of an earlier agent still
                    # in TIME_WAIT on the port must not make it look taken.
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    settings = {
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
        # The seed joins last and connects to every started agent at once;
        # at libtorrent's 30 new connections a second a 40-host swarm waited
        # up to 5 s for its seeder (the agents' own retry).
        'connection_speed': 200,
        'connections_limit': 400,
        'unchoke_slots_limit': UNCHOKE_SLOTS,
        # A choked peer may still fetch a few "allowed fast" pieces (a
        # BitTorrent extension): from a held seed that is data before release.
        'allowed_fast_set_size': 0 if job.get('seed') else 5,
        'active_downloads': -1,
        'active_seeds': -1,
        'active_limit': -1,
        'max_out_request_queue': 1500,
        # One second of requests per peer is plenty inside a datacenter. A
        # deeper queue to the seeder fills up with pieces other peers already
        # hold once a host's own stripe is all requested, and what is still
        # in flight when the host shuts the seeder out is sent for nothing:
        # at 40 hosts 2 s made the seeder send 1.6-1.8x the file, 1 s 1.4-1.5x.
        'request_queue_time': 1,
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
    address = job.get('listen_address')
    if address and address not in ('0.0.0.0', '::'):
        # Bound to one address: connect from it too, so that peers (a held
        # seed counting hosts, ip filters) see one address per agent.
        settings['outgoing_interfaces'] = address
    return settings


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

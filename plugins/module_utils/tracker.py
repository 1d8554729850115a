# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small HTTP BitTorrent tracker for a private swarm (standard library only).

It ships in module_utils so it travels with the collection, and the
p2p_tracker module writes it to disk and runs it as a script with the
host's python3 (3.9 or later, nothing else installed):

    python3 -I tracker.py --bind 0.0.0.0 --port 6969 --state-dir DIR [--interval 2]

This file is the entry point; the work is split by job into files that sit
next to it, in module_utils and in the state directory alike (the module
writes every file script_files() names):

    tracker_bencode.py   bencoding
    tracker_registry.py  torrents.json: registrations, claims of runs, allow lists
    tracker_requests.py  announce and scrape parsing, client addresses
    tracker_status.py    status.json and Prometheus metrics
    tracker_swarm.py     registrations, peers, announces, peer selection
    tracker_page.py      the live HTML page
    tracker_http.py      the HTTP server: one asyncio event loop, keep-alive

Run as a script (python3 -I leaves the script's directory off sys.path) it
puts its own directory first on sys.path and imports them from there.

Endpoints: /announce (BEP 3, compact peers BEP 23, peers6 BEP 7), /scrape
(BEP 48), /status.json (per-peer progress for the controller), /metrics
(Prometheus text) and / (a live HTML view of the swarm).

Only info-hashes listed in <state-dir>/torrents.json are served; the file is
re-read when it changes, which is how the module registers torrents. With
no registration left (the last run released its claim, or its lease ran
out) and no keep-running file, the tracker ends.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import asyncio
import errno
import ipaddress
import logging
import os
import signal
import sys
import time

if __package__:   # imported from the collection (the module, tests)
    from ansible_collections.p2p.swarm.plugins.module_utils import tracker_bencode
    from ansible_collections.p2p.swarm.plugins.module_utils import tracker_http
    from ansible_collections.p2p.swarm.plugins.module_utils import tracker_page
    from ansible_collections.p2p.swarm.plugins.module_utils import tracker_registry
    from ansible_collections.p2p.swarm.plugins.module_utils import tracker_requests
    from ansible_collections.p2p.swarm.plugins.module_utils import tracker_status
    from ansible_collections.p2p.swarm.plugins.module_utils import tracker_swarm
else:             # the script on the host, its files side by side
    _HERE = os.path.dirname(os.path.abspath(__file__))
    if _HERE not in sys.path:
        sys.path.insert(0, _HERE)
        sys.dont_write_bytecode = True   # no __pycache__ in the state directory
    import tracker_bencode  # pylint: disable=import-error
    import tracker_http  # pylint: disable=import-error
    import tracker_page  # pylint: disable=import-error
    import tracker_registry  # pylint: disable=import-error
    import tracker_requests  # pylint: disable=import-error
    import tracker_status  # pylint: disable=import-error
    import tracker_swarm  # pylint: disable=import-error

# The names the rest of the collection and the tests use, from where they live.
bencode = tracker_bencode.bencode
failure = tracker_bencode.failure
BadRequest = tracker_requests.BadRequest
Peer = tracker_swarm.Peer
Swarm = tracker_swarm.Swarm
Torrent = tracker_swarm.Torrent
hash_key = tracker_swarm.hash_key
log = tracker_swarm.log
normalize_ip = tracker_requests.normalize_ip
parse_announce = tracker_requests.parse_announce
parse_query = tracker_requests.parse_query
parse_registrations = tracker_swarm.parse_registrations
parse_scrape = tracker_requests.parse_scrape
ANNOUNCE_BUDGET = tracker_swarm.ANNOUNCE_BUDGET
COUNTS_EVERY = tracker_swarm.COUNTS_EVERY
DEFAULT_INTERVAL = tracker_swarm.DEFAULT_INTERVAL
EXPIRY_MARGIN = tracker_swarm.EXPIRY_MARGIN
MAX_PEERS_PER_TORRENT = tracker_swarm.MAX_PEERS_PER_TORRENT
REGISTRATION_FILE = tracker_swarm.REGISTRATION_FILE
RELOAD_EVERY = tracker_swarm.RELOAD_EVERY
SAMPLE_ABOVE = tracker_swarm.SAMPLE_ABOVE
TrackerServer = tracker_http.TrackerServer
HEAD_DEADLINE = tracker_http.HEAD_DEADLINE
KEEPALIVE_IDLE = tracker_http.KEEPALIVE_IDLE
LISTEN_BACKLOG = tracker_http.LISTEN_BACKLOG
MAX_CONNECTIONS = tracker_http.MAX_CONNECTIONS
MAX_HEAD = tracker_http.MAX_HEAD
PAGE = tracker_page.PAGE


UNUSED_CHECK_EVERY = 1.0


def script_files():
    """[(file name, module)]: what the tracker script needs on a host, itself last."""
    return [('tracker_bencode.py', tracker_bencode), ('tracker_registry.py', tracker_registry),
            ('tracker_requests.py', tracker_requests), ('tracker_status.py', tracker_status),
            ('tracker_swarm.py', tracker_swarm), ('tracker_page.py', tracker_page),
            ('tracker_http.py', tracker_http), ('tracker.py', sys.modules[__name__])]


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
    tracker_http.raise_fd_limit()
    # asyncio reports a client vanishing mid-answer through logging: not news here.
    logging.getLogger('asyncio').setLevel(logging.CRITICAL)
    try:
        swarm = Swarm(args.state_dir, args.interval, allowed=allowed)
        server = tracker_http.HttpServer((args.bind, args.port), swarm)
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

        # Unused for a few announce intervals first: seeds hear "unregistered
        # torrent" from it (their cue to end) rather than a closed port.
        linger = 3 * args.interval + 1
        unused_since = []

        def end_when_unused():
            if not swarm.unused():
                del unused_since[:]
            elif not unused_since:
                unused_since.append(time.monotonic())
            elif time.monotonic() - unused_since[0] >= linger:
                log('no registration left: stopping')
                loop.stop()
                return
            loop.call_later(UNUSED_CHECK_EVERY, end_when_unused)
        loop.call_later(UNUSED_CHECK_EVERY, end_when_unused)
        log('started pid %d on %s:%d, state dir %s, interval %ds%s'
            % (os.getpid(), args.bind, server.server_address[1], args.state_dir, args.interval,
               ', peers only from %s' % ' '.join(allowed) if allowed else ''))
        loop.run_forever()
        loop.run_until_complete(server.stop())
    finally:
        loop.close()
    log('stopped pid %d' % os.getpid())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

# -*- coding: utf-8 -*-
"""Fixtures of the module tests: an agents' state dir that never leaves an
agent running, and a real tracker on loopback."""

import json
import urllib.request

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import daemon, jobs
from ansible_collections.p2p.swarm.plugins.module_utils.tracker import TrackerServer

from module_runner import TRACKER_IP


@pytest.fixture
def state_dir(tmp_path):
    """The agents' state dir; every agent still running under it is stopped afterwards."""
    path = str(tmp_path / 'state')
    yield path
    for job in jobs.all_jobs(path):
        pid = job.running_pid()
        if pid:
            job.stop(pid)


@pytest.fixture
def tracker(tmp_path):
    """The collection's tracker on TRACKER_IP. register(describe(torrent))
    lets a torrent in; peers() maps host names to what the tracker knows."""
    state = tmp_path / 'tracker'
    state.mkdir()
    server = TrackerServer(str(state), bind=TRACKER_IP, port=0).start()
    status_url = 'http://%s:%d/status.json' % (TRACKER_IP, server.port)

    def register(desc):
        # Both hashes of a hybrid torrent, as the peer role does: an agent
        # announces under each, and a refused one makes libtorrent back off.
        entry = {'name': desc['name'], 'size': desc['size'],
                 'aliases': [desc['info_hash_v2']] if desc['info_hash_v2'] else []}
        daemon.write_atomic(str(state / 'torrents.json'), json.dumps({desc['info_hash']: entry}))

    def peers():
        with urllib.request.urlopen(status_url, timeout=5) as resp:
            torrents = json.loads(resp.read().decode())['torrents']
        return dict((p['host'], p) for t in torrents.values() for p in t['peers'])

    server.register, server.peers = register, peers
    server.announce_url = 'http://%s:%d/announce' % (TRACKER_IP, server.port)
    try:
        yield server
    finally:
        server.stop()

"""The tracker in a big swarm: sampled peer lists, cached counts, stretched interval."""
import json
import socket

import libtorrent as lt
import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import tracker

HASH = 'ab' * 20


def packed(ip, port):
    return socket.inet_aton(ip) + port.to_bytes(2, 'big')


@pytest.fixture
def swarm(tmp_path):
    (tmp_path / 'torrents.json').write_text(json.dumps({HASH: {'name': 'big', 'size': 1000}}))
    now = [1000.0]
    the_swarm = tracker.Swarm(str(tmp_path), interval=2, clock=lambda: now[0])
    the_swarm.now = now
    return the_swarm


def announce(swarm, n, left=1000, numwant=50, event=''):
    return lt.bdecode(swarm.announce({
        'info_hash': bytes.fromhex(HASH), 'peer_id': b'-PP0001-%012d' % n, 'port': 10000 + n % 50000,
        'uploaded': 0, 'downloaded': 0, 'left': left, 'numwant': numwant, 'compact': True,
        'no_peer_id': True, 'event': event, 'ip': '10.%d.%d.%d' % (n >> 16 & 255, n >> 8 & 255, n & 255),
        'host': 'h%05d' % n}))


def fill(swarm, count, seeds=0):
    for n in range(count):
        announce(swarm, n, left=0 if n < seeds else 1000, event='started')


def test_a_big_swarm_still_gets_full_random_peer_lists(swarm):
    fill(swarm, 3000)
    lists = [announce(swarm, 7)[b'peers'] for dummy in range(3)]
    for peers in lists:
        assert len(peers) == 50 * 6
        assert packed('10.0.0.7', 10007) not in [peers[i:i + 6] for i in range(0, len(peers), 6)]
    assert len(set(lists)) > 1            # random, not always the same 50


def test_counts_in_a_big_swarm_are_at_most_a_second_old(swarm):
    fill(swarm, tracker.SAMPLE_ABOVE + 100)
    assert announce(swarm, 1)[b'incomplete'] == tracker.SAMPLE_ABOVE + 1     # counted when it got big
    swarm.now[0] += tracker.COUNTS_EVERY
    answer = announce(swarm, 1)
    assert (answer[b'complete'], answer[b'incomplete']) == (0, tracker.SAMPLE_ABOVE + 100)
    announce(swarm, 2, left=0, event='completed')
    assert announce(swarm, 3)[b'complete'] == 0          # cached
    swarm.now[0] += tracker.COUNTS_EVERY
    assert announce(swarm, 3)[b'complete'] == 1


def test_a_seeder_in_a_big_swarm_gets_only_downloaders(swarm):
    fill(swarm, 1000, seeds=900)
    peers = announce(swarm, 5, left=0)[b'peers']
    downloaders = set(packed('10.0.%d.%d' % (n >> 8, n & 255), 10000 + n) for n in range(900, 1000))
    got = [peers[i:i + 6] for i in range(0, len(peers), 6)]
    assert got and all(p in downloaders for p in got)


def test_interval_stretches_with_the_swarm_and_peers_expire_later(swarm):
    assert announce(swarm, 0, event='started')[b'interval'] == 2
    fill(swarm, 2000)
    swarm.now[0] += tracker.COUNTS_EVERY
    answer = announce(swarm, 1)
    expected = -(-2000 // tracker.ANNOUNCE_BUDGET)
    assert answer[b'interval'] == answer[b'min interval'] == max(2, expected)
    assert swarm.ttl >= 3 * expected
    # A peer silent for longer than the old ttl but within the new one is still listed.
    swarm.now[0] += 3 * 2 + tracker.EXPIRY_MARGIN + 1
    assert announce(swarm, 1)[b'incomplete'] == 2000


def test_small_swarms_keep_exact_answers_and_the_configured_interval(swarm):
    fill(swarm, 10)
    answer = announce(swarm, 3, numwant=200)
    assert len(answer[b'peers']) == 9 * 6
    assert answer[b'interval'] == 2
    announce(swarm, 4, left=0, event='completed')
    assert announce(swarm, 3)[b'complete'] == 1


def test_status_json_pieces_match_status_through_changes(swarm):
    fill(swarm, 600, seeds=10)
    assert json.loads(swarm.status_json()) == swarm.status()
    announce(swarm, 20, left=0, event='completed')       # a cached piece must change
    announce(swarm, 21, event='stopped')
    swarm.now[0] += 30                                   # and states move on with the clock
    announce(swarm, 22)
    assert json.loads(swarm.status_json()) == swarm.status()
    swarm.now[0] += 3600                                 # all expired, but a stopped one stays stopped
    status = json.loads(swarm.status_json())
    assert status == swarm.status()
    states = [p['state'] for p in status['torrents'][HASH]['peers']]
    assert states.count('stopped') == 1 and states.count('expired') == 599

# -*- coding: utf-8 -*-
"""p2p_wait: the pure judging functions, the wait loop on a fake clock, and
the real thing against an in-process tracker (and through ansible-playbook)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from urllib.parse import quote_from_bytes

import pytest

from ansible_collections.p2p.swarm.plugins.action import p2p_wait as pw
from ansible_collections.p2p.swarm.plugins.module_utils import tracker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
V1 = 'ab' * 20
V2 = 'cd' * 32
URL = 'http://tracker.test:6969/status.json'


def peer(host, left, state=None, size=1000, first_seen=100.0, last_seen=100.0, completed_at=None,
         outcome='', error=None):
    if state is None:
        state = 'complete' if left == 0 else 'downloading'
    if outcome == '':   # an agent reports 'placed' right after completing
        outcome = 'placed' if left == 0 else None
    return {'host': host, 'ip': '10.0.0.1', 'port': 6881, 'left': left, 'uploaded': 0,
            'downloaded': size - left, 'state': state, 'first_seen': first_seen,
            'last_seen': last_seen, 'completed_at': completed_at, 'outcome': outcome, 'error': error}


def make_status(peers, now=200.0, size=1000, name='rel.tgz'):
    return {'time': now, 'torrents': {V1: {'name': name, 'size': size, 'info_hashes': [V1, V2],
                                           'complete': 0, 'incomplete': 0, 'peers': peers}}}


# ----------------------------------------------------------- pure functions

def test_find_torrent_by_any_form():
    status = make_status([])
    for form in (V1, V1.upper(), V2, V2[:40]):
        assert pw.find_torrent(status, form)[0] == V1
    assert pw.find_torrent(status, 'ef' * 20) == (None, None)
    v2_only = {'time': 1, 'torrents': {V2: {'name': 'x', 'peers': []}}}
    assert pw.find_torrent(v2_only, V2[:40])[0] == V2


def test_peer_percent():
    assert pw.peer_percent({'left': 250}, 1000) == 75.0
    assert pw.peer_percent({'left': 70, 'downloaded': 30}, None) == 30.0
    assert pw.peer_percent({'left': 0, 'downloaded': 0}, None) == 100.0
    assert pw.peer_percent({'left': 5000}, 1000) == 0.0


def test_outcomes_reported_by_agents():
    peers = [
        peer('placed', 0, completed_at=190, last_seen=195),
        peer('placing', 0, completed_at=195, last_seen=195, outcome=None),
        peer('old-agent', 0, completed_at=150, last_seen=150, outcome=None),
        peer('failed', 300, state='stopped', last_seen=195, outcome='failed', error='disk full'),
    ]
    snap = pw.evaluate(make_status(peers), V1, ['placed', 'placing', 'old-agent', 'failed'], wait_start=120.0)
    assert snap['complete'] == ['placed', 'old-agent']
    assert snap['pending'] == ['placing']        # confirmation due within PLACED_GRACE
    assert snap['stopped'] == ['failed']
    assert snap['hosts']['failed']['error'] == 'disk full'
    result = pw.build_result(snap, ['placed', 'placing', 'old-agent', 'failed'], 5.0, URL, V1, True, None)
    assert result['per_host']['placed']['outcome'] == 'placed'
    assert result['per_host']['old-agent']['outcome'] is None
    assert 'failed (70%, failed: disk full)' in result['msg']


def test_evaluate_classifies_hosts():
    peers = [
        peer('h1', 0, first_seen=100, completed_at=130),
        peer('h2', 500),
        peer('h3', 600, state='stopped', last_seen=190),          # stopped during the wait
        peer('h4', 600, state='stopped', last_seen=90),           # stopped before it: maybe a rerun
        peer('h6', 800, state='expired'),
        peer('h7', 0, state='stopped', last_seen=150, completed_at=140),
        peer(None, 0),                                            # no host name: ignored
    ]
    hosts = ['h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'h7']
    snap = pw.evaluate(make_status(peers), V1, hosts, wait_start=120.0, stale_grace=100)
    assert snap['found'] and snap['name'] == 'rel.tgz' and snap['size'] == 1000
    assert snap['complete'] == ['h1', 'h7']
    assert snap['stopped'] == ['h3']
    assert snap['pending'] == ['h2', 'h4', 'h5', 'h6']
    assert snap['never'] == ['h5']
    assert not snap['finished']
    views = snap['hosts']
    assert views['h1'] == {'state': 'complete', 'percent': 100.0, 'done': True, 'final': True,
                           'completed_at': 10.0, 'download_seconds': 30.0, 'done_bytes': 1000,
                           'outcome': 'placed', 'error': None}
    assert views['h7']['completed_at'] == 20.0
    assert views['h2']['percent'] == 50.0 and views['h2']['state'] == 'downloading'
    assert views['h4']['state'] == 'stopped' and not views['h4']['final']
    assert views['h5']['state'] == 'never announced'
    assert views['h6']['state'] == 'expired'
    assert snap['done_bytes'] == 1000 + 500 + 400 + 400 + 0 + 200 + 1000
    # Once the grace has passed, the stale stop counts.
    later = pw.evaluate(make_status(peers, now=225.0), V1, hosts, wait_start=120.0, stale_grace=100)
    assert later['stopped'] == ['h3', 'h4', 'h6']
    assert later['hosts']['h6']['state'] == 'lost'


def test_expired_host_is_lost_after_a_silence():
    """A killed agent sends no 'stopped': after LOST_AFTER s of silence it is final."""
    silent = peer('h1', 600, state='expired', last_seen=150)
    short = pw.evaluate(make_status([silent], now=150 + pw.LOST_AFTER - 1), V1, ['h1'], wait_start=120.0)
    assert short['pending'] == ['h1'] and short['hosts']['h1']['state'] == 'expired'
    long = pw.evaluate(make_status([silent], now=150 + pw.LOST_AFTER), V1, ['h1'], wait_start=120.0)
    assert long['stopped'] == ['h1'] and long['finished']
    assert long['hosts']['h1']['state'] == 'lost'
    # An expired record from before the wait may be a host whose new agent has
    # not announced yet: it gets the stale grace first.
    old = peer('h1', 600, state='expired', last_seen=50)
    snap = pw.evaluate(make_status([old], now=150), V1, ['h1'], wait_start=120.0, stale_grace=60)
    assert snap['pending'] == ['h1']


def test_completion_before_the_wait_counts_as_zero():
    snap = pw.evaluate(make_status([peer('h1', 0, completed_at=50)]), V1, ['h1'], wait_start=120.0)
    assert snap['hosts']['h1']['completed_at'] == 0.0 and snap['finished']


def test_percentiles_and_stats():
    assert pw.percentile([], 0.5) is None
    assert pw.percentile([3.0], 0.99) == 3.0
    values = list(range(1, 101))
    assert pw.percentile(values, 0.50) == 50
    assert pw.percentile(values, 0.99) == 99
    peers = [peer('h%d' % i, 0, completed_at=100 + i) for i in range(1, 5)]
    snap = pw.evaluate(make_status(peers), V1, ['h1', 'h2', 'h3', 'h4'], wait_start=100.0)
    assert pw.completion_stats(snap) == {'p50': 2.0, 'p99': 4.0, 'max': 4.0}


def test_progress_line():
    peers = [peer('h1', 0), peer('h2', 490), peer('h3', 400)]
    snap = pw.evaluate(make_status(peers), V1, ['h1', 'h2', 'h3', 'h4'])
    line = pw.progress_line(snap, 41.2e6)
    assert line == ('swarm rel.tgz: 1/4 hosts done, 52.8%, 41.2 MB/s aggregate, '
                    'slowest: h4 (never announced), h2 (51%)')
    stopped = pw.evaluate(make_status([peer('h1', 0), peer('h2', 600, state='stopped')]), V1, ['h1', 'h2'],
                          wait_start=50.0)
    assert pw.progress_line(stopped, 0) == ('swarm rel.tgz: 1/2 hosts done, 70.0%, 0.0 MB/s aggregate, '
                                            'stopped: h2 (40%, stopped)')


def test_rate_meter():
    meter = pw.RateMeter(window=5)
    assert meter.rate() == 0.0
    for second in range(0, 11):
        meter.add(float(second), second * 1e6 if second < 6 else 5e6 + (second - 5) * 3e6)
    assert meter.rate() == pytest.approx(3e6)     # only the last seconds count
    assert len(meter.samples) <= 7


# ------------------------------------------------- the loop on a fake clock

class FakeTime:
    def __init__(self):
        self.now = 0.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.now += max(seconds, 0.01)


def scripted(fake, timeline, base=1000.0):
    """fetch() returning the latest status whose start time has come."""
    def fetch():
        current = None
        for when, item in timeline:
            if fake.now >= when:
                current = item
        if isinstance(current, Exception):
            raise current
        if current is None:
            raise pw.TrackerUnreachable('connection refused')
        document = dict(current)
        document['time'] = base + fake.now
        return document
    return fetch


def run_wait(fake, timeline, hosts, **kwargs):
    lines = []
    kwargs.setdefault('timeout', 60)
    result = pw.wait_for_swarm(scripted(fake, timeline), URL, V1, hosts, emit=lines.append,
                               clock=fake.clock, sleep=fake.sleep, **kwargs)
    return result, lines


def test_wait_until_everyone_completes():
    fake = FakeTime()
    timeline = [
        (0, make_status([peer('h1', 1000, first_seen=1000), peer('h2', 1000, first_seen=1000)])),
        (3, make_status([peer('h1', 500, first_seen=1000), peer('h2', 800, first_seen=1000)])),
        (6, make_status([peer('h1', 0, first_seen=1000, completed_at=1005.5), peer('h2', 300, first_seen=1000)])),
        (9, make_status([peer('h1', 0, first_seen=1000, completed_at=1005.5),
                         peer('h2', 0, state='stopped', first_seen=1000, completed_at=1008.0)])),
    ]
    result, lines = run_wait(fake, timeline, ['h1', 'h2'])
    assert not result.get('failed'), result
    assert result['changed'] is False
    assert result['complete_hosts'] == ['h1', 'h2'] and result['incomplete_hosts'] == []
    assert result['stopped_hosts'] == []
    assert result['per_host']['h1'] == {'state': 'complete', 'percent': 100.0, 'completed_at': 5.5,
                                        'download_seconds': 5.5, 'outcome': 'placed', 'error': None}
    assert result['p50'] == 5.5 and result['max'] == 8.0 and result['p99'] == 8.0
    assert 9 <= result['elapsed'] < 10.5
    assert lines[-1].startswith('swarm rel.tgz: 2/2 hosts done, 100.0%')
    assert any('0/2 hosts done' in line and 'MB/s aggregate' in line for line in lines)
    assert 4 <= len(lines) <= 7                   # about one line every 2 s


def test_timeout_names_unfinished_hosts():
    fake = FakeTime()
    timeline = [(0, make_status([peer('h1', 0), peer('h2', 490)]))]
    result, _lines = run_wait(fake, timeline, ['h1', 'h2', 'h3'], timeout=10)
    assert result['failed'] is True
    assert 'timed out after 10 s with 2 of 3 host(s) not finished: h2 (51%), h3 (never announced)' in result['msg']
    assert result['incomplete_hosts'] == ['h2', 'h3'] and result['never_announced'] == ['h3']
    assert result['per_host']['h3']['state'] == 'never announced'
    assert 10 <= fake.now < 11.5


def test_stopped_host_fails_once_the_others_are_done():
    fake = FakeTime()
    timeline = [
        (0, make_status([peer('h1', 500, last_seen=1000), peer('h2', 900, last_seen=1000)])),
        (2, make_status([peer('h1', 500, last_seen=1002), peer('h2', 600, state='stopped', last_seen=1002)])),
        (4, make_status([peer('h1', 0, last_seen=1004), peer('h2', 600, state='stopped', last_seen=1002)])),
    ]
    result, _lines = run_wait(fake, timeline, ['h1', 'h2'], timeout=3600)
    assert result['failed'] is True
    assert '1 host(s) stopped before completing: h2 (40%, stopped)' in result['msg']
    assert result['stopped_hosts'] == ['h2'] and result['complete_hosts'] == ['h1']
    assert fake.now < 6                           # no waiting for the timeout


def test_host_never_heard_of_is_given_up_after_announce_grace():
    """Its agent could not reach the tracker and gave up by itself: the wait
    ends without it, naming it, instead of running into the timeout."""
    fake = FakeTime()
    timeline = [(0, make_status([peer('h1', 500, last_seen=1000)])),
                (3, make_status([peer('h1', 0, last_seen=1003, completed_at=1003)]))]
    result, _lines = run_wait(fake, timeline, ['h1', 'h2'], announce_grace=10, timeout=600)
    assert result['failed'] is True
    assert '1 host(s) stopped before completing: h2 (never announced)' in result['msg'], result['msg']
    assert result['stopped_hosts'] == ['h2'] and result['never_announced'] == ['h2']
    assert result['complete_hosts'] == ['h1']
    assert 10 <= fake.now < 12
    # Once every other host is done, a silent host is not waited for longer
    # than NEVER_QUIET: it may be downloading from its listed peers.
    fake = FakeTime()
    result, _lines = run_wait(fake, timeline, ['h1', 'h2'], announce_grace=120, timeout=600)
    assert result['stopped_hosts'] == ['h2'] and pw.NEVER_QUIET <= fake.now < pw.NEVER_QUIET + 2
    # 0 keeps waiting for it until the timeout.
    fake = FakeTime()
    result, _lines = run_wait(fake, timeline, ['h1', 'h2'], announce_grace=0, timeout=50)
    assert 'timed out after 50 s' in result['msg'] and 50 <= fake.now < 52


def test_stale_stop_from_an_earlier_run_gets_a_grace():
    fake = FakeTime()
    stale = peer('h1', 600, state='stopped', last_seen=900)
    timeline = [(0, make_status([stale])),
                (5, make_status([peer('h1', 100, last_seen=1005)])),
                (8, make_status([peer('h1', 0, last_seen=1008, completed_at=1008)]))]
    result, _lines = run_wait(fake, timeline, ['h1'], stale_grace=30)
    assert not result.get('failed'), result
    fake = FakeTime()
    result, _lines = run_wait(fake, [(0, make_status([stale]))], ['h1'], stale_grace=30, timeout=600)
    assert result['failed'] is True and 'stopped before completing: h1' in result['msg']
    assert 30 <= fake.now < 32


def test_unreachable_tracker_until_timeout():
    fake = FakeTime()
    result, lines = run_wait(fake, [], ['h1'], timeout=7, poll=1.0)
    assert result['failed'] is True
    assert result['msg'] == 'tracker %s unreachable: connection refused' % URL
    assert result['incomplete_hosts'] == ['h1']
    assert any('waiting for tracker' in line for line in lines)
    assert 7 <= fake.now < 8


def test_unreachable_at_first_then_fine():
    fake = FakeTime()
    timeline = [(0, pw.TrackerUnreachable('connection refused')),
                (4, make_status([peer('h1', 0)]))]
    result, _lines = run_wait(fake, timeline, ['h1'])
    assert not result.get('failed') and result['complete_hosts'] == ['h1']


def test_a_tracker_gone_mid_run_ends_the_wait_within_its_grace_naming_it():
    fake = FakeTime()
    timeline = [(0, make_status([peer('h1', 500), peer('h2', 1000)])),
                (3, make_status([peer('h1', 0, completed_at=102.0), peer('h2', 600)])),
                (5, pw.TrackerUnreachable('connection refused'))]
    result, _lines = run_wait(fake, timeline, ['h1', 'h2'], timeout=1800, tracker_lost_after=60)
    assert 65 <= fake.now < 67, fake.now        # 60 s after the last answer, not 1800
    assert result['failed'] is True
    expected = 'swarm rel.tgz: tracker %s unreachable: connection refused (for 60 s, giving up)' % URL
    assert result['msg'].startswith(expected), result['msg']
    assert result['complete_hosts'] == ['h1'] and result['incomplete_hosts'] == ['h2']
    assert 'h2' in result['msg'].split('giving up')[1]


def test_answers_in_between_restart_the_trackers_grace():
    fake = FakeTime()
    timeline = [(0, make_status([peer('h1', 500)]))]
    for second in range(5, 200, 50):         # down 45 s, up once, down again...
        timeline += [(second, pw.TrackerUnreachable('timed out')), (second + 45, make_status([peer('h1', 500)]))]
    timeline.append((250, make_status([peer('h1', 0, completed_at=300.0)])))
    result, _lines = run_wait(fake, timeline, ['h1'], timeout=1800, tracker_lost_after=60)
    assert not result.get('failed'), result
    assert 250 <= fake.now < 252


def test_unregistered_torrent_is_reported():
    fake = FakeTime()
    result, _lines = run_wait(fake, [(0, {'time': 1.0, 'torrents': {}})], ['h1'], timeout=3)
    assert result['failed'] is True
    assert 'torrent %s is not registered on tracker %s' % (V1, URL) in result['msg']


def test_junk_answer_counts_as_unreachable():
    fake = FakeTime()
    result, _lines = run_wait(fake, [(0, {'hello': 'world'})], ['h1'], timeout=2)
    assert result['failed'] is True and 'unexpected answer' in result['msg']


def test_no_hosts_returns_at_once():
    result = pw.wait_for_swarm(lambda: pytest.fail('no fetch expected'), URL, V1, [])
    assert result['msg'] == 'no hosts to wait for' and not result.get('failed')


# ------------------------------------------------- against a real tracker

def announce(base, host, left, port, event=''):
    query = 'info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=%d&left=%d&event=%s&p2p_host=%s' % (
        quote_from_bytes(bytes.fromhex(V1)), quote_from_bytes(('-TT0001-%012d' % port).encode()),
        port, 1000 - left, left, event, host)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(base + '/announce?' + query, timeout=10) as resp:
        assert b'failure' not in resp.read()


def test_against_real_tracker(tmp_path):
    with open(str(tmp_path / 'torrents.json'), 'w') as handle:
        json.dump({V1: {'name': 'real.bin', 'size': 1000}}, handle)
    with tracker.TrackerServer(str(tmp_path), poll_interval=0.02) as server:
        url = server.base_url + '/status.json'

        def swarm():
            for step, left in enumerate((1000, 600, 200, 0)):
                announce(server.base_url, 'h1', left, 7001)
                announce(server.base_url, 'h2', min(1000, left + 200), 7002)
                time.sleep(0.2)
            announce(server.base_url, 'h2', 0, 7002, event='completed')

        worker = threading.Thread(target=swarm)
        worker.start()
        lines = []
        result = pw.wait_for_swarm(lambda: pw.fetch_status(url, 5), url, V1, ['h1', 'h2'],
                                   timeout=20, poll=0.1, progress_every=0.3, emit=lines.append)
        worker.join(10)
    assert not result.get('failed'), result
    assert result['complete_hosts'] == ['h1', 'h2'] and result['name'] == 'real.bin'
    assert 0 < result['max'] < 10 and result['p50'] <= result['max']
    assert lines and all(line.startswith('swarm real.bin: ') for line in lines)


def test_fetch_status_errors():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(pw.TrackerUnreachable, match='refused'):
        pw.fetch_status('http://127.0.0.1:%d/status.json' % port, 2)


def test_through_ansible_playbook(tmp_path):
    """The action plugin and the module wired together by ansible-playbook on localhost."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    state_dir = str(tmp_path / 'tracker')
    announce_url = 'http://127.0.0.1:%d/announce?' % port + (
        'info_hash=%s&peer_id=-TT0001-000000000001&port=7001&uploaded=0&downloaded=1000&left=0'
        '&event=completed&p2p_host=web01' % quote_from_bytes(bytes.fromhex(V1)))
    playbook = tmp_path / 'play.yml'
    playbook.write_text(json.dumps([{
        'hosts': 'localhost', 'gather_facts': False,
        'tasks': [
            {'p2p.swarm.p2p_tracker': {'state_dir': state_dir, 'port': port, 'bind_address': '127.0.0.1',
                                       'info_hashes': [{'info_hash': V1, 'name': 'play.bin', 'size': 1000}]},
             'register': 'trk'},
            {'ansible.builtin.uri': {'url': announce_url, 'return_content': True}, 'register': 'ann'},
            {'p2p.swarm.p2p_wait': {'status_url': '{{ trk.local_status_url }}', 'info_hash': V1,
                                    'hosts': ['web01'], 'timeout': 20, 'poll': 0.2},
             'register': 'ok_wait'},
            {'p2p.swarm.p2p_wait': {'status_url': '{{ trk.local_status_url }}', 'info_hash': V1,
                                    'hosts': ['web01', 'web02'], 'timeout': 2, 'poll': 0.2},
             'register': 'bad_wait', 'ignore_errors': True},
            {'p2p.swarm.p2p_tracker': {'state_dir': state_dir, 'port': port, 'state': 'stopped'},
             'register': 'stopped'},
            {'ansible.builtin.assert': {'that': [
                'trk is changed', 'ok_wait is not failed', 'ok_wait is not changed',
                "ok_wait.complete_hosts == ['web01']", "ok_wait.per_host.web01.state == 'complete'",
                'bad_wait is failed', "'web02 (never announced)' in bad_wait.msg",
                "bad_wait.never_announced == ['web02']", 'stopped is changed']}},
        ]}]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.collections'),
               ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false',
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR='1',
               ANSIBLE_HOME=str(tmp_path / 'ansible-home'), ANSIBLE_LOCAL_TEMP=str(tmp_path / 'ansible-tmp'))
    playbook_bin = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    try:
        proc = subprocess.run([playbook_bin, '-i', 'localhost,', '-c', 'local', str(playbook)],
                              capture_output=True, check=False, text=True, env=env, timeout=240, cwd=str(tmp_path))
    finally:
        from ansible_collections.p2p.swarm.plugins.module_utils import daemon
        script = os.path.join(state_dir, 'tracker.py')
        pid = daemon.read_pidfile(os.path.join(state_dir, 'tracker.pid'), script)
        if pid:
            daemon.stop(pid, script, timeout=5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'swarm play.bin: 1/1 hosts done, 100.0%' in proc.stdout
    assert 'ok=6' in proc.stdout and 'ignored=1' in proc.stdout


def test_summary_line_lists_hosts_fastest_first():
    from ansible_collections.p2p.swarm.plugins.action import p2p_wait
    result = {'name': 'pkg', 'p50': 2.0, 'p99': 5.0, 'max': 5.0,
              'per_host': {'h2': {'completed_at': 5.0}, 'h1': {'completed_at': 2.0},
                           'h3': {'completed_at': None}}}
    line = p2p_wait.summary_line(result)
    assert line.startswith('swarm pkg: completed in p50 2.0 s, p99 5.0 s, max 5.0 s')
    assert line.endswith('per host: h1 2.0 s, h2 5.0 s')
    assert p2p_wait.summary_line({'per_host': {'h': {'completed_at': None}}}) is None

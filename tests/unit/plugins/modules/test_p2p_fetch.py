# -*- coding: utf-8 -*-
"""p2p_fetch run as a subprocess the way Ansible runs a module: bad input,
clean-up, the ip filter. Everything stays on loopback; every agent a test
starts is stopped by the fixture, whatever the test did."""

import base64
import hashlib
import http.client
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from urllib.parse import urlencode

import libtorrent as lt
import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import agent_session
from ansible_collections.p2p.swarm.plugins.module_utils import daemon, jobs, metainfo

from module_runner import PEER_IP, SEED_IP, STRANGER_IP, TRACKER_IP, assert_failed, payload, run_module, wait_until

SIZE = 256 * 1024


def free_port(ip='127.0.0.1'):
    sock = socket.socket()
    sock.bind((ip, 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def run(tmp_path, check_mode=False, **args):
    return run_module('p2p_fetch', tmp_path, check_mode, **args)


def make_torrent(path, tracker, version='hybrid'):
    """A .torrent for path (file or directory) announcing to tracker; returns its path."""
    data = metainfo.create_torrent(str(path), [tracker], version=version)
    out = str(path) + '.torrent'
    with open(out, 'wb') as handle:
        handle.write(data)
    return out


def rewrite_torrent(src, dest, change):
    """Decode src, let change(metainfo dict) edit it, write the result to dest."""
    with open(src, 'rb') as handle:
        decoded = lt.bdecode(handle.read())
    change(decoded)
    with open(dest, 'wb') as handle:
        handle.write(lt.bencode(decoded))
    return str(dest)


@pytest.fixture
def content(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    path = src / 'pkg.bin'
    path.write_bytes(payload(SIZE, b'fetch'))
    return path


def fetch_args(state_dir, torrent, dest, **extra):
    args = {'torrent': torrent, 'dest': str(dest), 'state_dir': state_dir,
            'listen_address': PEER_IP, 'linger': 0}
    args.update(extra)
    return args


# ------------------------------------------------------------------ bad torrents

def test_corrupt_truncated_and_empty_torrents_fail_clearly(tmp_path, state_dir, content):
    good = make_torrent(content, 'http://127.0.0.1:9/announce')
    with open(good, 'rb') as handle:
        data = handle.read()
    cases = {'garbage.torrent': os.urandom(600), 'truncated.torrent': data[:len(data) // 2],
             'empty.torrent': b'', 'list.torrent': lt.bencode([1, 2, 3])}
    dest = tmp_path / 'out' / 'pkg.bin'
    dest.parent.mkdir()
    for name, body in cases.items():
        path = tmp_path / name
        path.write_bytes(body)
        result = assert_failed(run(tmp_path, **fetch_args(state_dir, str(path), dest)), str(path))
        assert 'not a valid' in result['msg'] or 'cannot read' in result['msg'], (name, result['msg'])
    assert os.listdir(str(dest.parent)) == []
    assert not os.path.exists(state_dir)


def test_missing_torrent_fails(tmp_path, state_dir):
    assert_failed(run(tmp_path, **fetch_args(state_dir, str(tmp_path / 'nope.torrent'), tmp_path / 'x')),
                  'does not exist')


@pytest.mark.parametrize('change, shown', [
    (lambda m: m[b'info'][b'files'][0].__setitem__(b'path', [b'..', b'..', b'etc', b'evil']), '../../etc/evil'),
    (lambda m: m[b'info'][b'files'][0].__setitem__(b'path', [b'/etc', b'evil']), '/etc/evil'),
    (lambda m: m[b'info'][b'files'][0].__setitem__(b'path', [b'', b'etc', b'evil']), '/etc/evil'),
    (lambda m: m[b'info'].__setitem__(b'name', b'..'), '..'),
])
def test_path_traversal_in_metainfo_is_refused_before_anything(tmp_path, state_dir, change, shown):
    tree = tmp_path / 'tree'
    (tree / 'sub').mkdir(parents=True)
    (tree / 'a.bin').write_bytes(payload(5000, b'a'))
    (tree / 'sub' / 'b.bin').write_bytes(payload(7000, b'b'))
    good = make_torrent(tree, 'http://127.0.0.1:9/announce', version='v1')
    evil = rewrite_torrent(good, tmp_path / 'evil.torrent', change)
    out = tmp_path / 'out'
    out.mkdir()
    result = assert_failed(run(tmp_path, **fetch_args(state_dir, evil, out / 'x.bin')), 'refused', 'unsafe path')
    assert shown in result['msg']
    assert os.listdir(str(out)) == [] and not os.path.exists(state_dir)


def test_single_file_torrent_named_with_dotdot_is_refused(tmp_path, state_dir, content):
    good = make_torrent(content, 'http://127.0.0.1:9/announce', version='v1')
    evil = rewrite_torrent(good, tmp_path / 'evil.torrent', lambda m: m[b'info'].__setitem__(b'name', b'../pkg.bin'))
    assert_failed(run(tmp_path, **fetch_args(state_dir, evil, tmp_path / 'pkg.bin')), 'unsafe path')


def test_dest_with_other_content_is_not_taken_for_done(tmp_path, state_dir, content):
    """A torrent for other content than dest holds: dest is replaced, never reported complete."""
    torrent = make_torrent(content, 'http://127.0.0.1:9/announce')
    dest = tmp_path / 'dest.bin'
    dest.write_bytes(payload(SIZE, b'other'))          # same size, other bytes
    rc, result, dummy = run(tmp_path, check_mode=True, **fetch_args(state_dir, torrent, dest))
    assert rc == 0 and result['changed'] is True and result['status'] == 'absent', result
    dest.write_bytes(content.read_bytes())
    rc, result, dummy = run(tmp_path, check_mode=True, **fetch_args(state_dir, torrent, dest))
    assert rc == 0 and result['changed'] is False and result['status'] == 'complete', result
    # The stamp written on that check no longer matches once the file changes.
    time.sleep(0.01)
    dest.write_bytes(payload(SIZE, b'tampered'))
    rc, result, dummy = run(tmp_path, check_mode=True, **fetch_args(state_dir, torrent, dest))
    assert rc == 0 and result['changed'] is True, result


def test_dest_that_is_a_directory_fails(tmp_path, state_dir, content):
    torrent = make_torrent(content, 'http://127.0.0.1:9/announce')
    (tmp_path / 'adir').mkdir()
    assert_failed(run(tmp_path, **fetch_args(state_dir, torrent, tmp_path / 'adir')), 'is a directory')


def test_missing_dest_directory_fails_and_is_not_created(tmp_path, state_dir, content):
    torrent = make_torrent(content, 'http://127.0.0.1:9/announce')
    dest = tmp_path / 'no' / 'such' / 'pkg.bin'
    assert_failed(run(tmp_path, **fetch_args(state_dir, torrent, dest)), 'does not exist')
    assert not os.path.exists(str(tmp_path / 'no'))


def test_torrent_and_dest_are_required_to_fetch(tmp_path, state_dir):
    rc, result, dummy = run(tmp_path, dest=str(tmp_path / 'x'), state_dir=state_dir)
    assert rc == 1 and 'torrent' in result['msg'], result


def test_bad_allowed_peers_fail(tmp_path, state_dir, content):
    torrent = make_torrent(content, 'http://127.0.0.1:9/announce')
    assert_failed(run(tmp_path, wait=False, **fetch_args(state_dir, torrent, tmp_path / 'pkg.bin',
                                                         allowed_peers=['10.0.0.0/33'])), 'allowed_peers')
    assert_failed(run(tmp_path, wait=False, **fetch_args(state_dir, torrent, tmp_path / 'pkg.bin',
                                                         allowed_peers=['no-such-host.invalid'])),
                  'none of no-such-host.invalid')
    assert jobs.all_jobs(state_dir) == []


# ------------------------------------------------------------- agent outcomes

@pytest.mark.parametrize('url, fragment', [
    ('http://127.0.0.1:%d/announce' % free_port(), 'tracker unreachable'),
    ('htp://127.0.0.1/announce', 'tracker unreachable'),        # malformed: a scheme nobody speaks
])
def test_unreachable_or_malformed_tracker_fails_and_leaves_no_dest(tmp_path, state_dir, content, url, fragment):
    torrent = rewrite_torrent(make_torrent(content, 'http://127.0.0.1:9/announce'), tmp_path / 't.torrent',
                              lambda m: (m.pop(b'announce-list', None), m.__setitem__(b'announce', url.encode())))
    dest = tmp_path / 'out' / 'pkg.bin'
    dest.parent.mkdir()
    args = fetch_args(state_dir, torrent, dest, tracker_grace=2, run_id='r1', timeout=60)
    rc, started, dummy = run(tmp_path, wait=False, **args)
    assert rc == 0 and started['changed'] and started['pid'], started
    result = assert_failed(run(tmp_path, **args), fragment)
    assert result['status'] == 'failed'
    assert os.listdir(str(dest.parent)) == []


def test_agent_killed_mid_run_is_reported_then_a_new_run_starts_over(tmp_path, state_dir, content):
    torrent = make_torrent(content, 'http://127.0.0.1:%d/announce' % free_port())
    dest = tmp_path / 'pkg.bin'
    args = fetch_args(state_dir, torrent, dest, tracker_grace=600, run_id='run-1')
    rc, started, dummy = run(tmp_path, wait=False, **args)
    assert rc == 0, started
    job = jobs.all_jobs(state_dir)[0]
    wait_until(lambda: job.read_status().get('state') == 'downloading', 20, 'the agent to run')
    os.kill(started['pid'], signal.SIGKILL)
    wait_until(lambda: job.running_pid() is None, 10, 'the agent to die')
    # Same run: the death is the outcome, no silent restart.
    result = assert_failed(run(tmp_path, **args), 'died', 'killed or crashed', 'rerun')
    assert result['status'] == 'failed' and job.running_pid() is None
    # A new run starts a new agent.
    rc, again, dummy = run(tmp_path, wait=False, **dict(args, run_id='run-2'))
    assert rc == 0 and again['changed'] and again['pid'] != started['pid'], again


def test_stopped_without_torrent_ends_every_agent(tmp_path, state_dir, content):
    torrent = make_torrent(content, 'http://127.0.0.1:%d/announce' % free_port())
    pids = []
    for name in ('one.bin', 'two.bin'):
        rc, result, dummy = run(tmp_path, wait=False, **fetch_args(state_dir, torrent, tmp_path / name, tracker_grace=600))
        assert rc == 0, result
        pids.append(result['pid'])
    rc, result, dummy = run(tmp_path, check_mode=True, state='stopped', state_dir=state_dir)
    assert rc == 0 and result['changed'] and len(result['agents']) == 2, result
    assert all(daemon.is_running(pid, 'job.json') for pid in pids)
    rc, result, dummy = run(tmp_path, state='stopped', state_dir=state_dir)
    assert rc == 0 and result['changed'] and sorted(a['pid'] for a in result['agents']) == sorted(pids), result
    assert [job.running_pid() for job in jobs.all_jobs(state_dir)] == [None, None]
    rc, result, dummy = run(tmp_path, state='stopped', state_dir=state_dir)
    assert rc == 0 and result['changed'] is False and result['agents'] == [], result
    # Nothing there at all is fine too.
    rc, result, dummy = run(tmp_path, state='stopped', state_dir=str(tmp_path / 'none'))
    assert rc == 0 and result['changed'] is False, result
    # A host that never got the torrent has no agent of it (the role's clean-up
    # runs on hosts whose play failed before that).
    rc, result, dummy = run(tmp_path, state='stopped', state_dir=state_dir, torrent=str(tmp_path / 'no.torrent'),
                            dest=str(tmp_path / 'one.bin'))
    assert rc == 0 and result['changed'] is False and 'not on this host' in result['msg'], result


# ------------------------------------------------------------------ ip filter

def test_ip_filter_rules():
    assert agent_session.allowed_ranges(['10.1.2.0/24', '10.9.9.9', 'fd00::/120']) == [
        ('10.1.2.0', '10.1.2.255'), ('10.9.9.9', '10.9.9.9'), ('fd00::', 'fd00::ff')]
    ip_filter = agent_session.build_ip_filter(['10.1.2.0/24'])
    assert ip_filter.access('10.1.2.7') == 0
    assert ip_filter.access('10.1.3.7') == 1
    assert ip_filter.access('127.0.0.1') == 1
    assert ip_filter.access('::1') == 1
    assert agent_session.tracker_addresses(['http://127.0.0.2:6969/announce', 'http://[::1]:1/a', 'bad url', 'udp://']) \
        == ['127.0.0.2', '::1']


def seed_and_fetch(tmp_path, state_dir, content, tracker, seed_allowed):
    torrent = make_torrent(content, tracker.announce_url)
    tracker.register(metainfo.describe(torrent))
    rc, seeding, dummy = run(tmp_path, **fetch_args(state_dir, torrent, content, state='seeding',
                                                    listen_address=SEED_IP, allowed_peers=seed_allowed,
                                                    peer_name='seed'))
    assert rc == 0 and seeding['status'] == 'seeding', seeding
    dest = tmp_path / 'got.bin'
    rc, started, dummy = run(tmp_path, wait=False, **fetch_args(state_dir, torrent, dest, run_id='ipf', peer_name='peer'))
    assert rc == 0, started
    return torrent, dest


def test_seeder_refuses_a_peer_outside_allowed_peers(tmp_path, state_dir, content, tracker):
    torrent, dest = seed_and_fetch(tmp_path, state_dir, content, tracker, ['192.0.2.0/24'])
    job = jobs.Job(state_dir, metainfo.describe(torrent)['info_hash'], str(dest))
    # The peer learns the seeder's address from the tracker and keeps trying.
    wait_until(lambda: job.read_status().get('swarm_complete', 0) >= 1, 60, 'the tracker to list the seeder')
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = job.read_status()
        # (a connection may show for an instant before the seeder drops it)
        assert not status.get('downloaded') and status.get('progress', 0) == 0, status
        time.sleep(0.25)
    assert not dest.exists()


def test_seeder_serves_a_peer_inside_allowed_peers(tmp_path, state_dir, content, tracker):
    torrent, dest = seed_and_fetch(tmp_path, state_dir, content, tracker, [PEER_IP + '/32'])
    rc, result, dummy = run(tmp_path, timeout=60, **fetch_args(state_dir, torrent, dest, run_id='ipf', peer_name='peer'))
    assert rc == 0 and result['changed'], result['msg']
    assert dest.read_bytes() == content.read_bytes()


def test_a_new_torrent_for_the_same_dest_stops_the_old_agent(tmp_path, state_dir, content):
    """An agent left from an interrupted run with an older file must not
    keep writing the shared hidden file and rename it over dest later."""
    tracker_url = 'http://127.0.0.1:%d/announce' % free_port()
    old = make_torrent(content, tracker_url)
    newer_src = tmp_path / 'newer'
    newer_src.mkdir()
    (newer_src / 'pkg.bin').write_bytes(payload(SIZE, b'v2'))
    newer = make_torrent(newer_src / 'pkg.bin', tracker_url)
    dest = tmp_path / 'pkg.bin'
    rc, first, dummy = run(tmp_path, wait=False, **fetch_args(state_dir, old, dest, tracker_grace=600))
    assert rc == 0 and daemon.is_running(first['pid'], 'job.json'), first
    rc, second, dummy = run(tmp_path, wait=False, **fetch_args(state_dir, newer, dest, tracker_grace=600))
    assert rc == 0 and second['pid'] != first['pid'], second
    assert not daemon.is_running(first['pid'], 'job.json')
    assert daemon.is_running(second['pid'], 'job.json')


def test_killed_download_resumes_from_its_partial_file(tmp_path, state_dir, tracker):
    """SIGKILL a download agent half-way; the next run keeps the verified pieces."""
    src = tmp_path / 'big'
    src.mkdir()
    size = 2 * 1024 * 1024
    (src / 'pkg.bin').write_bytes(payload(size, b'resume'))
    torrent = make_torrent(src / 'pkg.bin', tracker.announce_url)
    desc = metainfo.describe(torrent)
    tracker.register(dict(desc, size=size))
    rc, seeding, dummy = run(tmp_path, **fetch_args(state_dir, torrent, str(src / 'pkg.bin'), state='seeding',
                                                    listen_address=SEED_IP, peer_name='seed'))
    assert rc == 0, seeding
    dest = tmp_path / 'got.bin'
    args = fetch_args(state_dir, torrent, dest, peer_name='peer', download_rate_limit=256 * 1024)
    rc, first, dummy = run(tmp_path, wait=False, run_id='one', **args)
    assert rc == 0, first
    job = jobs.Job(state_dir, desc['info_hash'], str(dest))
    status = wait_until(lambda: job.read_status().get('progress', 0) >= 0.4 and job.read_status(), 60, 'progress')
    os.kill(first['pid'], signal.SIGKILL)
    wait_until(lambda: job.running_pid() is None, 10, 'the agent to die')
    had = status['progress'] * size
    rc, second, dummy = run(tmp_path, timeout=60, run_id='two', **dict(args, download_rate_limit=0))
    assert rc == 0 and second['changed'], second
    assert dest.read_bytes() == (src / 'pkg.bin').read_bytes()
    assert second['downloaded'] < size, (had, second['downloaded'])
    # Pieces still in libtorrent's write queue at the kill are lost; the rest is kept.
    assert job.read_status()['resumed'] >= had / 4, (had, job.read_status())


# ------------------------------------------------------------- corrupt peer

EVIL_IP = STRANGER_IP


class CorruptSeed(object):
    """A peer that claims every piece and answers each request with junk.

    libtorrent's own seed mode checks a piece before sending it, so the bad
    peer speaks the wire protocol itself: handshake, bitfield, unchoke, then
    random bytes for every block asked for. It announces itself to the
    tracker like any seed."""

    def __init__(self, info_hash, num_pieces):
        self.info_hash = info_hash
        self.num_pieces = num_pieces
        self.blocks_sent = 0
        self.connections = 0
        self.server = socket.socket()
        self.server.bind((EVIL_IP, 0))
        self.server.listen(8)
        self.server.settimeout(0.5)
        self.port = self.server.getsockname()[1]
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def announce(self, tracker):
        query = urlencode({'info_hash': self.info_hash, 'peer_id': b'-EV0001-' + b'x' * 12, 'port': self.port,
                           'uploaded': 0, 'downloaded': 0, 'left': 0, 'compact': 1, 'event': 'started'})
        conn = http.client.HTTPConnection(TRACKER_IP, tracker.port, timeout=5, source_address=(EVIL_IP, 0))
        conn.request('GET', '/announce?' + query)
        body = conn.getresponse().read()
        conn.close()
        assert b'failure' not in body, body

    def _serve(self):
        while not self.stopped:
            try:
                conn, dummy = self.server.accept()
            except socket.timeout:
                continue
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn):
        conn.settimeout(10)
        try:
            hello = self._read(conn, 68)
            if hello[28:48] != self.info_hash:
                return
            conn.sendall(b'\x13BitTorrent protocol' + b'\0' * 8 + self.info_hash + b'-EV0001-' + b'y' * 12)
            bits = bytearray(b'\xff' * ((self.num_pieces + 7) // 8))
            if self.num_pieces % 8:
                bits[-1] = (0xff << (8 - self.num_pieces % 8)) & 0xff
            conn.sendall(struct.pack('>IB', 1 + len(bits), 5) + bytes(bits) + struct.pack('>IB', 1, 1))
            while not self.stopped:
                length = struct.unpack('>I', self._read(conn, 4))[0]
                message = self._read(conn, length) if length else b''
                if message[:1] == b'\x06':           # request: index, begin, length
                    index, begin, size = struct.unpack('>III', message[1:13])
                    conn.sendall(struct.pack('>IBII', 9 + size, 7, index, begin) + os.urandom(size))
                    self.blocks_sent += 1
        except (OSError, ValueError, struct.error):
            pass
        finally:
            conn.close()

    @staticmethod
    def _read(conn, count):
        data = b''
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                raise ValueError('closed')
            data += chunk
        return data

    def stop(self):
        self.stopped = True
        self.thread.join(5)
        self.server.close()


def junk_dropped(job):
    """The agent's status once the bad peer is banned and its data gone, else None.
    progress counts received blocks whose piece is still being checked, so it
    reaches 0 only once every junk piece has failed its check."""
    status = job.read_status()
    return status if EVIL_IP in status.get('banned_peers', []) and status.get('progress') == 0 else None


def test_a_peer_sending_corrupt_pieces_is_banned_and_dest_gets_only_good_data(tmp_path, state_dir, content, tracker):
    torrent = make_torrent(content, tracker.announce_url, version='v1')
    desc = metainfo.describe(torrent)
    tracker.register(desc)
    evil = CorruptSeed(bytes.fromhex(desc['info_hash']), lt.torrent_info(torrent).num_pieces())
    try:
        evil.announce(tracker)
        dest = tmp_path / 'got.bin'
        args = fetch_args(state_dir, torrent, dest, run_id='evil', peer_name='peer', timeout=60)
        rc, started, dummy = run(tmp_path, wait=False, **args)
        assert rc == 0, started
        job = jobs.Job(state_dir, desc['info_hash'], str(dest))
        # The only source is the bad peer: its junk fails the check and gets it banned.
        status = wait_until(lambda: junk_dropped(job), 30, 'the corrupt peer banned, its data dropped')
        assert status['hash_failures'] >= 1, status
        assert evil.blocks_sent > 0 and not dest.exists()
        # Now the honest seed: the download completes from it alone.
        rc, seeding, dummy = run(tmp_path, **fetch_args(state_dir, torrent, content, state='seeding',
                                                        listen_address=SEED_IP, peer_name='seed'))
        assert rc == 0 and seeding['status'] == 'seeding', seeding
        sent_before = evil.blocks_sent
        rc, result, dummy = run(tmp_path, **args)
        assert rc == 0 and result['changed'], result
        assert dest.read_bytes() == content.read_bytes()
        assert result['banned_peers'] == [EVIL_IP] and result['hash_failures'] >= 1, result
        assert evil.blocks_sent == sent_before     # banned: never asked again
    finally:
        evil.stop()


# ------------------------------------------------------- disk full mid-way

@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root, as CI runs)."""
    if os.geteuid() != 0:
        pytest.fail('this test mounts a tmpfs and must run as root (scripts/test.sh does)')
    mount = tmp_path / 'small'
    mount.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(['umount', '-l', str(mount)], check=False)


def test_disk_filling_up_mid_download_does_not_stop_it(tmp_path, state_dir, content, tracker, small_disk):
    """The agent allocates the whole file before the first piece, so another
    process filling the disk mid-way takes nothing from the download."""
    torrent = make_torrent(content, tracker.announce_url)
    tracker.register(metainfo.describe(torrent))
    rc, seeding, dummy = run(tmp_path, **fetch_args(state_dir, torrent, content, state='seeding',
                                                    listen_address=SEED_IP, peer_name='seed'))
    assert rc == 0, seeding
    dest = small_disk / 'got.bin'
    args = fetch_args(state_dir, torrent, dest, run_id='full', peer_name='peer', timeout=60,
                      download_rate_limit=64 * 1024)             # ~4 s for 256 KiB
    rc, started, dummy = run(tmp_path, wait=False, **args)
    assert rc == 0, started
    job = jobs.Job(state_dir, metainfo.describe(torrent)['info_hash'], str(dest))
    wait_until(lambda: 0.05 < job.read_status().get('progress', 0) < 0.7, 20, 'the download to be under way')
    with pytest.raises(OSError) as full:
        with open(str(small_disk / 'filler'), 'wb') as filler:
            for dummy in range(64):                              # 64 x 32 KiB > the 1 MiB disk
                filler.write(b'\0' * 32 * 1024)
                filler.flush()
    assert 'No space left' in str(full.value)
    assert job.read_status()['progress'] < 1, 'the disk filled up too late to test anything'
    rc, result, dummy = run(tmp_path, **args)
    assert rc == 0 and result['changed'], result.get('msg', result)
    assert dest.read_bytes() == content.read_bytes()
    run(tmp_path, state='stopped', state_dir=state_dir)


# ----------------------------------------------- torrent_content and --diff

def test_torrent_content_is_written_once_and_never_in_check_mode(tmp_path, state_dir, content, tracker):
    torrent = make_torrent(content, tracker.announce_url)
    tracker.register(metainfo.describe(torrent))
    with open(torrent, 'rb') as handle:
        encoded = base64.b64encode(handle.read()).decode('ascii')
    kept = tmp_path / 'state' / 'torrents' / 'pkg.torrent'       # its directory does not exist yet
    dest = tmp_path / 'got.bin'
    args = fetch_args(state_dir, str(kept), dest, torrent_content=encoded, run_id='tc', peer_name='peer')
    rc, result, dummy = run(tmp_path, check_mode=True, **args)
    assert rc == 0 and result['changed'] and result['status'] == 'absent', result
    assert not kept.exists()
    rc, seeding, dummy = run(tmp_path, **fetch_args(state_dir, torrent, content, state='seeding',
                                                    listen_address=SEED_IP, peer_name='seed'))
    assert rc == 0, seeding
    rc, result, dummy = run(tmp_path, timeout=60, **args)
    assert rc == 0 and result['changed'], result.get('msg', result)
    assert kept.read_bytes() == open(torrent, 'rb').read() and dest.read_bytes() == content.read_bytes()
    mtime = kept.stat().st_mtime_ns
    # A later run: the first run's agent (linger 0) has exited by then. Were it
    # still winding down, the new call would wait for it and report its download.
    job = jobs.Job(state_dir, result['info_hash'], str(dest))
    wait_until(lambda: job.running_pid() is None, 10, 'the first run\'s agent to exit')
    rc, result, dummy = run(tmp_path, **dict(args, run_id='tc-again'))
    assert rc == 0 and not result['changed'] and kept.stat().st_mtime_ns == mtime, result
    assert_failed(run(tmp_path, **dict(args, torrent_content='not base64!')), 'torrent_content is not base64')


def test_diff_shows_the_old_and_the_new_checksum(tmp_path, state_dir, content):
    torrent = make_torrent(content, 'http://127.0.0.1:9/announce')
    desc = metainfo.describe(torrent)
    assert desc['sha256'] == hashlib.sha256(content.read_bytes()).hexdigest()
    dest = tmp_path / 'old.bin'
    dest.write_bytes(b'old release')
    rc, result, dummy = run(tmp_path, check_mode=True, _ansible_diff=True, **fetch_args(state_dir, torrent, dest))
    assert rc == 0 and result['changed'], result
    assert 'sha256: %s' % hashlib.sha256(b'old release').hexdigest() in result['diff']['before']
    assert 'size: 11' in result['diff']['before']
    assert 'sha256: %s' % desc['sha256'] in result['diff']['after']
    assert 'info_hash: %s' % desc['info_hash'] in result['diff']['after']
    dest.unlink()
    rc, result, dummy = run(tmp_path, check_mode=True, _ansible_diff=True, **fetch_args(state_dir, torrent, dest))
    assert result['diff']['before'] == 'path: %s (absent)\n' % dest, result
    rc, result, dummy = run(tmp_path, check_mode=True, **fetch_args(state_dir, torrent, dest))
    assert 'diff' not in result       # only when asked for


def test_an_agent_that_cannot_start_fails_the_start_task_itself(tmp_path, state_dir, content):
    """With wait=false the task returns before the download; an error at the
    agent's start (here a read-only dest directory) must still fail it, since
    that agent never reaches the tracker and nobody else would report it."""
    if os.geteuid() != 0:
        pytest.fail('this test mounts a tmpfs and must run as root (scripts/test.sh does)')
    readonly = tmp_path / 'ro'
    readonly.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(readonly)], check=True)
    try:
        torrent = make_torrent(content, 'http://127.0.0.1:%d/announce' % free_port())
        result = assert_failed(run(tmp_path, wait=False, **fetch_args(state_dir, torrent, readonly / 'pkg.bin')),
                               'Read-only file system')
        assert result['status'] == 'failed'
        assert [job.running_pid() for job in jobs.all_jobs(state_dir)] == [None]
        assert os.listdir(str(readonly)) == []
    finally:
        subprocess.run(['umount', '-l', str(readonly)], check=False)


def test_stop_when_done_ends_the_agent_with_the_report(tmp_path, state_dir, content, tracker):
    """The report and the clean-up in one call: once the file is placed the
    agent is stopped, though linger would keep it seeding for ten minutes."""
    torrent = make_torrent(content, tracker.announce_url)
    tracker.register(metainfo.describe(torrent))
    rc, seeding, dummy = run(tmp_path, **fetch_args(state_dir, torrent, content, state='seeding',
                                                    listen_address=SEED_IP, peer_name='seed'))
    assert rc == 0 and seeding['status'] == 'seeding', seeding
    # A slow second host keeps the swarm incomplete, so nothing else ends the first agent.
    slow = tmp_path / 'slow.bin'
    rc, slow_agent, dummy = run(tmp_path, wait=False, **fetch_args(state_dir, torrent, slow, run_id='r',
                                                                   peer_name='slow', download_rate_limit=4096))
    assert rc == 0, slow_agent
    dest = tmp_path / 'got.bin'
    rc, result, dummy = run(tmp_path, timeout=60, **fetch_args(state_dir, torrent, dest, run_id='r', peer_name='peer',
                                                               linger=600, stop_when_done=True))
    assert rc == 0 and result['changed'] and result['msg'] == 'downloaded and verified', result
    assert result['agent_stopped'] is True
    assert dest.read_bytes() == content.read_bytes()
    job = jobs.Job(state_dir, metainfo.describe(torrent)['info_hash'], str(dest))
    assert job.running_pid() is None and not daemon.is_running(result['pid'], 'job.json'), result
    assert daemon.is_running(slow_agent['pid'], 'job.json') and not slow.exists()


def test_an_interpreter_without_libtorrent_is_reported_as_such(tmp_path, state_dir, content):
    """The peer role tells 'this python lacks libtorrent' (look for another,
    or install it) from a real failure by libtorrent_missing."""
    blocker = tmp_path / 'no_libtorrent'
    blocker.mkdir()
    # A module named libtorrent that fails to import, first on the path.
    (blocker / 'libtorrent.py').write_text('raise ImportError("libtorrent hidden by the test")\n')
    outcome = run(tmp_path, path_first=str(blocker),
                  **fetch_args(state_dir, make_torrent(content, 'http://127.0.0.1:1/announce'), tmp_path / 'got.bin'))
    rc, result, dummy = outcome
    assert rc == 1 and result['failed'] and result['libtorrent_missing'] is True, result
    assert 'libtorrent' in result['msg'] and not (tmp_path / 'got.bin').exists()


# ------------------------------------------------------------------ held seed

SECOND_PEER_IP = '127.0.0.6'


def start_held_seed(tmp_path, state_dir, content, tracker, hold_peers):
    torrent = make_torrent(content, tracker.announce_url)
    tracker.register(metainfo.describe(torrent))
    port = free_port(SEED_IP)
    rc, seeding, dummy = run(tmp_path, **fetch_args(state_dir, torrent, content, state='seeding', peer_name='seed',
                                                    listen_address=SEED_IP, listen_port=port, hold_peers=hold_peers))
    assert rc == 0 and seeding['status'] == 'seeding', seeding
    seed_job = jobs.Job(state_dir, metainfo.describe(torrent)['info_hash'], str(content))
    return torrent, seed_job, '%s:%d' % (SEED_IP, port)


def start_download(tmp_path, state_dir, torrent, dest, seed, address=PEER_IP):
    rc, started, dummy = run(tmp_path, wait=False, **fetch_args(state_dir, torrent, dest, run_id='hold', peer_name=dest.name,
                                                                peers=[seed], listen_address=address))
    assert rc == 0, started
    return jobs.Job(state_dir, metainfo.describe(torrent)['info_hash'], str(dest))


def test_a_held_seed_sends_nothing_until_every_expected_agent_is_there(tmp_path, state_dir, content, tracker):
    torrent, seed_job, seed = start_held_seed(tmp_path, state_dir, content, tracker, hold_peers=2)
    first = start_download(tmp_path, state_dir, torrent, tmp_path / 'first.bin', seed)
    wait_until(lambda: seed_job.read_status().get('held_peers') == 1, 30, 'the first agent to reach the seed')
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:   # within the 5 s quiet time: still held
        assert not first.read_status().get('downloaded'), first.read_status()
        assert seed_job.read_status()['held'] is True
        time.sleep(0.25)
    second_joined = time.time()
    # The seed tells hosts apart by address, as each host has its own.
    second = start_download(tmp_path, state_dir, torrent, tmp_path / 'second.bin', seed, address=SECOND_PEER_IP)
    wait_until(lambda: first.read_status().get('placed') and second.read_status().get('placed'), 60,
               'both agents to place the file')
    status = seed_job.read_status()
    assert status['held'] is False and status['held_peers'] == 2, status
    # Released by the second agent's arrival, not by the quiet time.
    assert status['released_at'] - second_joined < 4.5, status
    assert (tmp_path / 'first.bin').read_bytes() == content.read_bytes()


def test_a_held_seed_serves_once_no_more_agents_come(tmp_path, state_dir, content, tracker):
    """Hosts that hold the file already never connect: the hold ends after
    the quiet time, with fewer agents than it was told to expect."""
    torrent, seed_job, seed = start_held_seed(tmp_path, state_dir, content, tracker, hold_peers=5)
    only = start_download(tmp_path, state_dir, torrent, tmp_path / 'only.bin', seed)
    wait_until(lambda: only.read_status().get('placed'), 60, 'the one agent to place the file')
    status = seed_job.read_status()
    assert status['held'] is False and status['held_peers'] == 1, status
    assert status['released_at'] - status['started_at'] >= 5, status
    assert (tmp_path / 'only.bin').read_bytes() == content.read_bytes()

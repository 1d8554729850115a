# -*- coding: utf-8 -*-
"""The authenticated swarm: SSL torrents (p2p_torrent ssl_ca_cert) and agents
with certificates of the run's CA (p2p_fetch ssl_cert/ssl_key), on loopback
with the collection's real tracker. Each role has its own 127.0.0.x address;
every agent a test starts is stopped by the fixture."""

import json
import os
import socket
import time

import libtorrent as lt
import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import agent_session
from ansible_collections.p2p.swarm.plugins.module_utils import jobs, metainfo, swarm_ca

from module_runner import PEER_IP, SEED_IP, STRANGER_IP, payload, run_module, wait_until

SIZE = 512 * 1024


def run(tmp_path, module='p2p_fetch', check_mode=False, **args):
    """Run a module as Ansible would; return (rc, result)."""
    rc, result, stderr = run_module(module, tmp_path, check_mode, **args)
    assert 'Traceback' not in stderr, stderr
    return rc, result


class Pki(object):
    """The run's CA with certificates for seed and peer, and a second CA (a stranger's)."""

    def __init__(self, directory):
        self.dir = directory
        swarm_ca.make_ca(self.path('ca.key'), self.path('ca.pem'))
        swarm_ca.make_ca(self.path('other-ca.key'), self.path('other-ca.pem'), common_name='someone else')
        for name in ('seed', 'peer'):
            swarm_ca.make_host_cert(self.path('ca.key'), self.path('ca.pem'),
                                    self.path(name + '.key'), self.path(name + '.pem'), name)
        swarm_ca.make_host_cert(self.path('other-ca.key'), self.path('other-ca.pem'),
                                self.path('stranger.key'), self.path('stranger.pem'), 'stranger')

    def path(self, name):
        return str(self.dir / name)

    def creds(self, name):
        return {'ssl_cert': self.path(name + '.pem'), 'ssl_key': self.path(name + '.key')}


@pytest.fixture
def pki(tmp_path):
    directory = tmp_path / 'pki'
    directory.mkdir()
    return Pki(directory)


@pytest.fixture
def content(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    path = src / 'pkg.bin'
    path.write_bytes(payload(SIZE, b'ssl'))
    return path


def ssl_torrent(tmp_path, content, tracker, pki):
    """An SSL torrent of content, made by the p2p_torrent module, registered with the tracker."""
    rc, result = run(tmp_path, 'p2p_torrent', path=str(content), dest=str(tmp_path / 'pkg.torrent'),
                     trackers=[tracker.announce_url], ssl_ca_cert=pki.path('ca.pem'))
    assert rc == 0 and result['ssl'] is True, result
    tracker.register(metainfo.describe(result['dest']))
    return result['dest']


def start_seed(tmp_path, state_dir, torrent, path, creds, ip=SEED_IP, name='seed', **extra):
    args = dict(torrent=torrent, dest=str(path), state='seeding', state_dir=state_dir,
                listen_address=ip, peer_name=name, **creds)
    args.update(extra)
    rc, result = run(tmp_path, **args)
    assert rc == 0 and result['status'] == 'seeding' and result['ssl'] is True, result
    return result


def fetch(tmp_path, state_dir, torrent, dest, creds, ip=PEER_IP, name='peer', **extra):
    args = dict(torrent=torrent, dest=str(dest), state_dir=state_dir, listen_address=ip,
                peer_name=name, linger=0, timeout=60, **creds)
    args.update(extra)
    return run(tmp_path, **args)


def assert_gets_nothing(job, dest, seconds=5):
    """Over a bounded window the agent runs but has received no byte."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = job.read_status()
        assert status.get('state') not in ('failed', 'done'), status
        assert not status.get('downloaded') and status.get('progress', 0) == 0, status
        time.sleep(0.25)
    assert not os.path.exists(str(dest))


# ------------------------------------------------------------------ the torrent

def test_ssl_torrent_carries_the_root_cert_and_stays_deterministic(tmp_path, content, tracker, pki):
    torrent = ssl_torrent(tmp_path, content, tracker, pki)
    with open(pki.path('ca.pem')) as handle:
        ca_pem = handle.read()
    ti = lt.torrent_info(torrent)
    assert ti.ssl_cert() == ca_pem
    assert lt.bdecode(ti.info_section())[b'ssl-cert'] == ca_pem.encode()
    first = open(torrent, 'rb').read()
    rc, again = run(tmp_path, 'p2p_torrent', path=str(content), dest=torrent,
                    trackers=[tracker.announce_url], ssl_ca_cert=pki.path('ca.pem'))
    assert rc == 0 and again['changed'] is False and open(torrent, 'rb').read() == first, again
    # The certificate is in the info dictionary: another CA, another info-hash; none, a plain torrent.
    rc, other = run(tmp_path, 'p2p_torrent', path=str(content), dest=str(tmp_path / 'other.torrent'),
                    trackers=[tracker.announce_url], ssl_ca_cert=pki.path('other-ca.pem'))
    rc2, plain = run(tmp_path, 'p2p_torrent', path=str(content), dest=str(tmp_path / 'plain.torrent'),
                     trackers=[tracker.announce_url])
    assert rc == 0 and rc2 == 0 and plain['ssl'] is False, (other, plain)
    assert len({again['info_hash'], other['info_hash'], plain['info_hash']}) == 3
    assert lt.torrent_info(plain['dest']).ssl_cert() == ''


def test_bad_ca_cert_for_the_torrent_fails_clearly(tmp_path, content, pki):
    (tmp_path / 'junk.pem').write_text('not a certificate\n')
    for path, fragment in ((tmp_path / 'missing.pem', 'cannot be read'), (tmp_path / 'junk.pem', 'PEM certificate'),
                           (pki.path('ca.key'), 'PEM certificate')):
        rc, result = run(tmp_path, 'p2p_torrent', path=str(content), dest=str(tmp_path / 'x.torrent'),
                         trackers=['http://127.0.0.1:9/announce'], ssl_ca_cert=str(path))
        assert rc == 1 and fragment in result['msg'] and str(path) in result['msg'], result
    assert not (tmp_path / 'x.torrent').exists()


def test_agent_listens_for_tls_only_on_ssl_torrents():
    assert agent_session.session_settings({'listen_address': '10.0.0.5', 'listen_port': 7000,
                                           'ssl': True})['listen_interfaces'] == '10.0.0.5:7000s'
    assert agent_session.session_settings({'listen_address': '10.0.0.5'})['listen_interfaces'] == '10.0.0.5:0'


# ------------------------------------------------------------- transfers

# Agents on Debian's libtorrent 2.0.8 (/usr/bin/python3, from scripts/setup.sh)
# and on the 2.1 wheel (this venv) take part in one TLS swarm either way round:
# 2.0's binding sets the certificate from files, 2.1's from memory.
SYSTEM_PYTHON = '/usr/bin/python3'


@pytest.mark.parametrize('seed_python,peer_python', [(None, None), (SYSTEM_PYTHON, None), (None, SYSTEM_PYTHON)],
                         ids=['wheel-wheel', 'debian-seed', 'debian-peer'])
def test_hosts_with_the_runs_certificates_swarm_over_tls(tmp_path, state_dir, content, tracker, pki,
                                                         seed_python, peer_python):
    torrent = ssl_torrent(tmp_path, content, tracker, pki)
    start_seed(tmp_path, state_dir, torrent, content, pki.creds('seed'),
               **({'python': seed_python} if seed_python else {}))
    dest = tmp_path / 'got.bin'
    rc, result = fetch(tmp_path, state_dir, torrent, dest, pki.creds('peer'), run_id='ok',
                       **({'python': peer_python} if peer_python else {}))
    assert rc == 0 and result['changed'] and result['ssl'] is True, result
    assert dest.read_bytes() == content.read_bytes()
    job = jobs.Job(state_dir, result['info_hash'], str(dest))
    assert job.read_status()['ssl'] is True
    # The tracker hands out the agents' TLS ports: the seeder's is the one it accepts TLS on.
    seed_port = tracker.peers()['seed']['port']
    assert not plain_handshake(SEED_IP, seed_port, bytes.fromhex(result['info_hash'])).startswith(HANDSHAKE)


HANDSHAKE = b'\x13BitTorrent protocol'


def plain_handshake(ip, port, info_hash):
    """Send a plaintext BitTorrent handshake; return what comes back (b'' when closed)."""
    sock = socket.create_connection((ip, port), timeout=5)
    try:
        sock.sendall(HANDSHAKE + b'\0' * 8 + info_hash + b'-XX0001-' + b'x' * 12)
        return sock.recv(68)
    except OSError:
        return b''
    finally:
        sock.close()


def test_a_stranger_with_another_cas_certificate_gets_nothing(tmp_path, state_dir, content, tracker, pki):
    torrent = ssl_torrent(tmp_path, content, tracker, pki)
    start_seed(tmp_path, state_dir, torrent, content, pki.creds('seed'))
    stolen = tmp_path / 'stolen.bin'
    rc, started = fetch(tmp_path, state_dir, torrent, stolen, pki.creds('stranger'), ip=STRANGER_IP,
                        name='stranger', wait=False, run_id='s', tracker_grace=600)
    assert rc == 0 and started['pid'], started
    job = jobs.Job(state_dir, started['info_hash'], str(stolen))
    # The stranger knows where the seeder is (the tracker told it) and keeps trying.
    wait_until(lambda: job.read_status().get('swarm_complete', 0) >= 1, 30, 'the stranger to learn of the seed')
    assert_gets_nothing(job, stolen)
    # A plaintext client gets no handshake from the seeder's TLS port either.
    reply = plain_handshake(SEED_IP, tracker.peers()['seed']['port'], bytes.fromhex(started['info_hash']))
    assert not reply.startswith(HANDSHAKE), reply
    # Meanwhile a host of the run is served.
    dest = tmp_path / 'got.bin'
    rc, result = fetch(tmp_path, state_dir, torrent, dest, pki.creds('peer'), run_id='ok')
    assert rc == 0 and result['changed'], result
    assert dest.read_bytes() == content.read_bytes()
    assert job.read_status().get('progress', 0) == 0 and not stolen.exists()


def test_a_stranger_cannot_offer_data(tmp_path, state_dir, content, tracker, pki):
    """A stranger holding the (or a forged) file and announcing it as a seed is
    never connected to: the host gets no byte from it."""
    torrent = ssl_torrent(tmp_path, content, tracker, pki)
    start_seed(tmp_path, state_dir, torrent, content, pki.creds('stranger'), ip=STRANGER_IP, name='stranger')
    dest = tmp_path / 'got.bin'
    rc, started = fetch(tmp_path, state_dir, torrent, dest, pki.creds('peer'), wait=False, run_id='p',
                        tracker_grace=600)
    assert rc == 0, started
    job = jobs.Job(state_dir, started['info_hash'], str(dest))
    wait_until(lambda: job.read_status().get('swarm_complete', 0) >= 1, 30, 'the peer to learn of the stranger')
    assert_gets_nothing(job, dest)
    assert job.read_status().get('peers', 0) == 0


# ------------------------------------------------------------- bad input

def test_ssl_torrent_without_certificate_fails_naming_the_cause(tmp_path, state_dir, content, tracker, pki):
    torrent = ssl_torrent(tmp_path, content, tracker, pki)
    dest = tmp_path / 'got.bin'
    (tmp_path / 'junk.pem').write_text('junk')
    cases = [
        ({}, 'SSL torrent', 'ssl_cert and ssl_key must be given'),
        ({'ssl_cert': pki.path('peer.pem')}, 'SSL torrent', 'ssl_key must be given'),
        ({'ssl_cert': str(tmp_path / 'nope.pem'), 'ssl_key': pki.path('peer.key')}, 'ssl_cert', 'nope.pem',
         'cannot be read'),
        ({'ssl_cert': str(tmp_path / 'junk.pem'), 'ssl_key': pki.path('peer.key')}, 'junk.pem', 'not a PEM certificate'),
        ({'ssl_cert': pki.path('peer.pem'), 'ssl_key': pki.path('peer.pem')}, 'ssl_key', 'not a PEM private key'),
    ]
    for creds, *fragments in cases:
        for extra in ({'wait': False}, {'_ansible_check_mode': True}):
            rc, result = fetch(tmp_path, state_dir, torrent, dest, creds, **extra)
            assert rc == 1 and result.get('failed') and result.get('ssl') is True, (creds, result)
            for fragment in fragments:
                assert fragment in result['msg'], (fragment, result['msg'])
    rc, result = start_seed_raw(tmp_path, state_dir, torrent, content)
    assert rc == 1 and 'SSL torrent' in result['msg'], result
    assert jobs.all_jobs(state_dir) == [] and not dest.exists()


def start_seed_raw(tmp_path, state_dir, torrent, content):
    return run(tmp_path, torrent=torrent, dest=str(content), state='seeding', state_dir=state_dir,
               listen_address=SEED_IP)


def test_certificate_for_a_plain_torrent_is_ignored_with_a_warning(tmp_path, state_dir, content, pki):
    plain = str(tmp_path / 'plain.torrent')
    with open(plain, 'wb') as handle:
        handle.write(metainfo.create_torrent(str(content), ['http://127.0.0.1:9/announce']))
    rc, result = fetch(tmp_path, state_dir, plain, tmp_path / 'got.bin', pki.creds('peer'), _ansible_check_mode=True)
    assert rc == 0 and result['ssl'] is False and result['changed'], result
    assert 'not an SSL torrent' in json.dumps(result.get('warnings')), result

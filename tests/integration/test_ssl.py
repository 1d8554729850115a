"""The authenticated swarm (p2p_ssl=true) end to end on a small lab.

The controller makes a CA for the run and a certificate per host, the torrent
carries the CA's certificate, every agent talks TLS only. Three hosts
(P2P_LAB_HOSTS) and a small file: this checks the wiring, not the speed.
"""
import glob
import os
import stat

import libtorrent as lt
import pytest

from helpers import WHEEL_DIR, agent_statuses, describe, host_sha256, peers, run_playbook, swarm_ended, \
    swarm_processes, write_payload

pytestmark = pytest.mark.lab

SIZE = 4 * 1024 * 1024
DEST = '/srv/ssl-payload.bin'
FORKS = 3


@pytest.fixture(scope='module')
def payload(lab):
    return write_payload(lab, 'ssl-payload.bin', SIZE)


def run_dirs(env):
    """The controller's per-run certificate directories (those holding a CA certificate)."""
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(env['HOME'], '.cache', 'p2p-swarm', '*', 'ca.pem')))


def test_ssl_run_puts_a_verified_copy_on_every_host(lab, env, payload):
    path, digest = payload
    before = run_dirs(env)
    proc = run_playbook(lab, env, FORKS, {'file': path, 'dest': DEST, 'p2p_wheel_dir': WHEEL_DIR, 'p2p_ssl': 'true'})
    assert proc.returncode == 0, describe(proc)
    new = [d for d in run_dirs(env) if d not in before]
    assert len(new) == 1, (before, run_dirs(env))
    run_dir = new[0]
    with open(os.path.join(run_dir, 'ca.pem')) as handle:
        ca_pem = handle.read()
    # Once every certificate is signed the CA key is gone: nobody can join this run later.
    assert not os.path.exists(os.path.join(run_dir, 'ca.key'))
    for host in peers(lab):
        assert proc.recap[host]['failed'] == 0 and proc.recap[host]['changed'] > 0, describe(proc)
        assert host_sha256(lab, host, DEST) == digest, host
        statuses = agent_statuses(lab, host, DEST)
        assert statuses and all(s.get('ssl') is True and s.get('placed') for s in statuses), (host, statuses)
        # The torrent pushed to the host carries the run's CA certificate,
        # and the host's key beside it is private.
        # (the agent's job directory is <state_dir>/<info_hash>/<dest id>)
        info_hash = os.path.basename(os.path.dirname(statuses[-1]['job_dir']))
        torrents = lab.host_dir(host) + '/var/lib/p2p-swarm/torrents/'
        assert lt.torrent_info(torrents + info_hash + '.torrent').ssl_cert() == ca_pem, host
        # The certificate and key are the run's (named after the run id, the
        # last path element of the controller's run directory).
        key = torrents + 'run-%s.key' % os.path.basename(run_dir)
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key
        assert os.path.isfile(torrents + 'run-%s.pem' % os.path.basename(run_dir))
    # The seeder seeded over TLS too, with its own certificate.
    seed = agent_statuses(lab, 'seed', path)
    assert seed and all(s.get('ssl') is True for s in seed), seed
    assert swarm_ended(lab) == []

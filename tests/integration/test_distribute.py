"""The distribute playbook end to end on a lab of real sshd hosts.

Ten hosts (P2P_LAB_HOSTS), every link shaped, forks smaller than the host
count, the collection built and installed with ansible-galaxy, libtorrent
installed on each host from a wheel pushed by the peer role.
"""
import re
import socket

import pytest

from helpers import (WHEEL_DIR, agent_statuses, describe, host_sha256, hosts_that_ran, peers, run_playbook,
                     swarm_ended, swarm_processes, write_payload)

pytestmark = pytest.mark.lab

SIZE = 20 * 1024 * 1024
DEST = '/srv/payload.bin'
FORKS = 3


@pytest.fixture(scope='module')
def payload(lab):
    """A random file where the seed host can read it (shared part of the tree)."""
    return write_payload(lab, 'payload.bin', SIZE)


def common_vars(payload_path, **extra):
    values = {'file': payload_path, 'dest': DEST, 'p2p_wheel_dir': WHEEL_DIR}
    values.update(extra)
    return values


def rx_bytes(lab, host):
    return int(lab.exec(host, ['cat', '/sys/class/net/eth0/statistics/rx_bytes']).stdout)


def test_first_run_puts_a_verified_copy_on_every_host(lab, env, payload):
    path, digest = payload
    # A download limit keeps each host busy for ~20 s, far longer than it
    # takes to start every agent, so the overlap check below is not a race.
    proc = run_playbook(lab, env, FORKS, common_vars(path, p2p_download_rate_limit=1024 * 1024))
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert proc.recap[host]['failed'] == 0 and proc.recap[host]['changed'] > 0, describe(proc)
        assert host_sha256(lab, host, DEST) == digest, host
        st = lab.exec(host, ['stat', '-c', '%a', DEST]).stdout.strip()
        assert st == '644', (host, st)
        # No hidden part file or other trace of the download beside dest.
        leftovers = lab.exec(host, ['ls', '-A', '/srv']).stdout.split()
        assert 'payload.bin' in leftovers and not [f for f in leftovers if f.startswith('.')], (host, leftovers)
    # Concurrency does not depend on forks: every agent was running before
    # the first host finished, although only 3 hosts were handled at a time.
    statuses = [s for h in peers(lab) for s in agent_statuses(lab, h, DEST)]
    assert len(statuses) == len(peers(lab))
    last_start = max(s['started_at'] for s in statuses)
    first_done = min(s['placed_at'] for s in statuses)
    assert last_start < first_done, (last_start, first_done)
    # The download limit held on a LAN (libtorrent exempts local peers unless
    # told otherwise): 20 MiB at 1 MiB/s cannot take less than ~19 s.
    assert min(s['placed_at'] - s['started_at'] for s in statuses) > 15
    # Pieces came from the peers, not only from the seed.
    assert sum(s['uploaded'] for s in statuses) > SIZE, [s['uploaded'] for s in statuses]
    assert 'hosts done' in proc.stdout
    assert swarm_ended(lab) == []


def test_second_run_changes_nothing_and_moves_no_bytes(lab, env, payload):
    path, digest = payload
    before = {h: rx_bytes(lab, h) for h in peers(lab)}
    inode = {h: lab.exec(h, ['stat', '-c', '%i %Y', DEST]).stdout for h in peers(lab)}
    proc = run_playbook(lab, env, FORKS, common_vars(path))
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert proc.recap[host]['changed'] == 0 and proc.recap[host]['failed'] == 0, describe(proc)
        assert lab.exec(host, ['stat', '-c', '%i %Y', DEST]).stdout == inode[host]
        # ssh and module transfer only: far less than the 20 MiB file.
        assert rx_bytes(lab, host) - before[host] < SIZE // 10, host
    # libtorrent is where the first run put it: the start ran there at once,
    # no peer ran the interpreter probe (one round per host fewer).
    assert hosts_that_ran(proc.stdout, 'Get the file, or start its download') == set(peers(lab)), describe(proc)
    assert hosts_that_ran(proc.stdout, 'Look for a python that imports libtorrent') & set(peers(lab)) == set(), \
        describe(proc)
    assert swarm_ended(lab) == []


def test_check_mode_reports_who_would_change_and_moves_no_bytes(lab, env, payload):
    path, digest = payload
    dest = '/srv/check-mode.bin'
    before = dict((host, rx_bytes(lab, host)) for host in peers(lab))
    proc = run_playbook(lab, env, FORKS, common_vars(path, dest=dest), options=['--check', '--diff'])
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert proc.recap[host]['changed'] > 0 and proc.recap[host]['failed'] == 0, describe(proc)
        assert lab.exec(host, ['ls', '-A', '/srv']).stdout.split().count('check-mode.bin') == 0, host
        # No swarm ran: a few kB of ssh, not the 20 MiB file.
        assert rx_bytes(lab, host) - before[host] < 2 * 1024 * 1024, host
    # --diff: each host's file before (absent) and the torrent's SHA-256 after.
    assert proc.stdout.count('path: %s (absent)' % dest) >= len(peers(lab)), describe(proc)
    assert 'sha256: %s' % digest in proc.stdout, describe(proc)
    assert swarm_ended(lab) == []


def test_missing_file_is_named_with_the_seeder_host(lab, env, payload):
    proc = run_playbook(lab, env, FORKS, common_vars('/nonexistent/pkg.tar.gz', dest='/srv/other.bin'))
    assert proc.returncode != 0
    assert 'file /nonexistent/pkg.tar.gz does not exist on seed' in proc.stdout, describe(proc)
    for host in peers(lab):
        assert lab.exec(host, ['test', '-e', '/srv/other.bin']).returncode != 0


def test_unreachable_tracker_the_hosts_still_get_the_file_from_their_listed_peers(lab, env, payload):
    path, digest = payload
    # The seed host's address, a port nothing listens on: refused at once, all on the lab.
    proc = run_playbook(lab, env, FORKS, common_vars(
        path, dest='/srv/unreachable.bin', p2p_tracker_url='http://%s:9/announce' % lab.ip('seed'),
        p2p_timeout=120))
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert proc.recap[host]['changed'] >= 1, describe(proc)
        assert host_sha256(lab, host, '/srv/unreachable.bin') == digest, host
    # Each outcome came from the host itself, which says how it got there.
    named = re.search(r'no tracker: (.*) got the file from the peers they were given', proc.stdout)
    assert named and set(named.group(1).split(', ')) == set(peers(lab)), describe(proc)
    assert swarm_ended(lab) == []


def test_hosts_cut_off_from_the_tracker_still_verify_and_are_named(lab, env, payload):
    """Two hosts cannot reach the tracker's port (their own link drops those
    packets): they get the file from the peers they were given, and the play
    names them "no tracker"; the others report through the tracker. (An
    `ip rule ... dport 6969 prohibit` in the host did not stop libtorrent's
    announces in this lab, though it stops a plain connect(); tc does.)"""
    path, digest = payload
    dest = '/srv/blocked.bin'
    blocked = peers(lab)[:2]
    # Packets to the tracker's port go to a class whose queue holds none.
    drop = [['tc', 'class', 'add', 'dev', 'eth0', 'parent', '1:', 'classid', '1:99', 'htb', 'rate', '8kbit'],
            ['tc', 'qdisc', 'add', 'dev', 'eth0', 'parent', '1:99', 'handle', '99:', 'pfifo', 'limit', '0'],
            ['tc', 'filter', 'add', 'dev', 'eth0', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32',
             'match', 'ip', 'dst', lab.ip('seed') + '/32', 'match', 'ip', 'dport', '6969', '0xffff', 'flowid', '1:99']]
    undo = [['tc', 'filter', 'del', 'dev', 'eth0', 'parent', '1:', 'protocol', 'ip', 'prio', '1'],
            ['tc', 'qdisc', 'del', 'dev', 'eth0', 'parent', '1:99', 'handle', '99:'],
            ['tc', 'class', 'del', 'dev', 'eth0', 'classid', '1:99']]
    for host in blocked:
        for argv in drop:
            assert lab.exec(host, argv).returncode == 0, argv
    try:
        proc = run_playbook(lab, env, FORKS, common_vars(path, dest=dest, p2p_tracker_grace=15))
    finally:
        for host in blocked:
            for argv in undo:
                lab.exec(host, argv)
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert host_sha256(lab, host, dest) == digest, host
    # The tracker never heard of them; the others' outcomes came from it.
    assert all('%s (never announced)' % h in proc.stdout for h in blocked), describe(proc)
    named = re.search(r'no tracker: (.*) got the file from the peers they were given', proc.stdout)
    assert named and set(named.group(1).split(', ')) == set(blocked), describe(proc)
    assert swarm_ended(lab) == []


def test_host_that_cannot_write_dest_fails_alone(lab, env, payload):
    path, digest = payload
    bad = peers(lab)[2]
    for host in peers(lab):
        lab.exec(host, ['mkdir', '-p', '/srv/ro'])
    # A read-only mount on one host: root cannot write there either.
    assert lab.exec(bad, ['mount', '-t', 'tmpfs', '-o', 'ro,size=64m', 'tmpfs', '/srv/ro']).returncode == 0
    try:
        proc = run_playbook(lab, env, FORKS, common_vars(path, dest='/srv/ro/payload.bin'))
    finally:
        lab.exec(bad, ['umount', '/srv/ro'])
    assert proc.returncode != 0
    assert proc.recap[bad]['failed'] == 1, describe(proc)
    assert 'Read-only file system' in proc.stdout, describe(proc)
    for host in peers(lab):
        if host != bad:
            assert proc.recap[host]['failed'] == 0, describe(proc)
            assert host_sha256(lab, host, '/srv/ro/payload.bin') == digest
    assert swarm_ended(lab) == []


def free_port(address):
    """A port nobody listens on now (the controller is shared with other programs)."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def test_controller_as_seeder(lab, env, payload):
    """The common real setup: the file is on the controller, which seeds and runs the tracker."""
    path, digest = payload
    proc = run_playbook(lab, env, FORKS, common_vars(
        path, dest='/srv/from-controller.bin', p2p_seeder_host='localhost',
        p2p_tracker_address=lab.controller_ip, p2p_tracker_port=free_port(lab.controller_ip)))
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert proc.recap[host]['failed'] == 0, describe(proc)
        assert host_sha256(lab, host, '/srv/from-controller.bin') == digest, host
    assert 'localhost' not in proc.recap or proc.recap['localhost']['failed'] == 0
    assert swarm_ended(lab) == []

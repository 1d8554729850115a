"""Real fleets: hosts with their own minimal Debian root file system.

Every host here is a bare Debian 12 (Python 3.11) or 13 (Python 3.13) image:
python3 and openssh-server, no pip, no ensurepip, no libtorrent (tests/lab,
images=). The lab serves a PEP 503 index with PyPI's libtorrent wheels and an
apt repository per release (python3-libtorrent and what it needs), so every
install mode runs for real and offline. The seeder is a bare Debian 12 host
that gets Debian's libtorrent 2.0.8 (distro); the peers get 2.1 wheels, 2.0.8
or 2.0.11, each by another mode.

One lab for the module, used in order: --check on the first contact, bad
input, every install mode, a rerun. Another, on IPv6, for prepare.yml.
"""
import hashlib
import os
import re

import pytest

from conftest import p2p_lab, require_root
from ansible_collections.p2p.swarm.plugins.module_utils import metainfo
from helpers import WHEEL_DIR, describe, hosts_that_ran, make_env, run_playbook, swarm_ended, swarm_processes

pytestmark = pytest.mark.lab

IMAGES = ['bookworm', 'trixie']
SIZE = 6 * 1024 * 1024
FORKS = 7
SEED_FILE = '/srv/release.bin'      # on the seed host
DEST = '/srv/release.bin'
BAD_DEST = '/srv/bad-input.bin'
OLD_PY = '/usr/local/bin/oldpy'     # a python whose libtorrent says 1.2.19


@pytest.fixture(scope='module')
def lab():
    """seed + 6 peers over bookworm and trixie images (module scope: it
    overrides the session lab, so the autouse clean-up works on it)."""
    require_root()
    fleet = p2p_lab.Lab(6, rate='200mbit', workdir='/var/lib/p2p-lab-fleet', prefix='p2pfleet',
                        subnet='10.231.7', images=IMAGES)
    try:
        fleet.up()
        yield fleet
    finally:
        fleet.down()


@pytest.fixture(scope='module')
def env(lab, tmp_path_factory):
    return make_env(tmp_path_factory)


@pytest.fixture(scope='module')
def payload(lab):
    data = os.urandom(SIZE)
    path = lab.host_dir('seed') + SEED_FILE
    with open(path, 'wb') as handle:
        handle.write(data)
    return hashlib.sha256(data).hexdigest()


def by_image(lab, image):
    return [h for h in lab.peers if lab.image(h) == image]


def write_inventory(tmp_path, name, hostvars):
    """A second inventory with per-host variables (ini host lines)."""
    lines = ['[peers]']
    for host, variables in hostvars.items():
        lines.append(' '.join([host] + ['%s=%s' % item for item in variables.items()]))
    path = tmp_path / name
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def listing(lab):
    """What a run may touch on each host: /opt, /var/lib/p2p-swarm, /srv."""
    out = {}
    for host in lab.hosts:
        proc = lab.exec(host, ['sh', '-c', 'find /opt /var/lib/p2p-swarm /srv /etc/apt -printf "%p %s %T@\\n" 2>/dev/null | sort'])
        out[host] = proc.stdout
    return out


def sha(lab, host, path):
    proc = lab.exec(host, ['sha256sum', path])
    return proc.stdout.split()[0] if proc.returncode == 0 else None


def failure_line(stdout, host):
    """The msg of host's failed task, from the default callback's output."""
    m = re.search(r'fatal: \[%s[^\]]*\]: FAILED! => \{.*?"msg": "((?:[^"\\]|\\.)*)"' % re.escape(host), stdout)
    return m.group(1) if m else None


def modes(lab):
    """One install mode per host, covering each on both releases where it can."""
    trixie, bookworm = by_image(lab, 'trixie'), by_image(lab, 'bookworm')
    return {
        'seed': {'p2p_libtorrent_install': 'distro'},                      # Debian 12's 2.0.8
        trixie[0]: {'p2p_libtorrent_install': 'auto', 'p2p_wheel_dir': WHEEL_DIR},
        trixie[1]: {'p2p_libtorrent_install': 'index', 'p2p_pip_index_url': lab.index_url},
        trixie[2]: {'p2p_libtorrent_install': 'none', 'p2p_python': '/usr/bin/python3'},
        bookworm[0]: {'p2p_libtorrent_install': 'wheel', 'p2p_wheel_dir': WHEEL_DIR},
        bookworm[1]: {'p2p_libtorrent_install': 'distro'},
        bookworm[2]: {'p2p_libtorrent_install': 'auto', 'p2p_pip_index_url': lab.index_url},
    }


def test_check_on_bare_hosts_reports_and_changes_nothing(lab, env, payload):
    before = listing(lab)
    proc = run_playbook(lab, env, FORKS, {'file': SEED_FILE, 'dest': DEST, 'p2p_wheel_dir': WHEEL_DIR},
                        options=['--check'])
    assert proc.returncode == 0, describe(proc)
    for host in lab.peers:
        assert proc.recap[host]['failed'] == 0 and proc.recap[host]['changed'] >= 1, describe(proc)
    assert 'would install libtorrent on seed, make the torrent and download %d bytes to %s' % (SIZE, DEST) \
        in proc.stdout, describe(proc)
    assert listing(lab) == before
    assert swarm_ended(lab) == []


def test_bad_input_fails_only_the_hosts_concerned_in_one_line(lab, env, payload, tmp_path):
    trixie, bookworm = by_image(lab, 'trixie'), by_image(lab, 'bookworm')
    # A wheel directory that has only Python 3.11's wheel: no use to a Debian 13 host.
    only311 = tmp_path / 'wheels311'
    only311.mkdir()
    for name in os.listdir(WHEEL_DIR):
        if '-cp311-' in name:
            os.link(os.path.join(WHEEL_DIR, name), str(only311 / name))
    # A python whose libtorrent is 1.2 (Ubuntu 20.04's), wrapped so the probe sees it.
    old_lt = lab.host_dir(trixie[2]) + '/usr/local/lib/oldlt'
    os.makedirs(old_lt)
    with open(old_lt + '/libtorrent.py', 'w') as handle:
        handle.write("__version__ = '1.2.19.0'\n")
    with open(lab.host_dir(trixie[2]) + OLD_PY, 'w') as handle:
        handle.write('#!/bin/sh\nPYTHONPATH=/usr/local/lib/oldlt exec /usr/bin/python3 "$@"\n')
    os.chmod(lab.host_dir(trixie[2]) + OLD_PY, 0o755)
    inventory = write_inventory(tmp_path, 'bad.ini', {
        'seed': {'p2p_libtorrent_install': 'distro'},
        trixie[0]: {'p2p_libtorrent_install': 'wheel', 'p2p_wheel_dir': str(only311)},
        trixie[1]: {'p2p_libtorrent_install': 'index', 'p2p_pip_index_url': 'http://%s:9/simple/' % lab.controller_ip},
        trixie[2]: {'p2p_libtorrent_install': 'none', 'p2p_python': OLD_PY},
        bookworm[0]: {'p2p_libtorrent_install': 'wheel', 'p2p_wheel_dir': WHEEL_DIR},
        bookworm[1]: {'p2p_libtorrent_install': 'distro'},
        bookworm[2]: {'p2p_libtorrent_install': 'index', 'p2p_pip_index_url': lab.index_url},
    })
    proc = run_playbook(lab, env, FORKS, {'file': SEED_FILE, 'dest': BAD_DEST}, options=['-i', inventory])
    assert proc.returncode != 0
    expected = {
        trixie[0]: 'no libtorrent wheel for CPython 3.13 (cp313, x86_64) of %s in %s' % (trixie[0], only311),
        trixie[1]: 'cannot read the package index http://%s:9/simple/libtorrent/' % lab.controller_ip,
        trixie[2]: '%s: no libtorrent 2.0.5 or later (found: %s has 1.2.19.0)' % (trixie[2], OLD_PY),
    }
    for host, fragment in expected.items():
        line = failure_line(proc.stdout, host)
        assert line and fragment in line, (host, line, describe(proc))
        assert proc.recap[host]['failed'] == 1
        assert sha(lab, host, BAD_DEST) is None
        assert lab.exec(host, ['sh', '-c', 'ls -A /srv']).stdout.split() == [], host
    for host in bookworm:
        assert proc.recap[host]['failed'] == 0, describe(proc)
        assert sha(lab, host, BAD_DEST) == payload, host
    assert swarm_ended(lab) == []


def test_every_install_mode_ends_in_a_verified_file(lab, env, payload, tmp_path):
    trixie, bookworm = by_image(lab, 'trixie'), by_image(lab, 'bookworm')
    # `none` needs libtorrent already there: Debian 13's 2.0.11 from the lab's apt repository.
    proc = lab.exec(trixie[2], ['sh', '-c', 'apt-get update -q && apt-get install -y -q python3-libtorrent'],
                    timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    inventory = write_inventory(tmp_path, 'modes.ini', modes(lab))
    proc = run_playbook(lab, env, FORKS, {'file': SEED_FILE, 'dest': DEST}, options=['-i', inventory])
    assert proc.returncode == 0, describe(proc)
    for host in lab.peers:
        assert sha(lab, host, DEST) == payload, host
    versions = {}
    for host, variables in modes(lab).items():
        python = '/usr/bin/python3' if variables['p2p_libtorrent_install'] in ('distro', 'none') \
            else '/opt/p2p-swarm/venv/bin/python'
        versions[host] = lab.exec(host, [python, '-c', 'import libtorrent; print(libtorrent.__version__)']).stdout.strip()
    assert versions['seed'].startswith('2.0.8') and versions[bookworm[1]].startswith('2.0.8'), versions
    assert versions[trixie[2]].startswith('2.0.11'), versions
    for host in (trixie[0], trixie[1], bookworm[0], bookworm[2]):
        assert versions[host].startswith('2.1.'), versions
        # No pip on the host, and none was needed.
        assert lab.exec(host, ['/usr/bin/python3', '-c', 'import pip']).returncode != 0, host
    # Only the wheel that fits went to each wheel host.
    assert [n for n in os.listdir(lab.host_dir(trixie[0]) + '/opt/p2p-swarm/venv.wheels')] == \
        [n for n in os.listdir(WHEEL_DIR) if '-cp313-' in n]
    # The seeder's 2.0.8 made the torrent the peers' 2.1 downloaded; the
    # controller's 2.1 makes the same info-hash from the same bytes.
    hashes = [f[:-len('.torrent')] for f in os.listdir(lab.host_dir(trixie[0]) + '/var/lib/p2p-swarm/torrents')
              if f.endswith('.torrent')]
    assert len(hashes) == 1
    copy = tmp_path / os.path.basename(SEED_FILE)
    with open(lab.host_dir('seed') + SEED_FILE, 'rb') as src, open(str(copy), 'wb') as dst:
        dst.write(src.read())
    ours = metainfo.describe(metainfo.create_torrent(str(copy), ['http://%s:6969/announce' % lab.ip('seed')]))
    assert ours['info_hash'] == hashes[0]
    assert swarm_ended(lab) == []



def test_a_rerun_is_one_quiet_round(lab, env, payload, tmp_path):
    inventory = write_inventory(tmp_path, 'modes.ini', modes(lab))
    before = listing(lab)
    received = {h: rx_bytes(lab, h) for h in lab.peers}
    proc = run_playbook(lab, env, FORKS, {'file': SEED_FILE, 'dest': DEST}, options=['-i', inventory])
    assert proc.returncode == 0, describe(proc)
    for host in lab.peers:
        assert proc.recap[host]['changed'] == 0 and proc.recap[host]['failed'] == 0, describe(proc)
        assert rx_bytes(lab, host) - received[host] < SIZE // 10, host
    # (The seeder's own probe runs every run, once: it is not a target.)
    assert hosts_that_ran(proc.stdout, 'Look for a python that imports libtorrent') & set(lab.peers) == set(), \
        describe(proc)
    after = listing(lab)
    # The run's own tracker starts before the round and stops at the end,
    # whether or not a host needs the file: its directory on the seeder
    # (scripts, registrations, log) is the one thing a quiet rerun touches.
    tracker_dir = '/var/lib/p2p-swarm/tracker'
    assert {h: v for h, v in after.items() if h != 'seed'} == {h: v for h, v in before.items() if h != 'seed'}
    assert without(after['seed'], tracker_dir) == without(before['seed'], tracker_dir)
    assert swarm_ended(lab) == []


def without(text, prefix):
    return [line for line in text.splitlines() if not line.startswith(prefix)]


@pytest.fixture(scope='module')
def lab6():
    """seed + 2 bare hosts reached over IPv6 only (ansible_host, tracker, swarm)."""
    require_root()
    fleet = p2p_lab.Lab(2, rate='200mbit', workdir='/var/lib/p2p-lab-fleet6', prefix='p2pfsix',
                        subnet='10.231.8', images=IMAGES, ipv6=True)
    try:
        fleet.up()
        yield fleet
    finally:
        fleet.down()


def rx_bytes(lab, host):
    return int(lab.exec(host, ['cat', '/sys/class/net/eth0/statistics/rx_bytes']).stdout)


def test_defaults_with_a_wheel_dir_over_ipv6_prepared_or_not(lab6, tmp_path_factory):
    """prepare.yml on one bare host, then the distribute playbook with its
    defaults and a wheel directory on all (Debian 13 prepared, Debian 12 and
    the seeder bare), then a rerun: verified, then changed=0 with no bytes."""
    env6 = make_env(tmp_path_factory)
    prepared, bare = lab6.peers
    assert (lab6.image(prepared), lab6.image(bare)) == ('trixie', 'bookworm')
    with open(lab6.inventory) as handle:
        assert 'seed ansible_host=%s' % lab6.ip6('seed') in handle.read()
    data = os.urandom(SIZE)
    with open(lab6.host_dir('seed') + SEED_FILE, 'wb') as handle:
        handle.write(data)
    proc = run_playbook(lab6, env6, 3, {'p2p_wheel_dir': WHEEL_DIR}, playbook='p2p.swarm.prepare',
                        options=['--limit', prepared])
    assert proc.returncode == 0 and proc.recap[prepared]['changed'] >= 1, describe(proc)
    assert lab6.exec(prepared, ['/opt/p2p-swarm/venv/bin/python', '-c', wheels_probe()]).stdout.startswith('2.1.')
    assert not os.path.exists(lab6.host_dir(bare) + '/opt/p2p-swarm')

    proc = run_playbook(lab6, env6, 3, {'file': SEED_FILE, 'dest': DEST, 'p2p_wheel_dir': WHEEL_DIR})
    assert proc.returncode == 0, describe(proc)
    for host in lab6.peers:
        assert sha(lab6, host, DEST) == hashlib.sha256(data).hexdigest(), host
    # The prepared host went straight to its need check; the bare one was set up.
    assert hosts_that_ran(proc.stdout, 'Look for a python that imports libtorrent') & set(lab6.peers) == {bare}, \
        describe(proc)
    torrents = [t for t in os.listdir(lab6.host_dir(bare) + '/var/lib/p2p-swarm/torrents') if t.endswith('.torrent')]
    desc = metainfo.describe(lab6.host_dir(bare) + '/var/lib/p2p-swarm/torrents/' + torrents[0])
    assert desc['trackers'] == ['http://[%s]:6969/announce' % lab6.ip6('seed')]

    before = {h: rx_bytes(lab6, h) for h in lab6.peers}
    proc = run_playbook(lab6, env6, 3, {'file': SEED_FILE, 'dest': DEST, 'p2p_wheel_dir': WHEEL_DIR})
    assert proc.returncode == 0, describe(proc)
    for host in lab6.peers:
        assert proc.recap[host]['changed'] == 0 and proc.recap[host]['failed'] == 0, describe(proc)
        # ssh and module transfer only: far less than the file.
        assert rx_bytes(lab6, host) - before[host] < SIZE // 10, host
    assert hosts_that_ran(proc.stdout, 'Look for a python that imports libtorrent') & set(lab6.peers) == set(), \
        describe(proc)
    assert swarm_ended(lab6) == []


def wheels_probe():
    return 'import libtorrent; print(libtorrent.__version__)'

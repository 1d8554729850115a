"""The lab itself: hosts reachable over ssh, private filesystems, the rate
limit in both directions, and a `down` that leaves nothing behind."""
import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'lab'))
import lab as p2p_lab  # noqa: E402

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANSIBLE = os.path.join(REPO, '.venv', 'bin', 'ansible')
TRANSFER_BYTES = 5 * 1000 * 1000
RATE_TOLERANCE = (0.70, 1.10)
CONTROLLER = 'controller'          # the root namespace, in rate tests

# A second, small lab for the up/down tests: own prefix, subnet and dir, so it
# can come and go while the session lab is up.
SCRATCH = dict(prefix='p2pscratch', subnet='10.231.1', workdir='/var/lib/p2p-lab-scratch')


def ansible(inventory, pattern, *args, forks=3, timeout=180):
    """Run an ad-hoc ansible command; returns (rc, {host: status}, output)."""
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_DEPRECATION_WARNINGS='0')
    proc = subprocess.run([ANSIBLE, '-i', inventory, pattern, '-f', str(forks)] + list(args),
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    out = proc.stdout + proc.stderr
    status = dict(re.findall(r'^(\S+) \| (SUCCESS|CHANGED|FAILED|UNREACHABLE)', out, re.M))
    return proc.returncode, status, out


# --- reachability ------------------------------------------------------------

def test_ansible_ping_reaches_every_host(lab):
    rc, status, out = ansible(lab.inventory, 'all', '-m', 'ping', forks=3)
    assert rc == 0, out
    assert status == {h: 'SUCCESS' for h in lab.hosts}, out


def test_inventory_groups_and_vars(lab):
    inv = json.loads(subprocess.run([ANSIBLE + '-inventory', '-i', lab.inventory, '--list'],
                                    capture_output=True, text=True, timeout=60).stdout)
    assert inv['seeders']['hosts'] == ['seed']
    assert inv['peers']['hosts'] == lab.peers
    hostvars = inv['_meta']['hostvars']
    assert hostvars['seed']['ansible_host'] == lab.ip('seed')
    assert hostvars['h01']['ansible_host'] == lab.ip('h01')
    for h in lab.hosts:
        v = hostvars[h]
        assert v['ansible_python_interpreter'] == '/usr/bin/python3'
        assert v['p2p_seeder_host'] == 'seed'
        assert v['p2p_tracker_address'] == lab.ip('seed')
        assert v['p2p_targets'] == 'peers'


def test_hosts_use_system_python(lab):
    rc, status, out = ansible(lab.inventory, 'h01', '-m', 'command', '-a',
                              '/usr/bin/python3 -c "import sys; print(sys.executable)"')
    assert rc == 0 and status.get('h01') == 'CHANGED', out
    assert '/usr/bin/python3' in out


# --- private filesystems -----------------------------------------------------

def test_private_dirs_are_private(lab):
    a, b = lab.peers[0], lab.peers[1]
    marker = 'lab-test-%s' % uuid.uuid4().hex[:8]
    try:
        for d in p2p_lab.PRIVATE_DIRS:
            path = os.path.join(d, marker)
            r = lab.exec(a, ['sh', '-c', 'echo %s > %s' % (a, path)])
            assert r.returncode == 0, r.stderr
            assert lab.exec(a, ['cat', path]).stdout.strip() == a
            assert lab.exec(b, ['test', '-e', path]).returncode == 1, '%s visible on %s' % (path, b)
            assert lab.exec('seed', ['test', '-e', path]).returncode == 1
            assert not os.path.exists(path), '%s visible in the root namespace' % path
            with open(lab.host_dir(a) + path) as f:
                assert f.read().strip() == a
    finally:
        for d in p2p_lab.PRIVATE_DIRS:
            lab.exec(a, ['rm', '-f', os.path.join(d, marker)])


def test_ssh_sessions_get_the_private_view(lab):
    """What Ansible sees over ssh is the same private /srv as lab.exec."""
    a, b = lab.peers[0], lab.peers[1]
    marker = '/srv/lab-test-%s' % uuid.uuid4().hex[:8]
    try:
        rc, status, out = ansible(lab.inventory, a, '-m', 'copy', '-a',
                                  'content=%s dest=%s' % (a, marker))
        assert rc == 0, out
        assert lab.exec(a, ['cat', marker]).stdout == a
        rc, status, out = ansible(lab.inventory, b, '-m', 'command', '-a', 'cat %s' % marker)
        assert rc != 0 and status.get(b) == 'FAILED', out
        assert not os.path.exists(marker)
    finally:
        lab.exec(a, ['rm', '-f', marker])


def test_everything_else_is_shared(lab):
    # The lab's own files (not under a private dir) and the system are shared.
    assert lab.exec('h01', ['test', '-f', lab.inventory]).returncode == 0
    assert lab.exec('h01', ['test', '-x', '/usr/bin/python3']).returncode == 0


# --- rate limits -----------------------------------------------------------

RECEIVER = r'''
import json, socket, sys, time
ip, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((ip, port))
srv.listen(1)
srv.settimeout(30)
print('ready', flush=True)
conn, _ = srv.accept()
conn.settimeout(30)
n, t0 = 0, None
while True:
    chunk = conn.recv(1 << 20)
    if not chunk:
        break
    if t0 is None:
        t0 = time.monotonic()
    n += len(chunk)
print(json.dumps({'bytes': n, 'seconds': time.monotonic() - t0}), flush=True)
'''

SENDER = r'''
import socket, sys
ip, port, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((ip, port), timeout=30)
s.sendall(b'\0' * nbytes)
s.shutdown(socket.SHUT_WR)
s.recv(1)
'''


def _python_on(lab, where, script, *args):
    """argv running a python script on a lab host or on the controller."""
    if where == CONTROLLER:
        return [sys.executable, '-c', script] + list(args)
    return lab.exec_argv(where, ['/usr/bin/python3', '-c', script] + list(args))


def measure(lab, src, dst, nbytes=TRANSFER_BYTES, port=5201):
    """Push nbytes over TCP from src to dst; return bits/s seen by dst."""
    dst_ip = lab.controller_ip if dst == CONTROLLER else lab.ip(dst)
    rx = subprocess.Popen(_python_on(lab, dst, RECEIVER, dst_ip, str(port)),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == 'ready', rx.stderr.read()
        tx = subprocess.run(_python_on(lab, src, SENDER, dst_ip, str(port), str(nbytes)),
                            capture_output=True, text=True, timeout=60)
        assert tx.returncode == 0, tx.stderr
        out, err = rx.communicate(timeout=30)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    result = json.loads(out)
    assert result['bytes'] == nbytes
    return result['bytes'] * 8 / result['seconds']


@pytest.mark.parametrize('src,dst', [
    ('h01', CONTROLLER),      # h01's upload alone (ns-side veth)
    (CONTROLLER, 'h01'),      # h01's download alone (bridge-side veth)
    ('seed', CONTROLLER),     # the seed is limited too
    (CONTROLLER, 'seed'),
    ('h01', 'h02'),           # host to host: both shapers in the path
])
def test_rate_limit_holds(lab, src, dst):
    t0 = time.monotonic()
    bps = measure(lab, src, dst)
    ratio = bps / lab.rate_bps
    print('%s -> %s: %.1f Mbit/s = %.0f%% of %s' % (src, dst, bps / 1e6, ratio * 100, lab.rate))
    lo, hi = RATE_TOLERANCE
    assert lo <= ratio <= hi, '%s -> %s ran at %.1f Mbit/s, %.0f%% of %s' % (
        src, dst, bps / 1e6, ratio * 100, lab.rate)
    assert time.monotonic() - t0 < 30


def test_shaping_is_htb_with_bfifo_both_ways(lab):
    for h in ('seed', 'h01'):
        inside = lab.exec(h, ['tc', 'qdisc', 'show', 'dev', 'eth0']).stdout
        outside = subprocess.run(['tc', 'qdisc', 'show', 'dev', lab.veth(h)],
                                 capture_output=True, text=True, timeout=10).stdout
        for out in (inside, outside):
            assert 'qdisc htb 1: root' in out and 'qdisc bfifo 10: parent 1:1' in out, out


# --- up and down -----------------------------------------------------------

def _netns_inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _pids_in(inodes):
    """Pids whose network namespace inode is in `inodes` (own /proc scan)."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            link = os.readlink('/proc/%s/ns/net' % pid)
        except OSError:
            continue
        if int(link[len('net:['):-1]) in inodes:
            found.append(int(pid))
    return found


def _output(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout


@pytest.fixture
def scratch_lab():
    """A 2-peer lab of its own; always down at the end."""
    if os.geteuid() != 0:
        pytest.skip('the lab needs root (network namespaces, veths, tc, mounts)')
    lab = p2p_lab.Lab(2, **SCRATCH)
    try:
        yield lab
    finally:
        lab.down(purge=True)


def test_down_leaves_nothing(scratch_lab):
    lab = scratch_lab.up()
    # Keep things alive the way real use does: ControlPersist ssh masters on
    # the controller, a detached process started over ssh, and one via exec.
    rc, status, out = ansible(lab.inventory, 'all', '-m', 'shell', '-a',
                              'setsid nohup sleep 600 >/dev/null 2>&1 < /dev/null &')
    assert rc == 0, out
    detached = lab.exec('h01', ['setsid', '-f', 'sleep', '600'],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert detached.returncode == 0
    inodes = {_netns_inode('/run/netns/' + lab.namespace(h)) for h in lab.hosts}
    assert None not in inodes
    assert len(_pids_in(inodes)) >= 2 * len(lab.hosts)     # sshd + sleep at least
    assert p2p_lab.controller_ssh_pids(lab.subnet), 'expected ControlPersist masters'

    t0 = time.monotonic()
    lab.down()
    assert time.monotonic() - t0 < 20

    assert not [n for n in _output(['ip', 'netns', 'list']).split() if n.startswith(lab.prefix)]
    links = _output(['ip', '-o', 'link', 'show'])
    assert lab.prefix not in links, links
    assert _pids_in(inodes) == []
    assert p2p_lab.controller_ssh_pids(lab.subnet) == []
    assert not os.path.exists(lab.state_file)
    assert not os.path.exists(lab.host_dir('h01'))
    lab.down()                                   # idempotent


def test_up_clears_a_crashed_lab(scratch_lab):
    scratch_lab.up()
    # A crash: the object is gone, the lab is not. A bigger lab on the same
    # prefix must come up anyway (no "File exists").
    again = p2p_lab.Lab(3, **SCRATCH).up()
    assert again.status() and all(r['ssh'] for r in again.status())
    rc, status, out = ansible(again.inventory, 'all', '-m', 'ping')
    assert rc == 0 and len(status) == 4, out
    again.down()
    assert again.leftovers() == []

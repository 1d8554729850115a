"""The lab itself: hosts reachable over ssh, private filesystems, the rate
limit in both directions, and a `down` that leaves nothing behind."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
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


def test_ssh_sessions_read_a_stock_bashrc(lab):
    """bash reads ~/.bashrc for every command sshd runs: a plain host's is
    the lab's stock one, not the controller's (which may start pyenv etc.)."""
    rc, status, out = ansible(lab.inventory, 'h01', '-m', 'raw', '-a', 'cat %s' % p2p_lab.BASHRC)
    if os.path.isfile(p2p_lab.BASHRC):
        assert rc == 0, out
        assert p2p_lab.STOCK_BASHRC.splitlines()[0] in out, out
    else:
        assert rc != 0, out     # none on the controller: none on the host either


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


def test_neighbour_table_fits_the_lab(lab):
    """The kernel keeps one neighbour table for all namespaces: the lab
    raises its limits so every host can hold an entry for every other (at
    40 hosts the default 1024 overflowed and hosts lost the seeder)."""
    endpoints = len(lab.hosts) + 1
    for family in ('ipv4', 'ipv6'):
        with open(p2p_lab.NEIGH_SYSCTL % (family, 3)) as handle:
            assert int(handle.read()) >= 4 * endpoints * endpoints, family
    # Raising is idempotent and never lowers: a second call changes nothing.
    assert p2p_lab.raise_neighbour_limits(endpoints) == {}
    assert p2p_lab.raise_neighbour_limits(2) == {}


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


# --- image hosts: own root filesystem, package sources inside the lab -------

# A lab of its own (prefix, subnet, dir), beside the session lab and SCRATCH.
IMAGES = ['bookworm', 'trixie']
IMAGE_LAB = dict(prefix='p2pimg', subnet='10.231.2', workdir='/var/lib/p2p-lab-img', images=IMAGES)
IPV6_LAB = dict(prefix='p2pv6', subnet='10.231.3', workdir='/var/lib/p2p-lab-v6', images=['trixie'], ipv6=True)
PYTHON = {'bookworm': '3.11', 'trixie': '3.13'}
CPYTHONS = ('cp39', 'cp310', 'cp311', 'cp312', 'cp313')

# Runs on a lab host: fetch a URL (argv[1]), print status and sha256; with a
# second argument, save the body there.
FETCH = r'''
import hashlib, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
    body = r.read()
    print(r.status, hashlib.sha256(body).hexdigest())
if len(sys.argv) > 2:
    with open(sys.argv[2], 'wb') as f:
        f.write(body)
'''


def _ssh(lab, host, command, address=None):
    return subprocess.run(['ssh', '-i', lab.private_key, '-o', 'StrictHostKeyChecking=no',
                           '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
                           '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10',
                           'root@%s' % (address or lab.address(host)), command],
                          capture_output=True, text=True, timeout=120)


def _alive(pid):
    """pid exists and is not a zombie (an ended daemon waits a moment for init to reap it)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


@pytest.fixture(scope='module')
def image_lab():
    """seed (bookworm) + h01 (trixie) + h02 (bookworm), images built once and
    cached; down at the end, and what down leaves is checked in the last test."""
    if os.geteuid() != 0:
        pytest.skip('the lab needs root (network namespaces, veths, tc, mounts)')
    lab = p2p_lab.Lab(2, **IMAGE_LAB)
    try:
        yield lab.up()
    finally:
        lab.down()


def test_image_hosts_run_their_own_release(image_lab):
    lab = image_lab
    assert [lab.image(h) for h in lab.hosts] == ['bookworm', 'trixie', 'bookworm']
    state = json.load(open(lab.state_file))
    assert [h['image'] for h in state['hosts']] == ['bookworm', 'trixie', 'bookworm']
    for h in lab.hosts:
        release = lab.image(h)
        out = lab.exec(h, ['cat', '/etc/os-release']).stdout
        assert 'VERSION_CODENAME=%s' % release in out, (h, out)
        version = lab.exec(h, ['python3', '--version']).stdout.split()[-1]
        assert version.startswith(PYTHON[release] + '.'), (h, version)
        assert lab.exec(h, ['hostname']).stdout.strip() == h
    # The controller is bookworm too: the trixie host must really be another root.
    assert lab.exec('h01', ['test', '-e', lab.inventory]).returncode == 1


def test_image_hosts_are_bare(image_lab):
    for h in image_lab.hosts:
        for module in ('ensurepip', 'libtorrent', 'pip'):
            r = image_lab.exec(h, ['python3', '-c', 'import ' + module])
            assert r.returncode == 1 and 'ModuleNotFoundError' in r.stderr, (h, module, r.stderr)
        r = image_lab.exec(h, ['sh', '-c', 'for c in pip pip3 apt-get; do command -v $c; done; ls /var/lib/apt/lists'])
        assert r.stdout.split() == ['/usr/bin/apt-get', 'lock', 'partial'], (h, r.stdout)


def test_image_inventory_and_ssh(image_lab):
    lab = image_lab
    inv = json.loads(subprocess.run([ANSIBLE + '-inventory', '-i', lab.inventory, '--list'],
                                    capture_output=True, text=True, timeout=60).stdout)
    hostvars = inv['_meta']['hostvars']
    for h in lab.hosts:
        assert hostvars[h]['p2p_lab_image'] == lab.image(h)
        assert hostvars[h]['ansible_python_interpreter'] == '/usr/bin/python3'
        assert hostvars[h]['ansible_host'] == lab.ip(h)
    rc, status, out = ansible(lab.inventory, 'all', '-m', 'ping')
    assert rc == 0 and status == {h: 'SUCCESS' for h in lab.hosts}, out
    r = _ssh(lab, 'h01', '. /etc/os-release; echo $VERSION_CODENAME; cat /proc/self/mounts | cut -d" " -f2,3')
    assert r.returncode == 0, r.stderr
    assert r.stdout.split('\n')[0] == 'trixie'
    mounts = dict(line.split() for line in r.stdout.strip().split('\n')[1:])
    assert mounts['/'] == 'overlay' and mounts['/tmp'] == 'tmpfs' and mounts['/proc'] == 'proc', mounts


def test_image_roots_are_private(image_lab):
    lab = image_lab
    marker = 'lab-test-%s' % uuid.uuid4().hex[:8]
    with open(lab.host_dir('h01') + '/opt/' + marker, 'w') as f:
        f.write('h01')
    try:
        assert lab.exec('h01', ['cat', '/opt/' + marker]).stdout == 'h01'
        assert _ssh(lab, 'h01', 'cat /opt/' + marker).stdout == 'h01'
        for other in ('seed', 'h02'):
            assert lab.exec(other, ['test', '-e', '/opt/' + marker]).returncode == 1
        assert not os.path.exists('/opt/' + marker)
        # ...and the other way round: what a host writes lands in its own root only.
        assert lab.exec('h02', ['sh', '-c', 'echo h02 > /srv/' + marker]).returncode == 0
        with open(lab.host_dir('h02') + '/srv/' + marker) as f:
            assert f.read() == 'h02\n'
        assert not os.path.exists(lab.host_dir('h01') + '/srv/' + marker)
        assert not os.path.exists('/srv/' + marker)
        # The shared image under the overlays is never written.
        image = p2p_lab.lab_images.Image('bookworm', lab.cache_dir)
        assert not os.path.exists(image.root + '/srv/' + marker)
    finally:
        for path in (lab.host_dir('h01') + '/opt/' + marker, lab.host_dir('h02') + '/srv/' + marker):
            if os.path.exists(path):
                os.unlink(path)


def test_apt_installs_libtorrent_from_the_lab_repo(image_lab):
    lab = image_lab
    for h in ('h01', 'h02'):
        release = lab.image(h)
        sources = lab.exec(h, ['cat', '/etc/apt/sources.list']).stdout
        assert lab.apt_source(release) in sources and 'deb.debian.org' not in sources
        r = lab.exec(h, ['sh', '-c', 'DEBIAN_FRONTEND=noninteractive apt-get update -q && '
                         'DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-libtorrent'], timeout=300)
        assert r.returncode == 0, (h, r.stdout[-2000:], r.stderr[-2000:])
        assert re.search(r'Get:\d+ %s \./ ' % re.escape(lab.apt_url(release).rstrip('/')), r.stdout), r.stdout
        r = lab.exec(h, ['python3', '-c', 'import libtorrent; print(libtorrent.__version__)'])
        assert r.returncode == 0 and r.stdout.startswith('2.0.'), (h, r.stdout, r.stderr)
        print('%s (%s): python3-libtorrent %s' % (h, release, r.stdout.strip()))


def test_index_serves_wheels_for_every_cpython(image_lab):
    lab = image_lab
    with urllib.request.urlopen(lab.index_url, timeout=10) as r:
        assert 'href="libtorrent/"' in r.read().decode()
    with urllib.request.urlopen(lab.index_url + 'libtorrent/', timeout=10) as r:
        page = r.read().decode()
    links = dict(re.findall(r'href="([^"#]+\.whl)#sha256=([0-9a-f]{64})"', page))
    for cp in CPYTHONS:
        assert any('-%s-%s-' % (cp, cp) in link and 'manylinux' in link for link in links), (cp, page)
    for h in ('seed', 'h01'):
        cp = 'cp' + PYTHON[lab.image(h)].replace('.', '')
        link = [link for link in links if '-%s-%s-' % (cp, cp) in link][0]
        url = urllib.parse.urljoin(lab.index_url + 'libtorrent/', link)
        r = lab.exec(h, ['python3', '-c', FETCH, url, '/tmp/lt.whl'])
        assert r.returncode == 0, (h, r.stderr)
        assert r.stdout.split() == ['200', links[link]], (h, r.stdout)
        r = lab.exec(h, ['python3', '-m', 'zipfile', '-l', '/tmp/lt.whl'])
        assert r.returncode == 0 and 'libtorrent' in r.stdout, (h, r.stderr)


def test_image_lab_down_leaves_nothing(image_lab):
    """Last of the image tests: down ends sshds, package server, mounts."""
    lab = image_lab
    # Something detached on a host, an ssh master on the controller, a mount inside a host.
    assert lab.exec('h01', ['setsid', '-f', 'sleep', '600'],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    rc, status, out = ansible(lab.inventory, 'all', '-m', 'command', '-a', 'true')
    assert rc == 0, out
    server = lab.describe()['packages']['pid']
    assert server and p2p_lab.package_server_pids(lab.workdir) == [server]
    sshds = [lab.sshd_pid(h) for h in lab.hosts]
    assert all(sshds)
    assert p2p_lab.mounts_under(lab.workdir) == sorted(lab.host_dir(h) for h in lab.hosts)
    inodes = {_netns_inode('/run/netns/' + lab.namespace(h)) for h in lab.hosts}

    lab.down()

    assert lab.leftovers() == []
    assert p2p_lab.mounts_under(lab.workdir) == []
    assert p2p_lab.package_server_pids(lab.workdir) == []
    assert not [p for p in [server] + sshds if _alive(p)]
    assert _pids_in(inodes) == []
    assert p2p_lab.chrooted_pids(lab.workdir) == []
    assert not os.path.exists(os.path.join(lab.workdir, 'hosts'))
    with pytest.raises(OSError):
        urllib.request.urlopen(lab.index_url, timeout=2)
    # The image cache stays for the next lab.
    assert os.path.isdir(p2p_lab.lab_images.Image('trixie', lab.cache_dir).root)


def test_ipv6_lab():
    if os.geteuid() != 0:
        pytest.skip('the lab needs root (network namespaces, veths, tc, mounts)')
    lab = p2p_lab.Lab(1, **IPV6_LAB)
    try:
        lab.up()
        assert ':' in lab.address('h01') and lab.address('h01') == lab.ip6('h01')
        inv = json.loads(subprocess.run([ANSIBLE + '-inventory', '-i', lab.inventory, '--list'],
                                        capture_output=True, text=True, timeout=60).stdout)
        assert inv['_meta']['hostvars']['h01']['ansible_host'] == lab.ip6('h01')
        assert inv['_meta']['hostvars']['h01']['p2p_tracker_address'] == lab.ip6('seed')
        rc, status, out = ansible(lab.inventory, 'all', '-m', 'ping')
        assert rc == 0 and status == {'seed': 'SUCCESS', 'h01': 'SUCCESS'}, out
        r = _ssh(lab, 'h01', 'echo $SSH_CONNECTION')
        assert r.returncode == 0 and r.stdout.split()[0] == lab.controller_ip6, (r.stdout, r.stderr)
        assert lab.index_url.startswith('http://[%s]:' % lab.controller_ip6)
        r = lab.exec('h01', ['python3', '-c', FETCH, lab.index_url + 'libtorrent/'])
        assert r.returncode == 0 and r.stdout.startswith('200 '), r.stderr
        r = lab.exec('h01', ['apt-get', 'update'])
        assert r.returncode == 0 and '[%s]' % lab.controller_ip6 in r.stdout, (r.stdout, r.stderr)
        # ControlPersist masters to the v6 addresses are found (in /proc/net/tcp6)...
        assert p2p_lab.controller_ssh_pids(lab.subnet)
        lab.down()
        # ...and ended by down.
        assert p2p_lab.controller_ssh_pids(lab.subnet) == []
        assert lab.leftovers() == []
    finally:
        lab.down(purge=True)

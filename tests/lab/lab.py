"""A lab of N real hosts on one machine, for tests, the demo and the benchmark.

Each host is a network namespace on one bridge, with a veth rate-limited in
both directions (htb + bfifo) and its own sshd. A plain host's sshd sees
private /tmp, /var/tmp, /srv, /opt and /var/lib/p2p-swarm (everything else
is the controller's). An image host (--image) has a root filesystem of its
own: a cached minimal Debian (images.py) under a per-host overlayfs, with
the image's own python3 and sshd, and apt/pip sources served by the lab
(repos.py). The root namespace is the controller: it runs Ansible over ssh.

    python tests/lab/lab.py up N [--rate 50mbit] [--dir /var/lib/p2p-lab] [--prefix p2plab] [--subnet 10.231.0]
                                 [--image bookworm,trixie] [--ipv6] [--cache /var/cache/p2p-lab]
                                 [--wheels .lab/wheels] [--port 8080] [--packages]
    python tests/lab/lab.py down [--dir ...] [--prefix ...] [--subnet ...] [--purge]
    python tests/lab/lab.py status [--dir ...]
    python tests/lab/lab.py image bookworm,trixie [--cache ...] [--rebuild]

From Python (as root):

    lab = Lab(10, rate='50mbit')
    lab.up()
    lab.exec('h01', ['ls', '/srv'])     # inside h01's namespace and mount view
    lab.down()

    lab = Lab(4, images=['bookworm', 'trixie'], ipv6=True)   # seed bookworm, h01 trixie, ...

Standard library only: it runs before anything else is installed.
"""
import argparse
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import images as lab_images
import repos as lab_repos

DEFAULT_DIR = '/var/lib/p2p-lab'
DEFAULT_PREFIX = 'p2plab'
DEFAULT_RATE = '50mbit'
DEFAULT_SUBNET = '10.231.0'      # a /24; .1 controller, .2 seed, .11+ peers
SEED_OCTET = 2
FIRST_PEER_OCTET = 11

DEFAULT_CACHE = lab_images.DEFAULT_CACHE
DEFAULT_WHEELS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), '.lab', 'wheels')
DEFAULT_PORT = 8080              # the package server, on the controller's bridge address(es)
REPOS_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'repos.py')
SERVER_START_TIMEOUT = 30.0
SHARED = 'shared'       # in an image list: a plain host that shares the controller's /

# Directories each plain host gets its own copy of; the rest of / is shared.
PRIVATE_DIRS = ('/tmp', '/var/tmp', '/srv', '/opt', '/var/lib/p2p-swarm')
STICKY_DIRS = ('/tmp', '/var/tmp')

SSHD = '/usr/sbin/sshd'
HOST_PYTHON = '/usr/bin/python3'
# bash reads root's ~/.bashrc for every command sshd runs. The controller's
# may be heavy (this machine's runs `pyenv init`: 0.1 s of CPU each time, a
# tenth of the CPU of a 40-host playbook run); a plain host reads a stock
# one instead, as a freshly installed server would.
BASHRC = '/root/.bashrc'
STOCK_BASHRC = ('# ~/.bashrc of a plain lab host (tests/lab/lab.py), in place of the\n'
                "# controller's: like Debian's default for root, it runs nothing.\n")

# Inside an image host (paths in its own root). The pid file and log live on
# the overlay, not on its /run tmpfs, so the controller can read them.
IMAGE_SSHD_DIR = '/var/log/p2p-lab'
# What an ssh session of root gets (sshd's SUPERUSER_PATH); lab.exec on an
# image host runs with this environment instead of the controller's.
IMAGE_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root',
             'USER=root', 'LOGNAME=root', 'SHELL=/bin/sh']
IFNAMSIZ = 15

# Shaping. A veth hands htb GSO super-packets of up to 64 KiB, so quantum and
# burst are sized for those rather than for a 1500-byte frame.
GSO_MAX = 65536
QUANTUM = GSO_MAX + 2 * 1514     # one DRR round always fits the largest packet
R2Q = 10                         # explicit, so htb never derives (and warns about) a quantum
BURST_SECONDS = 0.01             # token bucket: 10 ms of traffic...
MIN_BURST = 2 * GSO_MAX          # ...but at least two super-packets
QUEUE_SECONDS = 0.05             # bfifo holds 50 ms of traffic...
MIN_QUEUE = 4 * GSO_MAX          # ...but at least a few super-packets

SSHD_START_TIMEOUT = 30.0
KILL_GRACE = 3.0

_RATE_UNITS = {'bit': 1, 'kbit': 10**3, 'mbit': 10**6, 'gbit': 10**9,
               'kibit': 2**10, 'mibit': 2**20, 'gibit': 2**30}


class LabError(RuntimeError):
    """A lab operation failed; the message says which host and why."""


def parse_rate(rate):
    """'50mbit' -> 50000000 (bits per second), with tc's unit names."""
    m = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*', str(rate).lower())
    if not m or m.group(2) not in _RATE_UNITS:
        raise LabError('bad rate %r: use a number and one of %s'
                       % (rate, ', '.join(_RATE_UNITS)))
    bps = int(float(m.group(1)) * _RATE_UNITS[m.group(2)])
    if bps < 100000:
        raise LabError('rate %r is too low for a lab (minimum 100kbit)' % rate)
    return bps


def run(argv, stdin_text=None, check=True, timeout=60):
    """Run a command, raising LabError with its stderr when it fails."""
    proc = subprocess.run(argv, input=stdin_text, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError('%s failed (rc=%d): %s' % (
            shlex.join(argv), proc.returncode, proc.stderr.strip() or proc.stdout.strip()))
    return proc


def ip_batch(lines, netns=None, force=False):
    """Run many `ip` commands in one process (fast: one fork per batch);
    with force, keep going past a failing line."""
    if not lines:
        return
    argv = ['ip'] + (['-n', netns] if netns else []) + (['-force'] if force else []) + ['-batch', '-']
    run(argv, stdin_text='\n'.join(lines) + '\n')


def tc_batch(lines, netns=None):
    if not lines:
        return
    argv = ['tc'] + (['-n', netns] if netns else []) + ['-batch', '-']
    run(argv, stdin_text='\n'.join(lines) + '\n')


def shaping_commands(dev, rate_bps):
    """tc lines that cap egress of `dev` at rate_bps: htb class + bfifo leaf."""
    rate_bytes = rate_bps / 8
    burst = max(int(rate_bytes * BURST_SECONDS), MIN_BURST)
    limit = max(int(rate_bytes * QUEUE_SECONDS), MIN_QUEUE)
    return [
        'qdisc replace dev %s root handle 1: htb default 1 r2q %d' % (dev, R2Q),
        'class add dev %s parent 1: classid 1:1 htb rate %dbit ceil %dbit '
        'burst %d cburst %d quantum %d' % (dev, rate_bps, rate_bps, burst, burst, QUANTUM),
        'qdisc add dev %s parent 1:1 handle 10: bfifo limit %d' % (dev, limit),
    ]


# The kernel's neighbour (ARP/NDP) table is one per machine, shared by every
# namespace, with a hard limit (gc_thresh3, 1024 by default). On a real fleet
# each host has its own; here every host that talks to every other keeps an
# entry per peer, (N+1)^2 in all: at 40 hosts the table overflows ("neighbor
# table overflow" in dmesg), new neighbours fail with "No route to host", and
# some hosts never reach the seeder or the tracker.
NEIGH_SYSCTL = '/proc/sys/net/%s/neigh/default/gc_thresh%d'


def raise_neighbour_limits(endpoints):
    """Raise the machine's neighbour table limits (never lower them) so
    `endpoints` namespaces that all talk to each other fit, beside what
    else the machine holds. Returns {path: value} of what was changed."""
    mesh = endpoints * endpoints
    wanted = {2: 2 * mesh + 1024, 3: 4 * mesh + 2048}
    changed = {}
    for family in ('ipv4', 'ipv6'):
        for level, value in sorted(wanted.items()):
            path = NEIGH_SYSCTL % (family, level)
            try:
                with open(path) as handle:
                    current = int(handle.read().strip())
                if current < value:
                    with open(path, 'w') as handle:
                        handle.write('%d\n' % value)
                    changed[path] = value
            except (OSError, ValueError):
                continue    # not writable here (a container): the lab still works at small N
    return changed


# --- processes and namespaces -------------------------------------------

def _pids():
    return [int(p) for p in os.listdir('/proc') if p.isdigit()]


def _netns_inode(pid):
    try:
        st = os.stat('/proc/%d/ns/net' % pid)
    except OSError:          # gone, or a zombie (which no longer holds a namespace)
        return None
    return (st.st_dev, st.st_ino)


def namespace_inode(ns):
    """(dev, ino) of a named namespace, or None if there is no such name."""
    try:
        st = os.stat('/run/netns/' + ns)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in_namespaces(inodes):
    """Pids of every process whose network namespace is one of `inodes`
    (the same test `ip netns pids` makes, for all namespaces in one scan)."""
    inodes = set(i for i in inodes if i)
    return [pid for pid in _pids() if _netns_inode(pid) in inodes]


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace').strip()
    except OSError:
        return ''


def _comm(pid):
    try:
        with open('/proc/%d/comm' % pid) as f:
            return f.read().strip()
    except OSError:
        return ''


def _tcp_peers_by_inode():
    """socket inode -> remote address (ipaddress object), for the root
    namespace's TCP sockets, IPv4 and IPv6 (v4-mapped ones as IPv4)."""
    peers = {}
    for path in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    raw = bytes.fromhex(fields[2].split(':')[0])
                    # the kernel prints each 32-bit word in host (little-endian) order
                    raw = b''.join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                    addr = ipaddress.ip_address(raw)
                    if addr.version == 6 and addr.ipv4_mapped:
                        addr = addr.ipv4_mapped
                    peers[fields[9]] = addr
        except OSError:
            pass
    return peers


def ula_network(subnet):
    """The IPv6 /64 a lab on subnet a.b.c uses with --ipv6: fd00:a:b:c::/64
    (the octets written as they are, so 10.231.0.11 is fd00:10:231::11)."""
    return ipaddress.ip_network('fd00:%s:%s:%s::/64' % tuple(subnet.split('.')))


def _lab_networks(subnet):
    return (ipaddress.ip_network(subnet + '.0/24'), ula_network(subnet))


def _names_lab_address(cmdline, subnet, networks):
    if re.search(r'(?<![\d.])%s\.\d{1,3}(?!\d)' % re.escape(subnet), cmdline):
        return True
    for token in re.split(r'[\s@\[\]=,]+', cmdline):
        try:
            addr = ipaddress.ip_address(token)
        except ValueError:
            continue
        if any(addr in net for net in networks):
            return True
    return False


def _socket_inodes(pid):
    inodes = []
    try:
        for fd in os.listdir('/proc/%d/fd' % pid):
            try:
                target = os.readlink('/proc/%d/fd/%s' % (pid, fd))
            except OSError:
                continue
            if target.startswith('socket:['):
                inodes.append(target[8:-1])
    except OSError:
        pass
    return inodes


def controller_ssh_pids(subnet):
    """ssh clients in the root namespace that talk to hosts in subnet.0/24 (or
    its IPv6 twin, ula_network): the ones whose arguments name such an
    address, and ControlPersist masters (they rename themselves
    'ssh: <control path> [mux]'), found by their sockets."""
    networks = _lab_networks(subnet)
    root_ns = _netns_inode(os.getpid())     # the controller is us (pid 1 may be unreadable)
    peers = None
    found = []
    for pid in _pids():
        if pid == os.getpid() or _comm(pid) != 'ssh' or _netns_inode(pid) != root_ns:
            continue
        if _names_lab_address(_cmdline(pid), subnet, networks):
            found.append(pid)
            continue
        if peers is None:
            peers = _tcp_peers_by_inode()
        if any(i in peers and any(peers[i] in net for net in networks) for i in _socket_inodes(pid)):
            found.append(pid)
    return found


def package_server_pids(workdir):
    """Pids of the package server (repos.py serve) started for the lab in workdir."""
    found = []
    for pid in _pids():
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                argv = f.read().decode(errors='replace').split('\0')
        except OSError:
            continue
        if ('serve' in argv and any(a.endswith(lab_repos.SERVER_MARK) for a in argv)
                and '--lab-dir' in argv and argv[argv.index('--lab-dir') + 1:][:1] == [workdir]):
            found.append(pid)
    return found


def mounts_under(path):
    """Mount points at or below path in this (the root) mount namespace."""
    with open('/proc/self/mountinfo') as f:
        points = [line.split()[4].replace('\\040', ' ') for line in f]
    return sorted(set(p for p in points if p == path or p.startswith(path + '/')))


def chrooted_pids(path):
    """Processes whose root directory is at or below path (an image host's
    chroot), wherever they run."""
    found = []
    for pid in _pids():
        try:
            root = os.readlink('/proc/%d/root' % pid)
        except OSError:
            continue
        if root == path or root.startswith(path + '/'):
            found.append(pid)
    return found


def kill_and_wait(pids_fn, what, grace=KILL_GRACE):
    """TERM everything pids_fn() returns, then KILL what is left; raise if
    anything survives (a namespace with a process in it cannot really go)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        pids = pids_fn()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids_fn() and time.monotonic() < deadline:
            time.sleep(0.05)
    left = pids_fn()
    if left:
        raise LabError('could not end %s: pids %s still alive' % (what, left))


def _links():
    out = run(['ip', '-o', 'link', 'show']).stdout
    return [line.split(':')[1].strip().split('@')[0] for line in out.splitlines()]


def _netns_names():
    out = run(['ip', 'netns', 'list']).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def unmount_under(path):
    """Lazily unmount anything mounted at or below path in this mount
    namespace: the image hosts' overlays, and any mount made by hand (the
    hosts' bind, proc, sysfs and /dev mounts live in their own mount
    namespaces and die with their last process)."""
    for point in reversed(mounts_under(path)):        # children before parents
        run(['umount', '-l', point], check=False)


def _wait_for_ssh(ip, deadline, port=22):
    """True once something on ip:22 sends an SSH banner."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b'SSH-'):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _tail(path, lines=5):
    try:
        with open(path, errors='replace') as f:
            return ' | '.join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return '(no log)'


# --- the lab --------------------------------------------------------------

class Lab:
    """N peer hosts plus one seeder, each a namespace with sshd, on a bridge.

    images: Debian releases ('bookworm', 'trixie'); hosts take turns over
    them (seed images[0], h01 images[1 % len], ...); 'shared' in the list
    is a plain host. Without, every host is a plain one sharing the
    controller's /. ipv6: every host also gets an
    address in ula_network(subnet), and the inventory uses it.
    packages: serve the wheel index and apt repos (default: when images)."""

    def __init__(self, n, rate=DEFAULT_RATE, workdir=DEFAULT_DIR, prefix=DEFAULT_PREFIX,
                 subnet=DEFAULT_SUBNET, images=None, ipv6=False, cache_dir=DEFAULT_CACHE,
                 wheel_dir=DEFAULT_WHEELS, port=DEFAULT_PORT, packages=None):
        self.n = int(n)
        if not 1 <= self.n <= 254 - FIRST_PEER_OCTET:
            raise LabError('number of hosts must be 1..%d' % (254 - FIRST_PEER_OCTET))
        self.rate = rate
        self.rate_bps = parse_rate(rate)
        self.workdir = os.path.abspath(workdir)
        self.prefix = prefix
        self.subnet = subnet
        if not re.fullmatch(r'[a-z][a-z0-9]*', prefix):
            raise LabError('prefix must be lower-case letters and digits: %r' % prefix)
        if not re.fullmatch(r'(\d{1,3})\.(\d{1,3})\.(\d{1,3})', subnet):
            raise LabError('subnet must be the first three octets, like 10.231.0')
        self._check_workdir()
        width = max(2, len(str(self.n)))
        self.peers = ['h%0*d' % (width, i) for i in range(1, self.n + 1)]
        self.hosts = ['seed'] + self.peers
        self._ips = {'seed': self._addr(SEED_OCTET)}
        for i, name in enumerate(self.peers):
            self._ips[name] = self._addr(FIRST_PEER_OCTET + i)
        too_long = [self.veth(h) for h in self.hosts if len(self.veth(h)) > IFNAMSIZ]
        if too_long:
            raise LabError('prefix too long: interface name %s exceeds %d characters'
                           % (too_long[0], IFNAMSIZ))
        self.images = list(images or [])
        self.cache_dir = os.path.abspath(cache_dir)
        try:
            self._images = {r: lab_images.Image(r, self.cache_dir) for r in self.images if r != SHARED}
        except lab_images.ImageError as e:
            raise LabError(str(e)) from e
        self._image_of = {h: self.images[i % len(self.images)] if self.images else None
                          for i, h in enumerate(self.hosts)}
        self._image_of = {h: None if r == SHARED else r for h, r in self._image_of.items()}
        if self._images:
            # overlayfs splits its options on ',' and lowerdir on ':'
            for path in (self.workdir, self.cache_dir):
                if re.search(r'[,:\s]', path):
                    raise LabError('path %r must not contain commas, colons or spaces '
                                   '(overlayfs options)' % path)
        self.ipv6 = bool(ipv6)
        self.wheel_dir = os.path.abspath(wheel_dir) if wheel_dir else ''
        self.port = int(port)
        self.packages = bool(self._images) if packages is None else bool(packages)
        self._server_pid = None
        self._server_proc = None

    # names and paths

    def _addr(self, octet):
        return '%s.%d' % (self.subnet, octet)

    @property
    def controller_ip(self):
        return self._addr(1)

    @property
    def controller_ip6(self):
        """The controller's IPv6 address on the bridge (exists with ipv6 only)."""
        return self._addr6(1)

    def _addr6(self, octet):
        return str(ipaddress.ip_address('%s%d' % (ula_network(self.subnet).network_address, octet)))

    def ip6(self, name):
        """The host's IPv6 address (configured with ipv6 only)."""
        octet = int(self.ip(name).rsplit('.', 1)[1])
        return self._addr6(octet)

    def address(self, name):
        """What the inventory says the host is: its IPv6 address with ipv6, else its IPv4."""
        return self.ip6(name) if self.ipv6 else self.ip(name)

    def image(self, name):
        """The host's Debian release, or None for a plain (shared-/usr) host."""
        return self._image_of[self._known(name)]

    # package sources (served with images, or with packages=True)

    @property
    def server_url(self):
        """Base URL of the package server, in the family the inventory uses."""
        host = '[%s]' % self.controller_ip6 if self.ipv6 else self.controller_ip
        return 'http://%s:%d' % (host, self.port)

    @property
    def index_url(self):
        """PEP 503 index of the wheels in wheel_dir (pip --index-url)."""
        return self.server_url + '/simple/'

    def apt_url(self, release):
        """Flat apt repository of one image release: deb [trusted=yes] URL ./"""
        return '%s/debian/%s/' % (self.server_url, release)

    def apt_source(self, release):
        return 'deb [trusted=yes] %s ./' % self.apt_url(release)

    @property
    def package_log(self):
        return os.path.join(self.workdir, 'packages.log')

    @property
    def bridge(self):
        return self.prefix + '0'

    @property
    def inventory(self):
        return os.path.join(self.workdir, 'inventory.ini')

    @property
    def state_file(self):
        return os.path.join(self.workdir, 'lab.json')

    @property
    def ssh_dir(self):
        return os.path.join(self.workdir, 'ssh')

    @property
    def private_key(self):
        return os.path.join(self.ssh_dir, 'id_ed25519')

    def ip(self, name):
        return self._ips[self._known(name)]

    def namespace(self, name):
        return '%s-%s' % (self.prefix, self._known(name))

    def veth(self, name):
        """Bridge-side end of the host's veth (the host side is eth0)."""
        return '%s-%s' % (self.prefix, name)

    def group(self, name):
        return 'seeders' if self._known(name) == 'seed' else 'peers'

    def host_dir(self, name):
        """Root-namespace path that the host sees as /: host_dir('h01') + '/srv'
        is h01's /srv. On a plain host only the PRIVATE_DIRS exist under it;
        on an image host it is the host's whole root (its overlayfs), except
        what is mounted inside the host only: /tmp and /run (tmpfs), /proc,
        /sys, /dev."""
        base = os.path.join(self.workdir, 'hosts', self._known(name))
        return os.path.join(base, 'root') if self.image(name) else base

    def _overlay_dir(self, name, part):
        """upper / work directory of an image host's overlayfs."""
        return os.path.join(self.workdir, 'hosts', self._known(name), part)

    def _sshd_file(self, name, suffix):
        return os.path.join(self.ssh_dir, '%s%s' % (name, suffix))

    def _sshd_pidfile(self, name):
        if self.image(name):
            return self.host_dir(name) + IMAGE_SSHD_DIR + '/sshd.pid'
        return self._sshd_file(name, '.pid')

    def _sshd_log(self, name):
        if self.image(name):
            return self.host_dir(name) + IMAGE_SSHD_DIR + '/sshd.log'
        return self._sshd_file(name, '.log')

    def _known(self, name):
        if name not in self._ips:
            raise LabError('no host %r in this lab (hosts: %s ... %s)'
                           % (name, self.hosts[0], self.hosts[-1]))
        return name

    def _check_workdir(self):
        # sshd reads its config and keys from the lab dir after the private
        # dirs are mounted, so the lab dir must not live under one of them.
        for d in PRIVATE_DIRS:
            if self.workdir == d or self.workdir.startswith(d + '/'):
                raise LabError('lab dir %s must not be under %s (each host gets a '
                               'private %s)' % (self.workdir, d, d))
        if self.workdir == '/':
            raise LabError('lab dir must not be /')

    # state file

    def describe(self):
        d = {
            'prefix': self.prefix, 'n': self.n, 'rate': self.rate, 'rate_bps': self.rate_bps,
            'subnet': self.subnet, 'bridge': self.bridge, 'controller_ip': self.controller_ip,
            'workdir': self.workdir, 'inventory': self.inventory,
            'private_key': self.private_key, 'private_dirs': list(PRIVATE_DIRS),
            'images': self.images, 'cache_dir': self.cache_dir, 'ipv6': self.ipv6,
            'controller_ip6': self.controller_ip6 if self.ipv6 else None,
            'hosts': [{
                'name': h, 'ip': self.ip(h), 'ip6': self.ip6(h) if self.ipv6 else None,
                'group': self.group(h), 'image': self.image(h),
                'namespace': self.namespace(h), 'veth': self.veth(h),
                'host_dir': self.host_dir(h), 'sshd_pidfile': self._sshd_pidfile(h),
            } for h in self.hosts],
            'packages': None,
        }
        if self.packages:
            d['packages'] = {
                'pid': self._server_pid, 'port': self.port, 'wheel_dir': self.wheel_dir,
                'index_url': self.index_url, 'log': self.package_log,
                'apt': {r: {'url': self.apt_url(r), 'source': self.apt_source(r),
                            'dir': self._images[r].repo} for r in self._images},
            }
        return d

    @classmethod
    def load(cls, workdir=DEFAULT_DIR):
        """The lab described by <workdir>/lab.json, or None if there is none."""
        try:
            with open(os.path.join(workdir, 'lab.json')) as f:
                d = json.load(f)
        except FileNotFoundError:
            return None
        packages = d.get('packages') or {}
        lab = cls(d['n'], d['rate'], d['workdir'], d['prefix'], d['subnet'],
                  images=d.get('images'), ipv6=d.get('ipv6', False),
                  cache_dir=d.get('cache_dir', DEFAULT_CACHE),
                  wheel_dir=packages.get('wheel_dir', DEFAULT_WHEELS),
                  port=packages.get('port', DEFAULT_PORT), packages=bool(packages))
        lab._server_pid = packages.get('pid')
        return lab

    def _write_state(self):
        tmp = self.state_file + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.describe(), f, indent=1)
        os.replace(tmp, self.state_file)

    # up

    def up(self, timeout=SSHD_START_TIMEOUT):
        """Build the lab (first clearing any leftovers of an earlier one) and
        return once every host's sshd answers. On failure nothing is left up."""
        if os.geteuid() != 0:
            raise LabError('the lab needs root (network namespaces, mounts)')
        self.build_images()              # before anything is up: a failed build leaves nothing
        self._clear_leftovers()
        self._check_subnet_free()
        try:
            self._prepare_files()
            self._write_state()        # written first, so `down` can undo a crashed up
            self._make_network()
            self._mount_overlays()
            if self.packages:
                self._start_package_server()
                self._write_state()    # now with the server's pid
            self._start_sshds()
            self._wait_sshds(timeout)
            self._write_inventory()
        except BaseException as e:
            try:
                self.down()
            except LabError as cleanup:
                raise LabError('%s (and cleaning up failed: %s)' % (e, cleanup)) from e
            raise
        return self

    def build_images(self, rebuild=False, log=None):
        """Build the lab's images that are not cached yet (once per release:
        later labs reuse them); returns {release: image meta}."""
        try:
            return {r: img.ensure(rebuild=rebuild, log=log) for r, img in self._images.items()}
        except lab_images.ImageError as e:
            raise LabError(str(e)) from e

    def _clear_leftovers(self):
        old = Lab.load(self.workdir)     # may differ in size, prefix or subnet
        if old is not None:
            old.down()
        self.down()

    def _check_subnet_free(self):
        out = run(['ip', '-4', '-o', 'addr', 'show']).stdout
        for line in out.splitlines():
            if re.search(r'inet %s\.\d+/' % re.escape(self.subnet), line):
                raise LabError('subnet %s.0/24 is already in use: %s'
                               % (self.subnet, line.split()[1]))
        if self.ipv6:
            net = ula_network(self.subnet)
            for line in run(['ip', '-6', '-o', 'addr', 'show']).stdout.splitlines():
                m = re.search(r'inet6 ([0-9a-f:]+)/', line)
                if m and ipaddress.ip_address(m.group(1)) in net:
                    raise LabError('IPv6 network %s is already in use: %s' % (net, line.split()[1]))

    def _prepare_files(self):
        os.makedirs(self.ssh_dir, mode=0o700, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self._remove_hosts_dir()
        plain = [h for h in self.hosts if not self.image(h)]
        if plain:
            for d in PRIVATE_DIRS:
                os.makedirs(d, exist_ok=True)      # mount points (/var/lib/p2p-swarm may be new)
        for h in plain:
            for d in PRIVATE_DIRS:
                path = self.host_dir(h) + d
                os.makedirs(path, exist_ok=True)
                os.chmod(path, 0o1777 if d in STICKY_DIRS else 0o755)
        for h in self.hosts:
            if self.image(h):
                for part in ('upper', 'work', 'root'):
                    os.makedirs(self._overlay_dir(h, part), mode=0o755, exist_ok=True)
        self._make_keys()
        with open(self.private_key + '.pub') as f:
            pub = f.read().strip()
        sources = self.controller_ip + (',' + self.controller_ip6 if self.ipv6 else '')
        with open(os.path.join(self.ssh_dir, 'authorized_keys'), 'w') as f:
            f.write('from="%s" %s\n' % (sources, pub))
        with open(self._stock_bashrc(), 'w') as f:
            f.write(STOCK_BASHRC)
        for h in plain:
            with open(self._sshd_file(h, '.conf'), 'w') as f:
                f.write(self._sshd_config(h))
            open(self._sshd_file(h, '.log'), 'w').close()
        if plain:
            os.makedirs('/run/sshd', mode=0o755, exist_ok=True)   # sshd's privsep dir

    def _make_keys(self):
        """The client keypair and one host key per host, generated in parallel;
        existing keys are kept so a re-up is quick."""
        wanted = [(self.private_key, 'p2p-lab-controller')]
        wanted += [(self._sshd_file(h, '_host_ed25519_key'), self.namespace(h)) for h in self.hosts]
        procs = [(path, subprocess.Popen(
            ['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            for path, comment in wanted if not os.path.exists(path)]
        for path, p in procs:
            out = p.communicate(timeout=60)[0]
            if p.returncode != 0:
                raise LabError('ssh-keygen for %s failed: %s' % (path, out.strip()))

    def _sshd_config(self, name):
        """A plain host's sshd reads its files from the lab dir; an image
        host's sshd runs chrooted and reads them from the host's own root."""
        if self.image(name):
            files = ['HostKey /etc/ssh/ssh_host_ed25519_key',
                     'PidFile %s/sshd.pid' % IMAGE_SSHD_DIR,
                     'AuthorizedKeysFile .ssh/authorized_keys']
            if self._images[self.image(name)].meta().get('sshd_penalties'):
                # OpenSSH >= 9.8 would lock the controller out after a burst of
                # connections that never log in (readiness probes, status).
                files.append('PerSourcePenalties no')
        else:
            files = ['HostKey %s' % self._sshd_file(name, '_host_ed25519_key'),
                     'PidFile %s' % self._sshd_file(name, '.pid'),
                     'AuthorizedKeysFile %s' % os.path.join(self.ssh_dir, 'authorized_keys')]
        listen = ['ListenAddress %s:22' % self.ip(name)]
        if self.ipv6:
            listen.append('ListenAddress [%s]:22' % self.ip6(name))
        return '\n'.join([
            '# p2p lab host %s (generated by tests/lab/lab.py)' % name,
        ] + listen + files + [
            'AllowUsers root',
            'PermitRootLogin prohibit-password',
            'PubkeyAuthentication yes',
            'PasswordAuthentication no',
            'KbdInteractiveAuthentication no',
            'UsePAM no',
            # The key files are the lab's own; the lab dir may sit on a path
            # whose parents sshd would call unsafe (it walks up to /).
            'StrictModes no',
            'UseDNS no',
            'PrintMotd no',
            'PrintLastLog no',
            'X11Forwarding no',
            'MaxStartups 100:30:200',
            'MaxSessions 100',
            'AcceptEnv LANG LC_*',
            'Subsystem sftp internal-sftp',
            '',
        ])

    def _make_network(self):
        """Bridge + one veth per host, all from a few batched ip/tc calls."""
        raise_neighbour_limits(len(self.hosts) + 1)
        root = [
            'link add %s type bridge' % self.bridge,
            # No netfilter on lab traffic, no STP delay before ports forward.
            'link set %s type bridge nf_call_iptables 0 nf_call_ip6tables 0 '
            'nf_call_arptables 0 stp_state 0 forward_delay 0' % self.bridge,
            'link set %s addrgenmode none' % self.bridge,    # no IPv6 chatter
            'addr add %s/24 dev %s' % (self.controller_ip, self.bridge),
            'link set %s up' % self.bridge,
        ]
        if self.ipv6:
            # Static addresses only (addrgenmode none stays: no link-local or
            # router chatter); nodad, or the address is 'tentative' for ~2 s
            # and nothing can bind to it.
            root.append('addr add %s/64 dev %s nodad' % (self.controller_ip6, self.bridge))
        root_tc = []
        for h in self.hosts:
            ns, veth = self.namespace(h), self.veth(h)
            root += [
                'netns add %s' % ns,
                'link add %s type veth peer name eth0 netns %s' % (veth, ns),
                'link set %s master %s addrgenmode none up' % (veth, self.bridge),
            ]
            root_tc += shaping_commands(veth, self.rate_bps)     # host download
        ip_batch(root)
        tc_batch(root_tc)
        for h in self.hosts:
            ns = self.namespace(h)
            ip_batch(['link set lo up',
                      'link set eth0 addrgenmode none',
                      'addr add %s/24 dev eth0' % self.ip(h)]
                     + (['addr add %s/64 dev eth0 nodad' % self.ip6(h)] if self.ipv6 else [])
                     + ['link set eth0 up'], netns=ns)
            tc_batch(shaping_commands('eth0', self.rate_bps), netns=ns)   # host upload

    def _mount_overlays(self):
        """Each image host's root: an overlayfs in the root mount namespace
        (so the controller sees it at host_dir), the cached image as its
        read-only lower layer, changes in the host's own upper dir. Then the
        host's own files go in: ssh config and keys, apt source, hostname."""
        for h in self.hosts:
            release = self.image(h)
            if not release:
                continue
            opts = 'lowerdir=%s,upperdir=%s,workdir=%s' % (
                self._images[release].root, self._overlay_dir(h, 'upper'), self._overlay_dir(h, 'work'))
            run(['mount', '-t', 'overlay', 'overlay', '-o', opts, self.host_dir(h)])
            self._populate_image_host(h)

    def _populate_image_host(self, name):
        root, release = self.host_dir(name), self.image(name)

        def write(path, text, mode=0o644):
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            with open(root + path, 'w') as f:
                f.write(text)
            os.chmod(root + path, mode)

        write('/etc/ssh/sshd_config', self._sshd_config(name))
        key = self._sshd_file(name, '_host_ed25519_key')
        for suffix, mode in (('', 0o600), ('.pub', 0o644)):
            with open(key + suffix) as f:
                write('/etc/ssh/ssh_host_ed25519_key' + suffix, f.read(), mode)
        os.makedirs(root + '/root/.ssh', mode=0o700, exist_ok=True)
        with open(os.path.join(self.ssh_dir, 'authorized_keys')) as f:
            write('/root/.ssh/authorized_keys', f.read(), 0o600)
        os.makedirs(root + IMAGE_SSHD_DIR, mode=0o755, exist_ok=True)
        # Only the lab's repo: a lab host reaches no Debian mirror.
        write('/etc/apt/sources.list', '# p2p lab (tests/lab/lab.py): packages for %s from the controller\n%s\n'
              % (release, self.apt_source(release) if self.packages else '# (lab started without packages)'))
        write('/etc/hostname', name + '\n')
        write('/etc/hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
              '%s\t%s\n' % (self.ip(name), name)
              + ('%s\t%s\n' % (self.ip6(name), name) if self.ipv6 else ''))

    def _mount_script(self, name):
        """Shell lines that give the current mount namespace the host's view:
        for a plain host its private dirs over the shared /; for an image
        host the kernel filesystems inside its root (to be chrooted into),
        and its hostname (the namespace has its own UTS)."""
        if not self.image(name):
            binds = [(self.host_dir(name) + d, d) for d in PRIVATE_DIRS]
            if os.path.isfile(BASHRC):
                binds.append((self._stock_bashrc(), BASHRC))
            return '; '.join('mount --bind %s %s' % (shlex.quote(src), dst) for src, dst in binds)
        r = shlex.quote(self.host_dir(name))
        return '; '.join([
            'mount -t proc proc %s/proc' % r,
            'mount --rbind /dev %s/dev' % r,
            'mount -t tmpfs -o mode=1777,nosuid,nodev shm %s/dev/shm' % r,   # not the controller's
            'mount -t sysfs sysfs %s/sys' % r,
            'mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs %s/tmp' % r,
            'mount -t tmpfs -o mode=755,nosuid,nodev tmpfs %s/run' % r,
            'mkdir -m 755 %s/run/sshd' % r,              # sshd's privsep dir
            'mkdir -m 1777 %s/run/lock' % r,
            'echo %s > /proc/sys/kernel/hostname' % shlex.quote(name),
        ])

    def _stock_bashrc(self):
        return os.path.join(self.workdir, 'bashrc')

    def _host_command(self, name, argv):
        """argv (a command in the host's own view) for the end of _mount_script."""
        if not self.image(name):
            return list(argv)
        return ['chroot', self.host_dir(name), 'env', '-i'] + IMAGE_ENV + list(argv)

    def _start_package_server(self):
        """repos.py serve on the controller's bridge address(es), detached;
        returns once it accepts connections."""
        missing = [r for r, img in self._images.items() if not os.path.exists(os.path.join(img.repo, 'Packages'))]
        if missing:
            raise LabError('no apt repo cached for %s (rebuild: lab.py image %s --rebuild)'
                           % (', '.join(missing), ','.join(missing)))
        binds = [self.controller_ip] + ([self.controller_ip6] if self.ipv6 else [])
        argv = [sys.executable, REPOS_PY, 'serve', '--lab-dir', self.workdir, '--port', str(self.port),
                '--wheels', self.wheel_dir]
        for addr in binds:
            argv += ['--bind', addr]
        for r in sorted(self._images):
            argv += ['--apt', '%s=%s' % (r, self._images[r].repo)]
        with open(self.package_log, 'w') as log:
            self._server_proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                 cwd='/', start_new_session=True)
        self._server_pid = self._server_proc.pid
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        pending = list(binds)
        while pending and time.monotonic() < deadline:
            if self._server_proc.poll() is not None:
                break
            try:
                socket.create_connection((pending[0], self.port), timeout=1).close()
                pending.pop(0)
            except OSError:
                time.sleep(0.05)
        if pending:
            raise LabError('package server did not start on %s port %d: %s'
                           % (pending[0], self.port, _tail(self.package_log)))

    def _start_sshds(self):
        """One sshd per host in a private mount namespace; started in parallel
        (sshd binds before it daemonizes, so each launcher exits quickly)."""
        procs = {}
        for h in self.hosts:
            if self.image(h):       # the image's own sshd, chrooted, its files inside the root
                sshd = self._host_command(h, [SSHD, '-f', '/etc/ssh/sshd_config',
                                              '-E', IMAGE_SSHD_DIR + '/sshd.log'])
            else:
                sshd = [SSHD, '-f', self._sshd_file(h, '.conf'), '-E', self._sshd_file(h, '.log')]
            script = 'set -e; %s; exec %s' % (self._mount_script(h), shlex.join(sshd))
            procs[h] = subprocess.Popen(
                ['ip', 'netns', 'exec', self.namespace(h)] + self._unshare(h) + ['sh', '-c', script],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, start_new_session=True)
        failed = []
        for h, p in procs.items():
            out = p.communicate(timeout=60)[0]
            if p.returncode != 0:
                failed.append('%s: rc=%d %s %s' % (h, p.returncode, out.strip(),
                                                   _tail(self._sshd_log(h))))
        if failed:
            raise LabError('sshd did not start on: ' + '; '.join(failed))

    def _unshare(self, name):
        """A private mount namespace; image hosts get their own hostname too."""
        return ['unshare', '-m'] + (['-u'] if self.image(name) else []) + ['--propagation', 'private']

    def _wait_sshds(self, timeout):
        deadline = time.monotonic() + timeout
        for h in self.hosts:
            for addr in [self.ip(h)] + ([self.ip6(h)] if self.ipv6 else []):
                if not _wait_for_ssh(addr, deadline):
                    raise LabError('sshd on %s (%s) did not answer within %.0fs; log: %s'
                                   % (h, addr, timeout, _tail(self._sshd_log(h))))

    def _write_inventory(self):
        lines = ['# p2p.swarm lab (tests/lab/lab.py): %d peers + seed, %s per link'
                 % (self.n, self.rate), '', '[seeders]']
        lines += [self._inventory_line('seed'), '', '[peers]']
        lines += [self._inventory_line(h) for h in self.peers]
        lines += [
            '', '[all:vars]',
            'ansible_user=root',
            'ansible_ssh_private_key_file=%s' % self.private_key,
            "ansible_ssh_common_args='-o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR'",
            'ansible_python_interpreter=%s' % HOST_PYTHON,
            # /root is shared by all hosts; keep Ansible's remote temp files private.
            'ansible_remote_tmp=/tmp/.ansible/tmp',
            # On 2 cores Ansible is CPU-bound; pipelining cuts its cost per task
            # about 2.5x (ping -f 20 on 21 hosts: 14 s -> 5.7 s).
            'ansible_pipelining=true',
            'p2p_seeder_host=seed',
            'p2p_tracker_address=%s' % self.address('seed'),
            'p2p_targets=peers',
        ] + (['p2p_lab_index_url=%s' % self.index_url] if self.packages else []) + ['']
        with open(self.inventory, 'w') as f:
            f.write('\n'.join(lines))

    def _inventory_line(self, name):
        line = '%s ansible_host=%s' % (name, self.address(name))
        if self.image(name):
            line += ' p2p_lab_image=%s' % self.image(name)
        return line

    # running things on a host

    def sshd_pid(self, name):
        """Pid of the host's sshd if it is alive in the host's namespace."""
        try:
            with open(self._sshd_pidfile(name)) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        ns = namespace_inode(self.namespace(name))
        return pid if ns and _netns_inode(pid) == ns else None

    def exec_argv(self, name, argv):
        """argv that runs `argv` inside the host's network namespace and mount
        view (for Popen). Joins the sshd's namespaces, so it sees exactly
        what an ssh session sees; builds the same view if sshd is gone.
        On an image host: also the sshd's root (the chroot) and hostname,
        and an ssh session's environment rather than the controller's."""
        pid = self.sshd_pid(name)
        if pid:
            if self.image(name):
                return (['nsenter', '-t', str(pid), '-n', '-m', '-u', '-r', '-w', '--', 'env', '-i']
                        + IMAGE_ENV + list(argv))
            return ['nsenter', '-t', str(pid), '-n', '-m', '--'] + list(argv)
        script = 'set -e; %s; exec "$@"' % self._mount_script(name)
        return (['ip', 'netns', 'exec', self.namespace(name)] + self._unshare(name)
                + ['sh', '-c', script, 'sh'] + self._host_command(name, argv))

    def exec(self, name, argv, **kwargs):
        """Run argv on the host; returns subprocess.CompletedProcess.
        Captures text output and times out after 120 s unless told otherwise."""
        if 'stdout' not in kwargs and 'stderr' not in kwargs:
            kwargs.setdefault('capture_output', True)
        kwargs.setdefault('text', True)
        kwargs.setdefault('timeout', 120)
        kwargs.setdefault('cwd', '/')
        check = kwargs.pop('check', False)
        return subprocess.run(self.exec_argv(name, argv), check=check, **kwargs)

    # down

    def _lab_namespaces(self):
        """Namespaces of this lab: the ones it defines plus any stray one with
        its prefix (from a crashed lab of another size)."""
        names = set(self.namespace(h) for h in self.hosts)
        names.update(n for n in _netns_names() if n.startswith(self.prefix + '-'))
        return sorted(names)

    def _lab_links(self):
        return [l for l in _links() if l.startswith(self.prefix + '-') or l == self.bridge]

    def down(self, purge=False):
        """End every process in the lab's namespaces and the controller's ssh
        masters for it, then the package server; delete namespaces, veths
        and bridge, unmount the image hosts' overlays, remove the hosts'
        files. Safe to call when nothing (or half a lab) is up."""
        if os.geteuid() != 0:
            raise LabError('the lab needs root')
        kill_and_wait(lambda: controller_ssh_pids(self.subnet),
                      'controller ssh connections to %s.0/24' % self.subnet)
        namespaces = self._lab_namespaces()
        inodes = [namespace_inode(ns) for ns in namespaces]
        kill_and_wait(lambda: pids_in_namespaces(inodes),
                      'processes in namespaces %s-*' % self.prefix)
        hosts_dir = os.path.join(self.workdir, 'hosts')
        kill_and_wait(lambda: chrooted_pids(hosts_dir), 'processes chrooted under %s' % hosts_dir)
        self._stop_package_server()
        # Delete the veths first: a dead namespace is freed asynchronously, and
        # its veth (and the root end) would linger until then.
        links = self._lab_links()
        existing = set(_netns_names())
        error = ''
        try:
            ip_batch(['link del %s' % l for l in links if l != self.bridge]
                     + ['netns del %s' % ns for ns in namespaces if ns in existing]
                     + (['link del %s' % self.bridge] if self.bridge in links else []),
                     force=True)
        except LabError as e:
            error = ' (%s)' % e     # reported below if something did not go
        unmount_under(self.workdir)
        self._remove_files(purge)
        left = self.leftovers()
        if left:
            raise LabError('lab not fully down: %s%s' % ('; '.join(left), error))

    def _stop_package_server(self):
        def pids():
            found = set(package_server_pids(self.workdir))
            # the recorded pid too, while it is still that program (not a reused pid)
            if self._server_pid and lab_repos.SERVER_MARK in _cmdline(self._server_pid):
                found.add(self._server_pid)
            return sorted(found)
        kill_and_wait(pids, 'the package server of %s' % self.workdir)
        if self._server_proc is not None:       # started by this process: reap it
            self._server_proc.wait(timeout=KILL_GRACE)
            self._server_proc = None
        self._server_pid = None

    def _remove_hosts_dir(self):
        # rmtree follows no symlinks but does cross mount points: never run it
        # over a live overlay (it would empty the host) or anything else mounted.
        hosts_dir = os.path.join(self.workdir, 'hosts')
        mounted = mounts_under(hosts_dir)
        if mounted:
            raise LabError('not removing %s: still mounted: %s' % (hosts_dir, ' '.join(mounted)))
        shutil.rmtree(hosts_dir, ignore_errors=True)

    def _remove_files(self, purge):
        self._remove_hosts_dir()
        if purge and os.path.exists(self.workdir):
            shutil.rmtree(self.workdir)
            return
        for path in (self.state_file, self.inventory):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def leftovers(self):
        """What of this lab still exists (empty when fully down)."""
        left = []
        ns = [n for n in _netns_names() if n.startswith(self.prefix + '-')]
        if ns:
            left.append('namespaces %s' % ' '.join(ns))
        links = self._lab_links()
        if links:
            left.append('links %s' % ' '.join(links))
        ssh = controller_ssh_pids(self.subnet)
        if ssh:
            left.append('controller ssh pids %s' % ssh)
        server = package_server_pids(self.workdir)
        if server:
            left.append('package server pids %s' % server)
        mounts = mounts_under(self.workdir)
        if mounts:
            left.append('mounts %s' % ' '.join(mounts))
        chrooted = chrooted_pids(os.path.join(self.workdir, 'hosts'))
        if chrooted:
            left.append('chrooted pids %s' % chrooted)
        return left

    # status

    def status(self):
        """Per-host health: namespace present, sshd alive, port 22 answering."""
        rows = []
        for h in self.hosts:
            ns_ok = namespace_inode(self.namespace(h)) is not None
            pid = self.sshd_pid(h)
            ssh_ok = bool(pid) and _wait_for_ssh(self.ip(h), time.monotonic() + 1)
            rows.append({'name': h, 'ip': self.ip(h), 'group': self.group(h), 'image': self.image(h),
                         'namespace': ns_ok, 'sshd_pid': pid, 'ssh': ssh_ok})
        return rows


# --- command line -----------------------------------------------------------

def _images_arg(text):
    return [r.strip() for r in (text or '').split(',') if r.strip()]


def _cmd_up(args):
    lab = Lab(args.n, rate=args.rate, workdir=args.dir, prefix=args.prefix, subnet=args.subnet,
              images=_images_arg(args.image), ipv6=args.ipv6, cache_dir=args.cache,
              wheel_dir=args.wheels, port=args.port, packages=True if args.packages else None)
    t0 = time.monotonic()
    lab.build_images(log=print)
    t1 = time.monotonic()
    lab.up()
    print('lab up: seed + %d peers, %s per link, in %.1fs%s' % (
        lab.n, lab.rate, time.monotonic() - t1,
        ' (images ready in %.1fs)' % (t1 - t0) if lab.images else ''))
    if lab.images:
        print('images:    %s' % ', '.join('%s=%s' % (h, lab.image(h) or SHARED) for h in lab.hosts))
    if lab.packages:
        print('index:     %s' % lab.index_url)
        for r in sorted(set(lab.images) - {SHARED}):
            print('apt:       %s' % lab.apt_source(r))
    print('inventory: %s' % lab.inventory)
    print('example:   ansible -i %s all -m ping' % lab.inventory)
    return 0


def _cmd_image(args):
    releases = _images_arg(args.releases)
    if not releases:
        raise LabError('name at least one release, like bookworm,trixie')
    for release in releases:
        t0 = time.monotonic()
        try:
            meta = lab_images.Image(release, args.cache).ensure(rebuild=args.rebuild, log=print)
        except lab_images.ImageError as e:
            raise LabError(str(e)) from e
        print('%s: python %s, %d .debs in its repo, %.0f MB + %.0f MB, %.1fs' % (
            release, meta['python'], meta['repo_debs'], meta['root_bytes'] / 1e6,
            meta['repo_bytes'] / 1e6, time.monotonic() - t0))
    return 0


def _cmd_down(args):
    lab = Lab.load(args.dir)
    if lab is None:      # no state file: clear whatever a crashed lab left
        lab = Lab(1, workdir=args.dir, prefix=args.prefix, subnet=args.subnet)
    t0 = time.monotonic()
    lab.down(purge=args.purge)
    print('lab down (%s) in %.1fs' % (lab.prefix, time.monotonic() - t0))
    return 0


def _cmd_status(args):
    lab = Lab.load(args.dir)
    if lab is None:
        stray = Lab(1, workdir=args.dir, prefix=args.prefix, subnet=args.subnet).leftovers()
        print('no lab in %s%s' % (args.dir, ('; leftovers: ' + '; '.join(stray)) if stray else ''))
        return 2
    rows = lab.status()
    print('lab %s: seed + %d peers, %s per link, inventory %s'
          % (lab.prefix, lab.n, lab.rate, lab.inventory))
    if lab.packages:
        print('packages: %s (pid %s)' % (lab.server_url, lab._server_pid or '?'))
    for r in rows:
        print('  %-5s %-12s %-8s %-9s ns=%-3s sshd=%-7s ssh=%s' % (
            r['name'], r['ip'], r['group'], r['image'] or 'shared', 'ok' if r['namespace'] else 'NO',
            r['sshd_pid'] or '-', 'ok' if r['ssh'] else 'DOWN'))
    bad = [r['name'] for r in rows if not (r['namespace'] and r['ssh'])]
    if bad:
        print('unhealthy: %s' % ' '.join(bad))
        return 1
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description='p2p.swarm test lab: hosts as network namespaces')
    sub = p.add_subparsers(dest='cmd', required=True)
    up = sub.add_parser('up', help='build a lab of N peers plus a seeder')
    up.add_argument('n', type=int)
    up.add_argument('--rate', default=DEFAULT_RATE, help='per-link rate each way (tc units)')
    up.add_argument('--image', default='', metavar='RELEASE[,RELEASE...]',
                    help='hosts with their own Debian root (hosts take turns over the list; '
                         '"shared" is a plain host); default: hosts share the controller\'s /')
    up.add_argument('--ipv6', action='store_true', help='also a ULA IPv6 address per host; the inventory uses it')
    up.add_argument('--wheels', default=DEFAULT_WHEELS, help='wheel directory the index serves')
    up.add_argument('--port', type=int, default=DEFAULT_PORT, help='package server port')
    up.add_argument('--packages', action='store_true',
                    help='serve the package index even without --image')
    img = sub.add_parser('image', help='build (or check) cached host images')
    img.add_argument('releases', metavar='RELEASE[,RELEASE...]')
    img.add_argument('--rebuild', action='store_true')
    for sp in (up, img):
        sp.add_argument('--cache', default=DEFAULT_CACHE, help='image cache directory')
    for sp in (up, sub.add_parser('down', help='tear the lab down'),
               sub.add_parser('status', help='show the hosts and their health')):
        sp.add_argument('--dir', default=DEFAULT_DIR)
        sp.add_argument('--prefix', default=DEFAULT_PREFIX)
        sp.add_argument('--subnet', default=DEFAULT_SUBNET,
                        help='first three octets of the lab\'s /24 (down and status read it from the lab\'s state)')
    sub.choices['down'].add_argument('--purge', action='store_true',
                                     help='also remove keys, configs and logs')
    args = p.parse_args(argv)
    try:
        return {'up': _cmd_up, 'down': _cmd_down, 'status': _cmd_status,
                'image': _cmd_image}[args.cmd](args)
    except LabError as e:
        print('lab: error: %s' % e, file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())

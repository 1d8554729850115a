"""A lab of N real hosts on one machine, for tests, the demo and the benchmark.

Each host is a network namespace on one bridge, with a veth rate-limited in
both directions (htb + bfifo) and its own sshd that sees private /tmp,
/var/tmp, /srv, /opt and /var/lib/p2p-swarm (everything else is shared).
The root namespace is the controller: it runs Ansible over ssh.

    python tests/lab/lab.py up N [--rate 50mbit] [--dir /var/lib/p2p-lab] [--prefix p2plab] [--subnet 10.231.0]
    python tests/lab/lab.py down [--dir ...] [--prefix ...] [--subnet ...] [--purge]
    python tests/lab/lab.py status [--dir ...]

From Python (as root):

    lab = Lab(10, rate='50mbit')
    lab.up()
    lab.exec('h01', ['ls', '/srv'])     # inside h01's namespace and mount view
    lab.down()

Standard library only: it runs before anything else is installed.
"""
import argparse
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

DEFAULT_DIR = '/var/lib/p2p-lab'
DEFAULT_PREFIX = 'p2plab'
DEFAULT_RATE = '50mbit'
DEFAULT_SUBNET = '10.231.0'      # a /24; .1 controller, .2 seed, .11+ peers
SEED_OCTET = 2
FIRST_PEER_OCTET = 11

# Directories each host gets its own copy of; the rest of / is shared.
PRIVATE_DIRS = ('/tmp', '/var/tmp', '/srv', '/opt', '/var/lib/p2p-swarm')
STICKY_DIRS = ('/tmp', '/var/tmp')

SSHD = '/usr/sbin/sshd'
HOST_PYTHON = '/usr/bin/python3'
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
    """socket inode -> remote IPv4 address, for the root namespace's TCP sockets."""
    peers = {}
    try:
        with open('/proc/net/tcp') as f:
            next(f)
            for line in f:
                fields = line.split()
                rem_hex = fields[2].split(':')[0]
                addr = socket.inet_ntoa(bytes.fromhex(rem_hex)[::-1])
                peers[fields[9]] = addr
    except OSError:
        pass
    return peers


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
    """ssh clients in the root namespace that talk to hosts in subnet.0/24:
    the ones whose arguments name such an address, and ControlPersist masters
    (they rename themselves 'ssh: <control path> [mux]'), found by their sockets."""
    pattern = re.compile(r'(?<![\d.])%s\.\d{1,3}(?!\d)' % re.escape(subnet))
    root_ns = _netns_inode(os.getpid())     # the controller is us (pid 1 may be unreadable)
    peers = None
    found = []
    for pid in _pids():
        if pid == os.getpid() or _comm(pid) != 'ssh' or _netns_inode(pid) != root_ns:
            continue
        if pattern.search(_cmdline(pid)):
            found.append(pid)
            continue
        if peers is None:
            peers = _tcp_peers_by_inode()
        if any(peers.get(i, '').startswith(subnet + '.') for i in _socket_inodes(pid)):
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
    namespace (the hosts' bind mounts live in their own namespaces and die
    with them; this catches any made by hand in the root namespace)."""
    with open('/proc/self/mountinfo') as f:
        points = [line.split()[4] for line in f]
    for point in sorted(set(points), reverse=True):   # children before parents
        if point == path or point.startswith(path + '/'):
            run(['umount', '-l', point], check=False)


def _wait_for_ssh(ip, deadline):
    """True once something on ip:22 sends an SSH banner."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, 22), timeout=1) as s:
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
    """N peer hosts plus one seeder, each a namespace with sshd, on a bridge."""

    def __init__(self, n, rate=DEFAULT_RATE, workdir=DEFAULT_DIR, prefix=DEFAULT_PREFIX,
                 subnet=DEFAULT_SUBNET):
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

    # names and paths

    def _addr(self, octet):
        return '%s.%d' % (self.subnet, octet)

    @property
    def controller_ip(self):
        return self._addr(1)

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
        is h01's /srv (only the PRIVATE_DIRS exist under it)."""
        return os.path.join(self.workdir, 'hosts', self._known(name))

    def _sshd_file(self, name, suffix):
        return os.path.join(self.ssh_dir, '%s%s' % (name, suffix))

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
        return {
            'prefix': self.prefix, 'n': self.n, 'rate': self.rate, 'rate_bps': self.rate_bps,
            'subnet': self.subnet, 'bridge': self.bridge, 'controller_ip': self.controller_ip,
            'workdir': self.workdir, 'inventory': self.inventory,
            'private_key': self.private_key, 'private_dirs': list(PRIVATE_DIRS),
            'hosts': [{
                'name': h, 'ip': self.ip(h), 'group': self.group(h),
                'namespace': self.namespace(h), 'veth': self.veth(h),
                'host_dir': self.host_dir(h), 'sshd_pidfile': self._sshd_file(h, '.pid'),
            } for h in self.hosts],
        }

    @classmethod
    def load(cls, workdir=DEFAULT_DIR):
        """The lab described by <workdir>/lab.json, or None if there is none."""
        try:
            with open(os.path.join(workdir, 'lab.json')) as f:
                d = json.load(f)
        except FileNotFoundError:
            return None
        return cls(d['n'], d['rate'], d['workdir'], d['prefix'], d['subnet'])

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
        self._clear_leftovers()
        self._check_subnet_free()
        try:
            self._prepare_files()
            self._write_state()        # written first, so `down` can undo a crashed up
            self._make_network()
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

    def _prepare_files(self):
        os.makedirs(self.ssh_dir, mode=0o700, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        shutil.rmtree(os.path.join(self.workdir, 'hosts'), ignore_errors=True)
        for d in PRIVATE_DIRS:
            os.makedirs(d, exist_ok=True)      # mount points (/var/lib/p2p-swarm may be new)
        for h in self.hosts:
            for d in PRIVATE_DIRS:
                path = self.host_dir(h) + d
                os.makedirs(path, exist_ok=True)
                os.chmod(path, 0o1777 if d in STICKY_DIRS else 0o755)
        self._make_keys()
        with open(self.private_key + '.pub') as f:
            pub = f.read().strip()
        with open(os.path.join(self.ssh_dir, 'authorized_keys'), 'w') as f:
            f.write('from="%s" %s\n' % (self.controller_ip, pub))
        for h in self.hosts:
            with open(self._sshd_file(h, '.conf'), 'w') as f:
                f.write(self._sshd_config(h))
            open(self._sshd_file(h, '.log'), 'w').close()
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
        return '\n'.join([
            '# p2p lab host %s (generated by tests/lab/lab.py)' % name,
            'ListenAddress %s:22' % self.ip(name),
            'HostKey %s' % self._sshd_file(name, '_host_ed25519_key'),
            'PidFile %s' % self._sshd_file(name, '.pid'),
            'AuthorizedKeysFile %s' % os.path.join(self.ssh_dir, 'authorized_keys'),
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
        root = [
            'link add %s type bridge' % self.bridge,
            # No netfilter on lab traffic, no STP delay before ports forward.
            'link set %s type bridge nf_call_iptables 0 nf_call_ip6tables 0 '
            'nf_call_arptables 0 stp_state 0 forward_delay 0' % self.bridge,
            'link set %s addrgenmode none' % self.bridge,    # no IPv6 chatter
            'addr add %s/24 dev %s' % (self.controller_ip, self.bridge),
            'link set %s up' % self.bridge,
        ]
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
                      'addr add %s/24 dev eth0' % self.ip(h),
                      'link set eth0 up'], netns=ns)
            tc_batch(shaping_commands('eth0', self.rate_bps), netns=ns)   # host upload

    def _mount_script(self, name):
        """Shell lines that give the current mount namespace the host's view."""
        return '; '.join('mount --bind %s %s' % (shlex.quote(self.host_dir(name) + d), d)
                         for d in PRIVATE_DIRS)

    def _start_sshds(self):
        """One sshd per host in a private mount namespace; started in parallel
        (sshd binds before it daemonizes, so each launcher exits quickly)."""
        procs = {}
        for h in self.hosts:
            script = 'set -e; %s; exec %s -f %s -E %s' % (
                self._mount_script(h), SSHD, shlex.quote(self._sshd_file(h, '.conf')),
                shlex.quote(self._sshd_file(h, '.log')))
            procs[h] = subprocess.Popen(
                ['ip', 'netns', 'exec', self.namespace(h),
                 'unshare', '-m', '--propagation', 'private', 'sh', '-c', script],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, start_new_session=True)
        failed = []
        for h, p in procs.items():
            out = p.communicate(timeout=60)[0]
            if p.returncode != 0:
                failed.append('%s: rc=%d %s %s' % (h, p.returncode, out.strip(),
                                                   _tail(self._sshd_file(h, '.log'))))
        if failed:
            raise LabError('sshd did not start on: ' + '; '.join(failed))

    def _wait_sshds(self, timeout):
        deadline = time.monotonic() + timeout
        for h in self.hosts:
            if not _wait_for_ssh(self.ip(h), deadline):
                raise LabError('sshd on %s (%s) did not answer within %.0fs; log: %s'
                               % (h, self.ip(h), timeout, _tail(self._sshd_file(h, '.log'))))

    def _write_inventory(self):
        lines = ['# p2p.swarm lab (tests/lab/lab.py): %d peers + seed, %s per link'
                 % (self.n, self.rate), '', '[seeders]']
        lines += ['seed ansible_host=%s' % self.ip('seed'), '', '[peers]']
        lines += ['%s ansible_host=%s' % (h, self.ip(h)) for h in self.peers]
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
            'p2p_tracker_address=%s' % self.ip('seed'),
            'p2p_targets=peers',
            '',
        ]
        with open(self.inventory, 'w') as f:
            f.write('\n'.join(lines))

    # running things on a host

    def sshd_pid(self, name):
        """Pid of the host's sshd if it is alive in the host's namespace."""
        try:
            with open(self._sshd_file(name, '.pid')) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        ns = namespace_inode(self.namespace(name))
        return pid if ns and _netns_inode(pid) == ns else None

    def exec_argv(self, name, argv):
        """argv that runs `argv` inside the host's network namespace and mount
        view (for Popen). Joins the sshd's namespaces, so it sees exactly
        what an ssh session sees; builds the same view if sshd is gone."""
        pid = self.sshd_pid(name)
        if pid:
            return ['nsenter', '-t', str(pid), '-n', '-m', '--'] + list(argv)
        script = 'set -e; %s; exec "$@"' % self._mount_script(name)
        return ['ip', 'netns', 'exec', self.namespace(name), 'unshare', '-m',
                '--propagation', 'private', 'sh', '-c', script, 'sh'] + list(argv)

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
        masters for it, delete namespaces, veths and bridge, remove the
        hosts' files. Safe to call when nothing (or half a lab) is up."""
        if os.geteuid() != 0:
            raise LabError('the lab needs root')
        kill_and_wait(lambda: controller_ssh_pids(self.subnet),
                      'controller ssh connections to %s.0/24' % self.subnet)
        namespaces = self._lab_namespaces()
        inodes = [namespace_inode(ns) for ns in namespaces]
        kill_and_wait(lambda: pids_in_namespaces(inodes),
                      'processes in namespaces %s-*' % self.prefix)
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

    def _remove_files(self, purge):
        if purge and os.path.exists(self.workdir):
            shutil.rmtree(self.workdir)
            return
        shutil.rmtree(os.path.join(self.workdir, 'hosts'), ignore_errors=True)
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
        return left

    # status

    def status(self):
        """Per-host health: namespace present, sshd alive, port 22 answering."""
        rows = []
        for h in self.hosts:
            ns_ok = namespace_inode(self.namespace(h)) is not None
            pid = self.sshd_pid(h)
            ssh_ok = bool(pid) and _wait_for_ssh(self.ip(h), time.monotonic() + 1)
            rows.append({'name': h, 'ip': self.ip(h), 'group': self.group(h),
                         'namespace': ns_ok, 'sshd_pid': pid, 'ssh': ssh_ok})
        return rows


# --- command line -----------------------------------------------------------

def _cmd_up(args):
    lab = Lab(args.n, rate=args.rate, workdir=args.dir, prefix=args.prefix, subnet=args.subnet)
    t0 = time.monotonic()
    lab.up()
    print('lab up: seed + %d peers, %s per link, in %.1fs' % (lab.n, lab.rate, time.monotonic() - t0))
    print('inventory: %s' % lab.inventory)
    print('example:   ansible -i %s all -m ping' % lab.inventory)
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
    for r in rows:
        print('  %-5s %-12s %-8s ns=%-3s sshd=%-7s ssh=%s' % (
            r['name'], r['ip'], r['group'], 'ok' if r['namespace'] else 'NO',
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
        return {'up': _cmd_up, 'down': _cmd_down, 'status': _cmd_status}[args.cmd](args)
    except LabError as e:
        print('lab: error: %s' % e, file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())

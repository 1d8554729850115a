"""Benchmark: ansible copy against the p2p.swarm playbook on a lab of real hosts.

    sudo .venv/bin/python bench/run.py [--hosts 5,10,20,40] [--size-mb 50] [--rate 50mbit]

One run brings up its own lab (network namespaces 10.232.0.0/24, prefix
p2pbench, files under /var/lib/p2p-bench, so it never meets the test lab),
installs libtorrent on every host with a warm-up run of the playbook on a
tiny file, then for each N measures side by side:

  - `ansible peers -m ansible.builtin.copy -f N`, run on the seeder host (in
    its namespace), so the file leaves through one shaped uplink like the
    swarm's original copy does;
  - `ansible-playbook -f N p2p.swarm.distribute`, whole wall time, and its
    swarm phase alone (first download agent started -> last host placed the
    verified file, from the agents' own status files), per-host completion
    p50/p99/max, bytes the seeder uploaded as a multiple of the file, CPU
    (busy cores from /proc/stat) during the swarm phase;
  - S/B, the physical limit.

It writes docs/benchmark.json (raw numbers), the generated part of
docs/benchmark.md (between the bench:begin/end markers; the text around them
is kept) and docs/benchmark.png (time against N). Every command is bounded
in time; the lab is torn down at the end whatever happens.
"""
import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'lab'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))

from lab import Lab, parse_rate, pids_in_namespaces, namespace_inode, controller_ssh_pids, kill_and_wait  # noqa: E402
from helpers import WHEEL_DIR, ansible_env, install_collection  # noqa: E402

BENCH_DIR = '/var/lib/p2p-bench'
PREFIX = 'p2pbench'
SUBNET = '10.232.0'
DEST = '/srv/bench.bin'
COPY_DEST = '/srv/bench-copy.bin'
STATE_DIR = '/var/lib/p2p-swarm'
VENV_BIN = os.path.dirname(sys.executable)
CALLBACKS = os.path.join(ROOT, 'bench', 'callback_plugins')
DOCS = os.path.join(ROOT, 'docs')
BEGIN, END = '<!-- bench:begin -->', '<!-- bench:end -->'


def log(message):
    print('[bench %s] %s' % (time.strftime('%H:%M:%S'), message), flush=True)


# ------------------------------------------------------------ measurements

def percentile(values, fraction):
    """Nearest-rank percentile (the one p2p_wait reports); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(math.ceil(fraction * len(ordered))))
    return ordered[min(rank, len(ordered)) - 1]


def read_cpu():
    """(busy, total, steal) jiffies of the whole machine from /proc/stat.
    Steal is time the hypervisor gave this VM's cores to others: it counts
    as busy, and a run with much of it was slowed by its neighbours."""
    with open('/proc/stat') as handle:
        fields = [int(x) for x in handle.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait, steal


def settle(quiet=0.3, within=90):
    """Wait (bounded) until the machine is nearly idle, measured over 3 s:
    a run must not start while the previous one's agents or SSH sessions
    still burn CPU (the load average lags by minutes). Returns busy cores."""
    deadline = time.time() + within
    while True:
        a = read_cpu()[:2]
        time.sleep(3)
        b = read_cpu()[:2]
        busy = (os.cpu_count() or 1) * (b[0] - a[0]) / float(max(1, b[1] - a[1]))
        if busy <= quiet or time.time() >= deadline:
            return round(busy, 2)


class CpuSampler(threading.Thread):
    """Samples /proc/stat every `every` seconds; busy_cores(t0, t1) afterwards."""

    def __init__(self, every=0.2):
        super(CpuSampler, self).__init__(daemon=True)
        self.every = every
        self.samples = []
        self.halt = threading.Event()
        self.ncpu = os.cpu_count() or 1

    def run(self):
        while not self.halt.is_set():
            self.samples.append((time.time(),) + read_cpu())
            self.halt.wait(self.every)

    def stop(self):
        self.halt.set()
        self.join(5)
        self.samples.append((time.time(),) + read_cpu())

    def busy_cores(self, t0, t1, field=1):
        """Average number of busy cores between wall times t0 and t1
        (field=3: of those, cores stolen by the hypervisor)."""
        before = [s for s in self.samples if s[0] <= t0] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= t1] or self.samples[-1:]
        a, b = before[-1], after[0]
        if b[2] <= a[2]:
            return None
        return round(self.ncpu * (b[field] - a[field]) / float(b[2] - a[2]), 2)


def run_bounded(argv, env, timeout, log_path):
    """Run argv with its output in log_path; returns (rc, seconds). rc is
    'timeout' when it had to be killed."""
    started = time.time()
    with open(log_path, 'w') as out:
        out.write('$ %s\n' % ' '.join(shlex.quote(a) for a in argv))
        out.flush()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd='/')
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = 'timeout'
    return rc, time.time() - started


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def make_file(path, size):
    with open(path, 'wb') as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 1 << 20))
            handle.write(chunk)
            remaining -= len(chunk)
    return file_sha256(path)


def agent_statuses(lab, host):
    """[(job, status)] of every agent job on the host, from its private state dir."""
    found = []
    root = lab.host_dir(host) + STATE_DIR
    for dirpath, _dirs, files in os.walk(root):
        if 'status.json' in files and 'job.json' in files:
            try:
                with open(os.path.join(dirpath, 'job.json')) as handle:
                    job = json.load(handle)
                with open(os.path.join(dirpath, 'status.json')) as handle:
                    found.append((job, json.load(handle)))
            except (OSError, ValueError):
                continue
    return found


# ------------------------------------------------------------------ the lab

class Bench(object):
    def __init__(self, args):
        self.args = args
        self.ns = sorted(int(x) for x in args.hosts.split(','))
        self.size = int(args.size_mb * 1024 * 1024)
        self.rate_bps = parse_rate(args.rate)
        self.limit = self.size * 8.0 / self.rate_bps          # S/B, seconds
        self.lab = Lab(max(self.ns), rate=args.rate, workdir=BENCH_DIR, prefix=PREFIX, subnet=SUBNET)
        self.work = os.path.join(BENCH_DIR, 'run')
        self.logs = os.path.join(self.work, 'logs')
        self.data = os.path.join(BENCH_DIR, 'data')
        self.results = {'runs': []}

    # -- set-up

    def prepare(self):
        shutil.rmtree(self.work, ignore_errors=True)
        for d in (self.logs, self.data, os.path.join(self.work, 'home-p2p', 'tmp'),
                  os.path.join(self.work, 'home-copy', 'tmp')):
            os.makedirs(d, exist_ok=True)
        log('installing the collection from %s' % ROOT)
        collections = install_collection(self.work)
        self.env_p2p = ansible_env(collections, os.path.join(self.work, 'home-p2p'))
        self.env_p2p.update({
            'ANSIBLE_CALLBACK_PLUGINS': CALLBACKS,
            'ANSIBLE_CALLBACKS_ENABLED': 'p2p_bench_timer',
            'ANSIBLE_SSH_CONTROL_PATH_DIR': os.path.join(self.work, 'home-p2p', 'cp'),
        })
        # The copy runs inside the seeder's namespace with its own ssh control
        # sockets: unix sockets cross network namespaces, and a master opened
        # from the root namespace would carry the copy around the seeder's link.
        self.env_copy = ansible_env(collections, os.path.join(self.work, 'home-copy'))
        self.env_copy['ANSIBLE_SSH_CONTROL_PATH_DIR'] = os.path.join(self.work, 'home-copy', 'cp')
        self.payload = os.path.join(self.data, 'bench.bin')
        log('writing a %d MiB random file' % (self.size >> 20))
        self.digest = make_file(self.payload, self.size)
        self.tiny = os.path.join(self.data, 'warmup.bin')
        make_file(self.tiny, 64 * 1024)

    def inventory(self, n, pipelining=True):
        """The lab's inventory with only the first n peers (and pipelining
        off when asked: the lab turns it on)."""
        keep = set(self.lab.peers[:n])
        lines = []
        with open(self.lab.inventory) as handle:
            for line in handle:
                name = line.split(' ', 1)[0].strip()
                if name in self.lab.peers and name not in keep:
                    continue
                if not pipelining and line.startswith('ansible_pipelining='):
                    line = 'ansible_pipelining=false\n'
                lines.append(line)
        path = os.path.join(self.work, 'inventory-%d%s.ini' % (n, '' if pipelining else '-nopipe'))
        with open(path, 'w') as handle:
            handle.writelines(lines)
        return path

    def clean_hosts(self):
        """Remove what an earlier run left on the hosts: files, agent jobs, tracker state."""
        self.check_no_agents()
        for host in self.lab.hosts:
            base = self.lab.host_dir(host)
            for name in os.listdir(base + '/srv'):
                path = os.path.join(base + '/srv', name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            state = base + STATE_DIR
            for name in os.listdir(state):
                path = os.path.join(state, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)

    def lab_processes(self, needle):
        inodes = [namespace_inode(self.lab.namespace(h)) for h in self.lab.hosts]
        found = []
        for pid in pids_in_namespaces(inodes):
            try:
                with open('/proc/%d/cmdline' % pid, 'rb') as handle:
                    cmd = handle.read().replace(b'\0', b' ').decode(errors='replace')
            except OSError:
                continue
            if needle in cmd:
                found.append((pid, cmd.strip()))
        return found

    def check_no_agents(self, within=30):
        """Download agents end by themselves a few seconds after a run (once
        the tracker is stopped): give them `within` seconds."""
        deadline = time.time() + within
        while True:
            left = self.lab_processes('/agent.py ') + self.lab_processes('/tracker.py ')
            if not left:
                return
            if time.time() >= deadline:
                raise RuntimeError('swarm processes left running after a run: %s' % left)
            time.sleep(0.5)

    def close_ssh(self):
        """End ssh control masters, so every timed run starts from cold connections."""
        kill_and_wait(lambda: controller_ssh_pids(self.lab.subnet), 'controller ssh masters')
        seed_ns = [namespace_inode(self.lab.namespace('seed'))]

        def seed_ssh():
            return [pid for pid in pids_in_namespaces(seed_ns)
                    if open('/proc/%d/comm' % pid).read().strip() == 'ssh']
        kill_and_wait(seed_ssh, 'ssh clients in the seeder namespace')

    def playbook_argv(self, inventory, forks, path, dest, extra=()):
        argv = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', inventory, '-f', str(forks),
                'p2p.swarm.distribute', '-e', 'file=%s' % path, '-e', 'dest=%s' % dest,
                '-e', 'p2p_wheel_dir=%s' % WHEEL_DIR, '-e', 'p2p_timeout=%d' % self.args.swarm_timeout]
        for item in extra:
            argv += ['-e', item]
        return argv

    def warm_up(self):
        """Install libtorrent on every host, so no install time lands in the
        numbers: the playbook with a tiny file on one host (it builds the
        agent venv there), that venv copied into every other host's private
        /opt (same path inside each host), then the playbook with the tiny
        file on all hosts, which finds libtorrent everywhere."""
        n = max(self.ns)
        env = dict(self.env_p2p, P2P_BENCH_TIMINGS=os.path.join(self.logs, 'warmup-timings.json'))
        started = time.time()
        for step, count in (('warmup-1', 1), ('warmup', n)):
            if step == 'warmup':
                venv = self.lab.host_dir(self.lab.peers[0]) + '/opt/p2p-swarm'
                for host in self.lab.peers[1:n]:
                    target = self.lab.host_dir(host) + '/opt/p2p-swarm'
                    if not os.path.exists(target):
                        shutil.copytree(venv, target, symlinks=True)
            log('warm-up: playbook with a tiny file on %d host(s)' % count)
            log_path = os.path.join(self.logs, step + '.log')
            rc, _seconds = run_bounded(self.playbook_argv(self.inventory(count), count, self.tiny, '/srv/warmup.bin'),
                                       env, self.args.run_timeout + 300, log_path)
            if rc != 0:
                raise RuntimeError('warm-up playbook failed (rc=%s), see %s' % (rc, log_path))
            self.clean_hosts()
        log('warm-up done in %.1f s' % (time.time() - started))

    def allow_seeder_ssh(self):
        """The lab accepts the controller's key from the controller's address
        only; the copy runs on the seeder host, so accept it from there too."""
        with open(self.lab.private_key + '.pub') as handle:
            pub = handle.read().strip()
        with open(os.path.join(self.lab.ssh_dir, 'authorized_keys'), 'a') as handle:
            handle.write('from="%s" %s\n' % (self.lab.ip('seed'), pub))

    # -- one measurement each

    def measure_copy(self, n):
        inventory = self.inventory(n)
        self.clean_hosts()
        self.close_ssh()
        settle()
        argv = self.lab.exec_argv('seed', [
            os.path.join(VENV_BIN, 'ansible'), 'peers', '-i', inventory, '-f', str(n),
            '-m', 'ansible.builtin.copy', '-a', 'src=%s dest=%s mode=0644' % (self.payload, COPY_DEST)])
        timeout = int(3 * n * self.limit + 180)
        sampler = CpuSampler()
        sampler.start()
        t0 = time.time()
        rc, seconds = run_bounded(argv, self.env_copy, timeout, os.path.join(self.logs, 'copy-%d.log' % n))
        sampler.stop()
        ok = sum(1 for h in self.lab.peers[:n] if self.host_has(h, COPY_DEST))
        self.clean_hosts()
        return {'rc': rc, 'seconds': round(seconds, 2), 'hosts_ok': ok, 'timeout': timeout,
                'cpu_cores': sampler.busy_cores(t0, t0 + seconds),
                'steal_cores': sampler.busy_cores(t0, t0 + seconds, field=3)}

    def host_has(self, host, dest):
        path = self.lab.host_dir(host) + dest
        return os.path.isfile(path) and os.path.getsize(path) == self.size and file_sha256(path) == self.digest

    def measure_p2p(self, n, pipelining=True):
        inventory = self.inventory(n, pipelining)
        self.clean_hosts()
        self.close_ssh()
        tag = '%d%s' % (n, '' if pipelining else '-nopipe')
        busy_before = settle()
        timings = os.path.join(self.logs, 'p2p-%s-timings.json' % tag)
        env = dict(self.env_p2p, P2P_BENCH_TIMINGS=timings)
        sampler = CpuSampler()
        sampler.start()
        t0 = time.time()
        rc, seconds = run_bounded(self.playbook_argv(inventory, n, self.payload, DEST, self.args.extra_vars),
                                  env, self.args.run_timeout, os.path.join(self.logs, 'p2p-%s.log' % tag))
        sampler.stop()
        result = {'rc': rc, 'seconds': round(seconds, 2), 'busy_cores_before': busy_before,
                  'steal_cores': sampler.busy_cores(t0, t0 + seconds, field=3)}
        result.update(self.swarm_numbers(n, sampler, tag))
        result['phases'] = self.phases(timings)
        result['hosts_ok'] = sum(1 for h in self.lab.peers[:n] if self.host_has(h, DEST))
        self.check_no_agents()
        return result

    def swarm_numbers(self, n, sampler, tag):
        peers, seed = {}, {}
        for job, status in agent_statuses(self.lab, 'seed'):
            if job.get('seed'):
                seed = status
        seed_uploaded = seed.get('uploaded')
        for host in self.lab.peers[:n]:
            for job, status in agent_statuses(self.lab, host):
                if not job.get('seed') and job.get('dest') == DEST:
                    peers[host] = status
        starts = [s['started_at'] for s in peers.values() if s.get('started_at')]
        placed = dict((h, s['placed_at']) for h, s in peers.items() if s.get('placed_at'))
        out = {'agents': len(peers), 'placed': len(placed),
               'seed_upload_x': round(seed_uploaded / float(self.size), 3) if seed_uploaded is not None else None,
               'peer_upload_x': [round((s.get('uploaded') or 0) / float(self.size), 2) for s in peers.values()],
               # hosts whose striped picker fell back to a plain swarm (seeder upload rises)
               'striping_given_up': sum(1 for s in peers.values() if s.get('striping') == 'given up'),
               'never_announced': sorted(h for h, s in peers.items() if not s.get('tracker_ok'))}
        # Every agent's last status, for a look at one host after the lab is gone.
        with open(os.path.join(self.logs, 'status-%s.json' % tag), 'w') as handle:
            json.dump(peers, handle, indent=1, sort_keys=True)
        if starts and placed:
            t0 = min(starts)
            completion = [t - t0 for t in placed.values()]
            own = [placed[h] - peers[h]['started_at'] for h in placed]
            out.update({
                'swarm_s': round(max(placed.values()) - t0, 2),
                'p50': round(percentile(completion, 0.5), 2), 'p99': round(percentile(completion, 0.99), 2),
                'max': round(max(completion), 2),
                'own_p50': round(percentile(own, 0.5), 2), 'own_max': round(max(own), 2),
                'start_spread_s': round(max(starts) - t0, 2),
                # The held seed: how many hosts it saw, when it let go.
                'seed_held_peers': seed.get('held_peers'),
                'seed_released_after_last_start_s': round(seed['released_at'] - max(starts), 2)
                if seed.get('released_at') else None,
                'cpu_cores': sampler.busy_cores(t0, max(placed.values())),
            })
        return out

    def phases(self, timings_path):
        """Seconds per part of the playbook, from the timer callback."""
        try:
            with open(timings_path) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return {}
        tasks = data.get('tasks') or []
        out = {'tasks': [(t['name'], round(t['end'] - t['start'], 2)) for t in tasks]}
        names = [t['name'] for t in tasks]

        def at(word):
            return next((i for i, name in enumerate(names) if word in name), None)
        # The block around the start call carries its name too: the round is the longest.
        starts = [i for i, name in enumerate(names) if 'Get the file, or start its download' in name]
        start_i = max(starts, key=lambda i: tasks[i]['end'] - tasks[i]['start']) if starts else None
        wait_i = at('Wait for the swarm')
        if tasks and start_i is not None and wait_i is not None:
            out['before_start_s'] = round(tasks[start_i]['start'] - tasks[0]['start'], 2)
            out['start_agents_s'] = round(tasks[start_i]['end'] - tasks[start_i]['start'], 2)
            out['wait_s'] = round(tasks[wait_i]['end'] - tasks[wait_i]['start'], 2)
            out['after_wait_s'] = round(tasks[-1]['end'] - tasks[wait_i]['end'], 2)
        if data.get('p2p_wait'):
            wait = data['p2p_wait'][-1]
            out['tracker_view'] = dict((k, wait.get(k)) for k in ('elapsed', 'p50', 'p99', 'max'))
        return out

    # -- the whole run

    def wait_for_low_load(self):
        deadline = time.time() + self.args.load_wait
        while True:
            load = os.getloadavg()
            if load[0] <= self.args.max_load or time.time() >= deadline:
                return load
            log('load %.2f > %.2f, waiting (up to %d s more)' % (load[0], self.args.max_load, deadline - time.time()))
            time.sleep(15)

    def run(self):
        self.results['machine'] = machine_info()
        self.results['settings'] = {'hosts': self.ns, 'size_mb': self.args.size_mb, 'size': self.size,
                                    'rate': self.args.rate, 'rate_bps': self.rate_bps,
                                    's_over_b': round(self.limit, 2), 'extra_vars': list(self.args.extra_vars),
                                    'copy': not self.args.skip_copy}
        self.results['load_before'] = [round(x, 2) for x in self.wait_for_low_load()]
        log('load average before: %s' % self.results['load_before'])
        started = time.time()
        log('lab up: seed + %d peers, %s per link (%s.0/24)' % (max(self.ns), self.args.rate, SUBNET))
        self.lab.up()
        try:
            self.prepare()
            self.allow_seeder_ssh()
            self.warm_up()
            for n in self.ns:
                row = {'n': n, 'load_at_start': round(os.getloadavg()[0], 2)}
                log('N=%d: distribute playbook' % n)
                row['p2p'] = self.measure_p2p(n)
                log('N=%d: p2p whole %.1f s, swarm %s s, p99 %s s, seed upload %sx, rc=%s' % (
                    n, row['p2p']['seconds'], row['p2p'].get('swarm_s'), row['p2p'].get('p99'),
                    row['p2p'].get('seed_upload_x'), row['p2p']['rc']))
                if self.args.without_pipelining:
                    log('N=%d: distribute playbook without pipelining' % n)
                    row['p2p_nopipe'] = self.measure_p2p(n, pipelining=False)
                    log('N=%d: p2p without pipelining %.1f s, rc=%s' % (
                        n, row['p2p_nopipe']['seconds'], row['p2p_nopipe']['rc']))
                if not self.args.skip_copy:
                    log('N=%d: ansible copy' % n)
                    row['copy'] = self.measure_copy(n)
                    log('N=%d: copy %.1f s, rc=%s' % (n, row['copy']['seconds'], row['copy']['rc']))
                self.results['runs'].append(row)
                self.save()
        finally:
            self.results['bench_seconds'] = round(time.time() - started, 1)
            self.results['load_after'] = [round(x, 2) for x in os.getloadavg()]
            log('lab down')
            self.lab.down()
        self.save()
        return 0 if all(r['p2p']['rc'] == 0 and r['p2p']['hosts_ok'] == r['n'] for r in self.results['runs']) else 1

    def save(self):
        if self.args.json:
            with open(self.args.json, 'w') as handle:
                json.dump(self.results, handle, indent=1, sort_keys=True)


def machine_info():
    model = ''
    try:
        with open('/proc/cpuinfo') as handle:
            model = next((l.split(':', 1)[1].strip() for l in handle if l.startswith('model name')), '')
    except OSError:
        pass
    versions = {}
    for name, code in (('ansible_core', 'import ansible; print(ansible.__version__)'),
                       ('libtorrent', 'import libtorrent; print(libtorrent.__version__)')):
        proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
        versions[name] = proc.stdout.strip()
    return {'cpus': os.cpu_count(), 'cpu_model': model, 'kernel': platform.release(),
            'python': platform.python_version(), 'date': time.strftime('%Y-%m-%d %H:%M %Z'),
            'commit': subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'],
                                     capture_output=True, text=True).stdout.strip(),
            **versions}


# ------------------------------------------------------------------ report

def fmt(value, digits=1):
    if value is None:
        return '-'
    if isinstance(value, float):
        return '%.*f' % (digits, value)
    return str(value)


def targets(results):
    """The one-round issue's targets, each (text, measured, holds)."""
    limit = results['settings']['s_over_b']
    rows = dict((r['n'], r) for r in results['runs'])
    out = []
    for n, whole, faster in ((20, 35.0, 5), (40, None, 6)):
        row = rows.get(n)
        if not row:
            continue
        p = row['p2p']
        if whole:
            out.append(('N=%d: whole playbook <= %.0f s' % (n, whole), '%.1f s' % p['seconds'], p['seconds'] <= whole))
        else:
            out.append(('N=%d: every host verified' % n, '%d/%d' % (p['hosts_ok'], n), p['hosts_ok'] == n))
        if row.get('copy'):
            ratio = row['copy']['seconds'] / p['seconds']
            out.append(('N=%d: p2p >= %dx faster than copy' % (n, faster), '%.1fx' % ratio, ratio >= faster))
        if p.get('seed_upload_x') is not None:
            out.append(('N=%d: seeder upload <= 1.3x the file' % n, '%.2fx' % p['seed_upload_x'],
                        p['seed_upload_x'] <= 1.3))
        if p.get('p99') is not None and p.get('start_spread_s') is not None:
            late = p['p99'] - p['start_spread_s']
            out.append(('N=%d: p99 within 1.5 S/B (%.1f s) of the last agent start' % (n, 1.5 * limit),
                        '%.1f s' % late, late <= 1.5 * limit))
    ns = sorted(rows)
    if len(ns) >= 2 and ns[0] == 5 and ns[-1] == 40:
        a, b = rows[5]['p2p']['seconds'], rows[40]['p2p']['seconds']
        out.append(('p2p whole time grows <= 2.5x from N=5 to N=40', '%.2fx (%.1f -> %.1f s)' % (b / a, a, b),
                    b <= 2.5 * a))
        if rows[5].get('copy') and rows[40].get('copy'):
            out.append(('(copy, N=5 -> N=40, for comparison)', '%.1fx' % (
                rows[40]['copy']['seconds'] / rows[5]['copy']['seconds']), None))
    return out


def render(results, plot_name):
    s = results['settings']
    m = results['machine']
    limit = s['s_over_b']
    lines = [
        BEGIN,
        '<!-- generated by bench/run.py; edit the text outside these markers -->',
        '',
        '### Run of %s' % m['date'],
        '',
        '%d MiB random file, every link %s both ways (seeder too), S/B = %.2f s; forks = N. '
        'Machine: %d x %s, kernel %s, Python %s, ansible-core %s, libtorrent %s, commit %s. '
        'Load average before the run %s, after %s; the whole benchmark took %d s.' % (
            s['size_mb'], s['rate'], limit, m['cpus'], m['cpu_model'], m['kernel'], m['python'],
            m['ansible_core'], m['libtorrent'], m['commit'], ' / '.join(fmt(x, 2) for x in results['load_before']),
            ' / '.join(fmt(x, 2) for x in results.get('load_after', [])), results.get('bench_seconds', 0)),
        '',
        '| N | copy s | p2p whole s | swarm s | p50 s | p99 s | max s | seeder upload | CPU cores (swarm) '
        '| S/B s | copy / p2p | swarm / S/B | p99 / S/B |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in results['runs']:
        p, c = r['p2p'], r.get('copy') or {}
        ratio = (c['seconds'] / p['seconds']) if c.get('seconds') else None
        lines.append('| %d | %s | %s | %s | %s | %s | %s | %s | %s | %.1f | %s | %s | %s |' % (
            r['n'], fmt(c.get('seconds')), fmt(p['seconds']), fmt(p.get('swarm_s')), fmt(p.get('p50')),
            fmt(p.get('p99')), fmt(p.get('max')),
            ('%.2fx' % p['seed_upload_x']) if p.get('seed_upload_x') is not None else '-',
            fmt(p.get('cpu_cores'), 2) + ' of %d' % m['cpus'], limit, ('%.1fx' % ratio) if ratio else '-',
            fmt(p['swarm_s'] / limit, 2) if p.get('swarm_s') else '-',
            fmt(p['p99'] / limit, 2) if p.get('p99') else '-'))
    lines += ['',
              'copy: `ansible peers -m ansible.builtin.copy -f N`, run on the seeder host. p2p whole: '
              '`ansible-playbook -f N p2p.swarm.distribute` wall time (torrent, push, tracker, seed, agents, '
              'wait, verify, clean-up). swarm: first download agent started -> last host placed the verified '
              'file; p50/p99/max: each host\'s placement time on that clock (nearest rank, as p2p_wait). '
              'seeder upload: bytes the seeding agent sent / file size. CPU: busy cores of the whole machine '
              '(/proc/stat) during the swarm phase.', '']
    stolen = [(r['n'], r['p2p'].get('steal_cores')) for r in results['runs'] if r['p2p'].get('steal_cores') is not None]
    if stolen:
        lines += ['Cores the hypervisor gave to other machines during each p2p run (steal time; '
                  'it slows a run and is not ours to tune): %s.' % ', '.join(
                      'N = %d: %s' % (n, fmt(x, 2)) for n, x in stolen), '']
    nopipe = [r for r in results['runs'] if r.get('p2p_nopipe')]
    if nopipe:
        lines += ['Pipelining (`ansible_pipelining`), the same playbook both ways in this run:', '',
                  '| N | with pipelining s | without s | without / with |', '|---|---|---|---|']
        for r in nopipe:
            a, b = r['p2p']['seconds'], r['p2p_nopipe']['seconds']
            lines.append('| %d | %.1f | %.1f | %.2fx |' % (r['n'], a, b, b / a))
        lines.append('')
    t = targets(results)
    if t:
        lines += ['Targets (one SSH round per host):', '', '| target | measured | holds |', '|---|---|---|']
        for text, value, holds in t:
            lines.append('| %s | %s | %s |' % (text, value, '-' if holds is None else ('yes' if holds else 'NO')))
        lines.append('')
    lines += ['Where the playbook time goes (seconds):', '',
              '| N | before agents start | start agents (one round) | agents start spread | wait on swarm '
              '| p2p_wait p50 / p99 / max (from the wait\'s start) | after the wait | copy CPU cores '
              '| hosts verified p2p / copy |',
              '|---|---|---|---|---|---|---|---|---|']
    for r in results['runs']:
        p, ph, c = r['p2p'], r['p2p'].get('phases') or {}, r.get('copy') or {}
        tv = ph.get('tracker_view') or {}
        lines.append('| %d | %s | %s | %s | %s | %s / %s / %s | %s | %s | %s / %s |' % (
            r['n'], fmt(ph.get('before_start_s')), fmt(ph.get('start_agents_s')), fmt(p.get('start_spread_s'), 1),
            fmt(ph.get('wait_s')), fmt(tv.get('p50')), fmt(tv.get('p99')), fmt(tv.get('max')),
            fmt(ph.get('after_wait_s')), fmt(c.get('cpu_cores'), 2), p.get('hosts_ok'), c.get('hosts_ok', '-')))
    lines += ['', '![time against N](%s)' % plot_name, '', END]
    return '\n'.join(lines)


def write_report(results, md_path, png_path):
    section = render(results, os.path.basename(png_path))
    try:
        with open(md_path) as handle:
            text = handle.read()
    except FileNotFoundError:
        text = '# Benchmark\n\n%s\n%s\n' % (BEGIN, END)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip('\n') + '\n\n' + section + '\n'
    with open(md_path, 'w') as handle:
        handle.write(text)
    plot(results, png_path)


def plot(results, png_path):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        log('matplotlib is not installed (pip install -r bench/requirements.txt): no plot')
        return
    runs = results['runs']
    ns = [r['n'] for r in runs]
    limit = results['settings']['s_over_b']
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    copy = [(r['n'], r['copy']['seconds']) for r in runs if r.get('copy')]
    if copy:
        ax.plot([c[0] for c in copy], [c[1] for c in copy], 'o-', color='tab:red', label='ansible copy')
    ax.plot(ns, [r['p2p']['seconds'] for r in runs], 's-', color='tab:blue', label='p2p playbook (whole)')
    ax.plot(ns, [r['p2p'].get('swarm_s') for r in runs], '^--', color='tab:cyan', label='p2p swarm phase')
    ax.plot(ns, [r['p2p'].get('p99') for r in runs], 'v:', color='tab:green', label='p2p host p99')
    ax.axhline(limit, color='black', linestyle='-.', linewidth=1, label='S/B = %.1f s' % limit)
    ax.set_yscale('log')
    ax.set_xscale('log')
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel('hosts N (forks = N)')
    ax.set_ylabel('seconds (log scale)')
    s = results['settings']
    ax.set_title('%d MiB to N hosts, %s links' % (s['size_mb'], s['rate']))
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hosts', default='5,10,20,40', help='comma-separated host counts (default 5,10,20,40)')
    parser.add_argument('--size-mb', type=float, default=50, help='file size in MiB (default 50)')
    parser.add_argument('--rate', default='50mbit', help='every link, both ways, tc units (default 50mbit)')
    parser.add_argument('--skip-copy', action='store_true', help='measure only the playbook')
    parser.add_argument('--without-pipelining', action='store_true',
                        help='also run the playbook with ansible_pipelining=false at each N')
    parser.add_argument('-e', '--extra-vars', action='append', default=[], metavar='K=V',
                        help='extra variable for the playbook (tuning experiments)')
    parser.add_argument('--run-timeout', type=int, default=900, help='seconds allowed per playbook run')
    parser.add_argument('--swarm-timeout', type=int, default=300, help='p2p_timeout of each run')
    parser.add_argument('--max-load', type=float, default=1.0,
                        help='wait until the 1-minute load average is at most this before starting')
    parser.add_argument('--load-wait', type=int, default=600, help='...but at most this many seconds')
    parser.add_argument('--json', default=os.path.join(DOCS, 'benchmark.json'), help='raw results')
    parser.add_argument('--report', default=os.path.join(DOCS, 'benchmark.md'),
                        help='markdown report (generated section between markers); "" for none')
    parser.add_argument('--plot', default=os.path.join(DOCS, 'benchmark.png'))
    parser.add_argument('--render', metavar='JSON', help='only re-render the report and plot from raw results')
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as handle:
            write_report(json.load(handle), args.report, args.plot)
        return 0
    if os.geteuid() != 0:
        parser.error('the lab needs root (network namespaces, tc, mounts)')
    bench = Bench(args)
    rc = bench.run()
    if args.report:
        write_report(bench.results, args.report, args.plot)
        log('wrote %s and %s' % (args.report, args.plot))
    return rc


if __name__ == '__main__':
    sys.exit(main())

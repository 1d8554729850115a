"""The swarm phase alone, without Ansible: for tuning the agent quickly.

    sudo .venv/bin/python bench/swarm.py [--hosts 5,10,20] [--size-mb 20] [--reps 2]
        [--no-stripes] [--seed-last | --held] [--piece-kib 256] [--set SETTING=VALUE ...]
        [--seed-set SETTING=VALUE ...] [--const NAME=VALUE ...]
        [--debug] [--keep-lab] [--tag TEXT] [--out results.jsonl]

It uses the benchmark's lab (bench/run.py's: 10.232.0.0/24, prefix p2pbench,
/var/lib/p2p-bench), reusing one that is up and big enough. For each N it
starts the repository's tracker in the seeder's namespace, a seeding agent
there, and then a download agent in every host's namespace as fast as one
loop can (no ssh), exactly the agent script the playbook installs, run with
the controller's venv (which every host sees). It waits for every host to
place the verified file, bounded by --timeout, and prints one line per run:
swarm time, per-host p50/p99/max, seeder upload and total payload received
as multiples of the file, CPU busy cores, and how far apart the agents
started. --set overrides a libtorrent setting in every agent, --const one of
agent.py's module constants (e.g. STRIPE_EVERY=0.1): both only in this
harness, for experiments (--seed-set: the seed's only). --seed-last starts
the agents first and the seed after them, as the playbook does; --held
starts the seed first, held until every agent has connected, as a seeder
play before the hosts' play does (--seed-connects: the seed connects to
every agent too); --debug adds to every host's status.json
what each peer sent it and how many blocks came from the seeder inside and
outside the host's own stripe.
"""
import argparse
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (bench/run.py: lab identity, CpuSampler, percentile)

from lab import Lab  # noqa: E402  (tests/lab, put on sys.path by bench/run.py)

ROOT = bench.ROOT
AGENT = os.path.join(ROOT, 'plugins', 'module_utils', 'agent.py')
TRACKER = os.path.join(ROOT, 'plugins', 'module_utils', 'tracker.py')
PYTHON = sys.executable
WORK = os.path.join(bench.BENCH_DIR, 'swarm')
DEST = '/srv/swarm.bin'
PORT = 6969
AGENT_PORT = 6881   # p2p_peer_port's default

# Runs the agent with overrides from the job; the agent itself is unchanged.
WRAPPER = r'''
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location('p2p_agent', %(agent)r)
agent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(agent)
job = json.load(open(sys.argv[1]))
for name, value in (job.get('bench_constants') or {}).items():
    setattr(agent, name, value)
plain = agent.agent_session.session_settings
def session_settings(job):
    settings = plain(job)
    settings.update(job.get('bench_settings') or {})
    if job.get('seed'):
        settings.update(job.get('bench_seed_settings') or {})
    if job.get('bench_debug'):
        settings['alert_mask'] |= agent.lt.alert.category_t.block_progress_notification
    return settings
agent.agent_session.session_settings = session_settings
# Per-address totals across reconnections, for seeing who sent what (--debug).
plain_tick = agent.Agent.tick
def tick(self):
    plain_tick(self)
    now = agent.time.time()
    if job.get('bench_debug') and self.handle is not None and now - getattr(self, '_dbg', 0) > 0.25:
        self._dbg = now
        acc = getattr(self, '_acc', None)
        if acc is None:
            acc = self._acc = {}
        for p in self.handle.get_peer_info():
            conn = (p.ip[0], p.ip[1], p.local_endpoint()[1])
            acc[conn] = (p.pid.to_bytes()[:8].decode('ascii', 'replace'), p.total_download, p.total_upload)
        per_ip = {}
        for (ip, _rport, _lport), (pid, down, up) in acc.items():
            row = per_ip.setdefault('%%s %%s' %% (pid, ip), {'down': 0, 'up': 0, 'conns': 0})
            row['down'] += down
            row['up'] += up
            row['conns'] += 1
        self.status['bench_peers'] = per_ip
        if self.seeder_shut_out and 'bench_shut_out_at' not in self.status:
            self.status['bench_shut_out_at'] = now - self.started
            self.status['bench_seed_bytes_at_shut_out'] = sum(
                r['down'] for k, r in per_ip.items() if k.startswith('-PS'))
            self.status['bench_have_at_shut_out'] = self.picker.have_count
        self.status['bench_picker'] = None if self.picker is None else {
            'active': self.picker.active, 'released': sum(self.picker.released),
            'shut_out': self.seeder_shut_out}
agent.Agent.tick = tick
# Blocks received from the seeder, own stripe or not (--debug): where the
# seeder's upload beyond one copy of the file goes.
plain_on_alert = agent.Agent.on_alert
def on_alert(self, alert):
    plain_on_alert(self, alert)
    if type(alert).__name__ == 'block_finished_alert' and self.picker is not None:
        seeder = alert.pid.to_bytes().startswith(agent.agent_session.SEED_FINGERPRINT.encode('ascii'))
        own = alert.piece_index %% self.picker.count == self.picker.index
        key = 'bench_blocks_%%s_%%s' %% ('seeder' if seeder else 'peers', 'own' if own else 'other')
        self.status[key] = self.status.get(key, 0) + 1
agent.Agent.on_alert = on_alert
sys.exit(agent.main(sys.argv))
'''


def load_metainfo():
    """The collection's metainfo module, imported the way Ansible does (it
    imports its siblings as ansible_collections.p2p.swarm...). The tests'
    conftest.py makes the checkout importable under that name."""
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    import conftest  # noqa: F401  (links the checkout into .collections/ and puts that on sys.path)
    return importlib.import_module('ansible_collections.p2p.swarm.plugins.module_utils.metainfo')


def cpu_seconds(pid, which=(11, 12)):
    """CPU seconds of a live process (0 if it is gone): user + system, or `which` fields."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
        return sum(int(fields[i]) for i in which) / float(os.sysconf('SC_CLK_TCK'))
    except (OSError, IndexError, ValueError):
        return 0.0


def parse_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(items):
    """{NAME: value} from the NAME=VALUE words of --set, --seed-set, --const."""
    return dict((k, parse_value(v)) for k, v in (s.split('=', 1) for s in items))


def get_lab(n, rate):
    lab = Lab.load(bench.BENCH_DIR)
    if lab is not None and lab.n >= n and lab.rate == rate and lab.prefix == bench.PREFIX \
            and all(lab.sshd_pid(h) for h in lab.hosts):
        return lab, False
    lab = Lab(n, rate=rate, workdir=bench.BENCH_DIR, prefix=bench.PREFIX, subnet=bench.SUBNET)
    lab.up()
    return lab, True


class SwarmRun(object):
    def __init__(self, lab, n, payload, size, torrent, info, args):
        self.lab, self.n, self.payload, self.size = lab, n, payload, size
        self.torrent, self.info, self.args = torrent, info, args
        self.procs = []

    def job_dir(self, host):
        return '/var/lib/p2p-swarm/bench/%s' % host

    def write_job(self, host, job):
        """Write job.json where the host sees it; returns the in-host path."""
        inside = self.job_dir(host)
        outside = self.lab.host_dir(host) + inside
        shutil.rmtree(outside, ignore_errors=True)
        os.makedirs(outside)
        job = dict(job, job_dir=inside, status_path=inside + '/status.json',
                   bench_settings=self.args.settings, bench_seed_settings=self.args.seed_settings,
                   bench_constants=self.args.constants,
                   bench_debug=self.args.debug)
        with open(outside + '/job.json', 'w') as handle:
            json.dump(job, handle)
        with open(outside + '/wrapper.py', 'w') as handle:
            handle.write(WRAPPER % {'agent': AGENT})
        return inside

    def status(self, host):
        try:
            with open(self.lab.host_dir(host) + self.job_dir(host) + '/status.json') as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def spawn(self, host, argv, log_name):
        out = open(os.path.join(WORK, log_name), 'w')
        proc = subprocess.Popen(self.lab.exec_argv(host, argv), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd='/')
        self.procs.append(proc)
        return proc

    def run(self):
        seed_ip = self.lab.ip('seed')
        peers = self.lab.peers[:self.n]
        for host in peers:
            for name in (DEST, os.path.join(os.path.dirname(DEST), '.%s.p2p-part' % os.path.basename(DEST))):
                if os.path.exists(self.lab.host_dir(host) + name):
                    os.unlink(self.lab.host_dir(host) + name)
        tracker_dir = os.path.join(WORK, 'tracker')
        shutil.rmtree(tracker_dir, ignore_errors=True)
        os.makedirs(tracker_dir)
        with open(os.path.join(tracker_dir, 'torrents.json'), 'w') as handle:
            json.dump({self.info['v1']: {'aliases': [self.info['v2']], 'name': 'swarm.bin', 'size': self.size}},
                      handle)
        self.spawn('seed', [PYTHON, TRACKER, '--bind', seed_ip, '--port', str(PORT), '--state-dir', tracker_dir,
                            '--interval', str(self.args.interval)], 'tracker.log')
        deadline = time.time() + 20
        while time.time() < deadline and not os.path.exists(os.path.join(WORK, 'tracker.log')):
            time.sleep(0.1)
        time.sleep(0.5)
        common = {'torrent': self.torrent, 'lifetime': self.args.timeout + 60, 'linger': 20,
                  'tracker_grace': 30, 'run_id': 'bench', 'preferred_port': AGENT_PORT}
        stripes = 0 if self.args.no_stripes else self.n
        sampler = bench.CpuSampler()
        sampler.start()
        addresses = ['%s:%d' % (self.lab.ip(h), AGENT_PORT) for h in peers]
        if self.args.held:
            # A seeder play's order: the seed first, held for N hosts.
            self.start_seed(dict(common, hold_peers=self.n, peers=addresses if self.args.seed_connects else []))
        if self.args.seed_last or self.args.held:
            # Every agent is given the seeder and up to 30 random hosts as
            # peers, as the peer role does.
            rng = random.Random(self.n)
            jobs = dict((h, self.write_job(h, dict(
                common, dest=DEST, peer_name=h, stripe_index=i, stripe_count=stripes,
                peers=['%s:%d' % (seed_ip, AGENT_PORT)] + rng.sample(addresses, min(30, len(addresses))))))
                for i, h in enumerate(peers))
        else:
            self.start_seed(common)
            jobs = dict((h, self.write_job(h, dict(common, dest=DEST, peer_name=h, stripe_index=i,
                                                   stripe_count=stripes)))
                        for i, h in enumerate(peers))
        launched = time.time()
        agents = [self.spawn(host, [PYTHON, jobs[host] + '/wrapper.py', jobs[host] + '/job.json'],
                             'agent-%s.log' % host) for host in peers]
        if self.args.seed_last:
            # The peer role's order: the seed joins last and connects to every agent itself.
            self.start_seed(dict(common, peers=addresses))
        deadline = launched + self.args.timeout
        while time.time() < deadline:
            states = [self.status(h) for h in peers]
            if all(s.get('placed') or s.get('state') == 'failed' for s in states):
                break
            if all(a.poll() is not None for a in agents):
                print('every agent exited; see %s/agent-*.log' % WORK)
                break
            time.sleep(0.2)
        sampler.stop()
        agent_cpu = sum(cpu_seconds(a.pid) for a in agents)
        agent_sys = sum(cpu_seconds(a.pid, (12,)) for a in agents)
        statuses = dict((h, self.status(h)) for h in peers)
        seed = self.status('seed')
        self.stop()
        result = self.numbers(statuses, seed, sampler, launched)
        result['agents_cpu_s'] = round(agent_cpu, 1)
        result['agents_sys_s'] = round(agent_sys, 1)
        return result

    def start_seed(self, common):
        seed_job = self.write_job('seed', dict(common, dest=self.payload, seed=True, peer_name='seed'))
        self.spawn('seed', [PYTHON, seed_job + '/wrapper.py', seed_job + '/job.json'], 'agent-seed.log')
        deadline = time.time() + 30
        while self.status('seed').get('state') != 'seeding':
            if time.time() > deadline:
                raise RuntimeError('seed agent did not start: %s' % self.status('seed'))
            time.sleep(0.1)

    def stop(self):
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []

    def numbers(self, statuses, seed, sampler, launched):
        starts = [s['started_at'] for s in statuses.values() if s.get('started_at')]
        placed = [s['placed_at'] for s in statuses.values() if s.get('placed_at')]
        out = {'n': self.n, 'placed': len(placed),
               'seed_upload_x': round((seed.get('uploaded') or 0) / float(self.size), 3),
               'received_x': round(sum(s.get('downloaded') or 0 for s in statuses.values())
                                   / float(self.size * self.n), 3),
               'gave_up': sum(1 for s in statuses.values() if s.get('striping') == 'given up'),
               # hosts that never had a connection to the seeder while striping
               'no_seeder': sum(1 for s in statuses.values() if not s.get('seeder_seen_at')),
               'seed_peers': seed.get('peers')}
        if seed.get('released_at') and starts:
            out.update(held_peers=seed.get('held_peers'), released_after_last_start_s=round(
                seed['released_at'] - max(starts), 2))
        if starts and placed:
            t0 = min(starts)
            done = [t - t0 for t in placed]
            out.update(swarm_s=round(max(placed) - t0, 2), p50=round(bench.percentile(done, 0.5), 2),
                       p99=round(bench.percentile(done, 0.99), 2), spread_s=round(max(starts) - t0, 2),
                       launch_to_first_s=round(t0 - launched, 2),
                       cpu_cores=sampler.busy_cores(t0, max(placed)))
        return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hosts', default='5,10,20')
    parser.add_argument('--size-mb', type=float, default=20)
    parser.add_argument('--rate', default='50mbit')
    parser.add_argument('--reps', type=int, default=1)
    parser.add_argument('--no-stripes', action='store_true')
    parser.add_argument('--seed-last', action='store_true',
                        help="the playbook's order: agents first with listed peers, the seed last")
    parser.add_argument('--held', action='store_true',
                        help='start the seed first, held until every agent has connected (a seeder play)')
    parser.add_argument('--seed-connects', action='store_true',
                        help='with --held: the seed also connects to every agent itself')
    parser.add_argument('--piece-kib', type=int, default=0, help='0: what p2p_torrent picks')
    parser.add_argument('--interval', type=int, default=2, help='tracker announce interval')
    parser.add_argument('--version', default='hybrid', choices=['v1', 'v2', 'hybrid'], help='torrent version')
    parser.add_argument('--set', action='append', default=[], metavar='SETTING=VALUE')
    parser.add_argument('--seed-set', action='append', default=[], metavar='SETTING=VALUE',
                        help='a libtorrent setting of the seeding agent only')
    parser.add_argument('--const', action='append', default=[], metavar='NAME=VALUE')
    parser.add_argument('--timeout', type=int, default=180, help='seconds per swarm run')
    parser.add_argument('--keep-lab', action='store_true')
    parser.add_argument('--down', action='store_true', help='only tear the benchmark lab down')
    parser.add_argument('--tag', default='')
    parser.add_argument('--debug', action='store_true', help='per-connection totals in each status.json')
    parser.add_argument('--out', help='append one JSON line per run here')
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error('needs root (the lab)')
    if args.down:
        lab = Lab.load(bench.BENCH_DIR) or Lab(1, workdir=bench.BENCH_DIR, prefix=bench.PREFIX, subnet=bench.SUBNET)
        lab.down()
        return 0
    args.settings, args.seed_settings, args.constants = (parse_pairs(x) for x in (args.set, args.seed_set, args.const))
    ns = sorted(int(x) for x in args.hosts.split(','))
    size = int(args.size_mb * 1024 * 1024)
    limit = size * 8.0 / bench.parse_rate(args.rate)
    lab, fresh = get_lab(max(ns), args.rate)
    try:
        os.makedirs(WORK, exist_ok=True)
        payload = os.path.join(bench.BENCH_DIR, 'data', 'swarm-%d.bin' % size)
        if not os.path.exists(payload) or os.path.getsize(payload) != size:
            os.makedirs(os.path.dirname(payload), exist_ok=True)
            bench.make_file(payload, size)
        metainfo = load_metainfo()
        url = 'http://%s:%d/announce' % (lab.ip('seed'), PORT)
        data = metainfo.create_torrent(payload, [url], piece_size=args.piece_kib * 1024, version=args.version)
        torrent = os.path.join(WORK, 'swarm.torrent')
        with open(torrent, 'wb') as handle:
            handle.write(data)
        import libtorrent as lt
        ti = lt.torrent_info(data)
        hashes = ti.info_hashes()
        info = {'v1': str(hashes.v1) if hashes.has_v1() else str(hashes.v2)[:40],
                'v2': str(hashes.v2) if hashes.has_v2() else str(hashes.v1)}
        print('# %s S=%d MiB B=%s S/B=%.2f s pieces=%d x %d KiB stripes=%s set=%s const=%s load=%.2f' % (
            args.tag, size >> 20, args.rate, limit, ti.num_pieces(), ti.piece_length() >> 10,
            'off' if args.no_stripes else 'on', dict(args.settings, **{'seed.' + k: v for k, v in args.seed_settings.items()}),
            args.constants, os.getloadavg()[0]), flush=True)
        for n in ns:
            for rep in range(args.reps):
                result = SwarmRun(lab, n, payload, size, torrent, info, args).run()
                result.update(tag=args.tag, s_over_b=round(limit, 2), rep=rep, load=round(os.getloadavg()[0], 2),
                              stripes=not args.no_stripes, piece_kib=ti.piece_length() >> 10,
                              settings=args.settings, constants=args.constants)
                print('N=%-3d swarm %5s s (%4s S/B)  p50 %5s  p99 %5s  seed %5sx  received %5sx  cpu %4s  '
                      'spread %4s s  agents %5s cpu-s (%s sys)  gave up %d  no seeder %d  seed peers %s  placed %d/%d' % (
                          n, result.get('swarm_s'), round(result['swarm_s'] / limit, 2) if result.get('swarm_s') else '-',
                          result.get('p50'), result.get('p99'), result['seed_upload_x'], result['received_x'],
                          result.get('cpu_cores'), result.get('spread_s'), result['agents_cpu_s'], result['agents_sys_s'],
                          result['gave_up'], result['no_seeder'], result['seed_peers'],
                          result['placed'], n),
                      flush=True)
                if args.out:
                    with open(args.out, 'a') as handle:
                        handle.write(json.dumps(result) + '\n')
    finally:
        if not args.keep_lab:
            lab.down()
    return 0


if __name__ == '__main__':
    sys.exit(main())

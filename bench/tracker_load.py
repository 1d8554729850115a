"""Tracker capacity: the collection's tracker next to opentracker, same load, same run.

    sudo .venv/bin/python bench/tracker_load.py [--peers 500,5000] [--announces 20000]
        [--concurrency 64] [--procs 2] [--time-limit 60]

Everything stays on 127.0.0.1. Both trackers are started here, by hand, on
free loopback ports, and stopped at the end: ours as the script p2p_tracker
runs (plugins/module_utils/tracker.py) with the test info-hash registered,
Debian's opentracker (apt-get install opentracker; it is built
whitelist-only) with its own config file and a whitelist holding the test
info-hash. For each swarm size P the load generator first announces every
one of P peers once (event=started, so the tracker holds a swarm of P),
then sends a fixed number of announces from random peers of that swarm
(compact, numwant=50, a new TCP connection per announce as BitTorrent
clients do), from --procs processes with --concurrency connections in
flight in all, bounded by --time-limit seconds per phase. It reports
announces/s, latency p50/p99/max and errors, prints a table, writes
docs/tracker_load.json and the tracker section of docs/benchmark.md.
"""
import argparse
import asyncio
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACKER = os.path.join(ROOT, 'plugins', 'module_utils', 'tracker.py')
OPENTRACKER = '/usr/bin/opentracker'
DOCS = os.path.join(ROOT, 'docs')
BEGIN, END = '<!-- tracker:begin -->', '<!-- tracker:end -->'
HOST = '127.0.0.1'


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_port(port, deadline):
    while time.time() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, int(math.ceil(fraction * len(ordered))))) - 1]


def quote(raw):
    return ''.join('%%%02X' % b for b in raw)


def announce_path(info_hash, peer, event=None):
    """An announce like libtorrent's, for peer number `peer` (its own port and host name)."""
    peer_id = ('-LT2110-%012d' % peer).encode()
    query = ('info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d&corrupt=0&key=%08x'
             '&numwant=50&compact=1&no_peer_id=1&p2p_host=h%05d' % (
                 quote(info_hash), quote(peer_id), 10000 + peer % 50000, 1 << 20, peer, peer))
    if event:
        query += '&event=' + event
    return '/announce?' + query


# ---------------------------------------------------------------- the load

async def one_request(port, path, timeout):
    """GET path on a fresh connection; (seconds, ok)."""
    started = time.perf_counter()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        writer.write(('GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: bench\r\nConnection: close\r\n'
                      'Accept-Encoding: gzip\r\n\r\n' % (path, HOST, port)).encode())
        body = await asyncio.wait_for(reader.read(), timeout)
        head, _, payload = body.partition(b'\r\n\r\n')
        ok = head.startswith(b'HTTP/1.') and b' 200' in head.split(b'\r\n', 1)[0] \
            and payload.startswith(b'd') and b'failure reason' not in payload
        return time.perf_counter() - started, ok
    except (OSError, asyncio.TimeoutError):
        return time.perf_counter() - started, False
    finally:
        if writer is not None:
            writer.close()


async def drive(port, paths, concurrency, deadline, timeout):
    latencies, errors = [], 0
    queue = list(reversed(paths))

    async def worker():
        nonlocal errors
        while queue and time.time() < deadline:
            seconds, ok = await one_request(port, queue.pop(), timeout)
            latencies.append(seconds)
            if not ok:
                errors += 1
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def worker_process(args):
    port, paths, concurrency, deadline, timeout = args
    return asyncio.run(drive(port, paths, concurrency, deadline, timeout))


def run_load(pool, procs, port, paths, concurrency, time_limit, timeout=10.0):
    """Send paths from procs processes; returns the numbers of the phase."""
    shards = [paths[i::procs] for i in range(procs)]
    per_proc = max(1, concurrency // procs)
    started = time.time()
    deadline = started + time_limit
    results = pool.map(worker_process, [(port, shard, per_proc, deadline, timeout) for shard in shards])
    elapsed = time.time() - started
    latencies = [x for lat, _err in results for x in lat]
    errors = sum(err for _lat, err in results)
    done = len(latencies)
    return {'requests': done, 'planned': len(paths), 'errors': errors, 'seconds': round(elapsed, 2),
            'per_second': round(done / elapsed, 1) if elapsed else None,
            'ok_per_second': round((done - errors) / elapsed, 1) if elapsed else None,
            'p50_ms': round(1000 * percentile(latencies, 0.5), 2) if latencies else None,
            'p99_ms': round(1000 * percentile(latencies, 0.99), 2) if latencies else None,
            'max_ms': round(1000 * max(latencies), 2) if latencies else None,
            'timed_out': elapsed >= time_limit and done < len(paths)}


# ------------------------------------------------------------- the trackers

class Server(object):
    def __init__(self, name, argv, port, workdir):
        self.name, self.argv, self.port = name, argv, port
        self.log = open(os.path.join(workdir, '%s.log' % name), 'w')
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if not wait_port(self.port, time.time() + 15):
            self.stop()
            raise RuntimeError('%s did not listen on %s:%d; see %s' % (self.name, HOST, self.port, self.log.name))

    def cpu_seconds(self):
        try:
            with open('/proc/%d/stat' % self.proc.pid) as handle:
                fields = handle.read().rsplit(')', 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / float(os.sysconf('SC_CLK_TCK'))
        except (OSError, IndexError, ValueError):
            return None

    def rss_mb(self):
        try:
            with open('/proc/%d/status' % self.proc.pid) as handle:
                for line in handle:
                    if line.startswith('VmRSS:'):
                        return round(int(line.split()[1]) / 1024.0, 1)
        except OSError:
            return None

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def our_tracker(workdir, info_hash, interval):
    state = os.path.join(workdir, 'ours')
    os.makedirs(state)
    with open(os.path.join(state, 'torrents.json'), 'w') as handle:
        json.dump({info_hash.hex(): {'name': 'bench', 'size': 1 << 20}}, handle)
    port = free_port()
    return Server('p2p.swarm tracker', [sys.executable, TRACKER, '--bind', HOST, '--port', str(port),
                                       '--state-dir', state, '--interval', str(interval)], port, workdir)


def opentracker(workdir, info_hash):
    if not os.path.exists(OPENTRACKER):
        raise RuntimeError('opentracker is not installed: apt-get install opentracker')
    root = os.path.join(workdir, 'opentracker')
    os.makedirs(root)
    os.chmod(workdir, 0o755)
    os.chmod(root, 0o755)
    whitelist = os.path.join(root, 'whitelist.txt')
    with open(whitelist, 'w') as handle:
        handle.write(info_hash.hex() + '\n')
    os.chmod(whitelist, 0o644)
    port, udp = free_port(), free_port()
    config = os.path.join(root, 'opentracker.conf')
    # Started as root, opentracker chroots to tracker.rootdir before it reads
    # the whitelist, so the path is given as seen from inside.
    inside = '/whitelist.txt' if os.geteuid() == 0 else whitelist
    with open(config, 'w') as handle:
        handle.write('listen.tcp %s:%d\nlisten.udp %s:%d\naccess.whitelist %s\ntracker.rootdir %s\n'
                     'tracker.user nobody\n' % (HOST, port, HOST, udp, inside, root))
    return Server('opentracker', [OPENTRACKER, '-f', config], port, workdir)


# ------------------------------------------------------------------ report

def render(results):
    m = results['setup']
    lines = [BEGIN, '<!-- generated by bench/tracker_load.py; edit the text outside these markers -->', '',
             'Run of %s on %d cores (load average before: %s): %d announces per swarm size after one '
             '`started` announce from every peer, %d connections in flight from %d generator processes, '
             'a new TCP connection per announce, compact, numwant=50, 127.0.0.1 only. '
             'opentracker %s (Debian package, whitelist mode, the test info-hash whitelisted).' % (
                 m['date'], m['cpus'], m['load_before'], m['announces'], m['concurrency'], m['procs'],
                 m['opentracker_version']), '',
             '| tracker | swarm size | announces/s | p50 ms | p99 ms | max ms | errors | tracker CPU s per 1000 '
             '| RSS MB | hosts it serves at a %d s interval |' % m['interval'],
             '|---|---|---|---|---|---|---|---|---|---|']
    for row in results['rows']:
        load = row['load']
        cpu = row.get('cpu_per_1000')
        lines.append('| %s | %d | %s | %s | %s | %s | %d of %d%s | %s | %s | %s |' % (
            row['tracker'], row['peers'], load['ok_per_second'], load['p50_ms'], load['p99_ms'], load['max_ms'],
            load['errors'], load['requests'], ' (time limit hit)' if load['timed_out'] else '',
            cpu if cpu is not None else '-', row.get('rss_mb', '-'),
            int(load['ok_per_second'] * m['interval']) if load['ok_per_second'] else '-'))
    lines += ['', 'The load generator shares the 2 cores with the tracker under test, so a rate here is a '
              'floor for that tracker on a machine of its own, not its ceiling.', '', END]
    return '\n'.join(lines)


def write_report(results, md_path):
    section = render(results)
    try:
        with open(md_path) as handle:
            text = handle.read()
    except FileNotFoundError:
        text = '# Benchmark\n'
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip('\n') + '\n\n' + section + '\n'
    with open(md_path, 'w') as handle:
        handle.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--peers', default='500,5000', help='swarm sizes (peers announced first)')
    parser.add_argument('--announces', type=int, default=20000, help='measured announces per tracker and size')
    parser.add_argument('--concurrency', type=int, default=64)
    parser.add_argument('--procs', type=int, default=2, help='load generator processes')
    parser.add_argument('--time-limit', type=int, default=60, help='seconds, per phase')
    parser.add_argument('--interval', type=int, default=2, help='announce interval, for the hosts column')
    parser.add_argument('--only', choices=['ours', 'opentracker'])
    parser.add_argument('--json', default=os.path.join(DOCS, 'tracker_load.json'))
    parser.add_argument('--report', default=os.path.join(DOCS, 'benchmark.md'), help='"" for none')
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.peers.split(',')]
    version = subprocess.run(['dpkg-query', '-W', '-f', '${Version}', 'opentracker'],
                             capture_output=True, text=True).stdout.strip() or 'not installed'
    results = {'setup': {'date': time.strftime('%Y-%m-%d %H:%M %Z'), 'cpus': os.cpu_count(),
                         'load_before': ' / '.join('%.2f' % x for x in os.getloadavg()),
                         'announces': args.announces, 'concurrency': args.concurrency, 'procs': args.procs,
                         'interval': args.interval, 'opentracker_version': version}, 'rows': []}
    workdir = tempfile.mkdtemp(prefix='p2p-tracker-load-')
    pool = multiprocessing.Pool(args.procs)
    servers = []
    try:
        for peers in sizes:
            info_hash = os.urandom(20)
            makers = [('ours', lambda: our_tracker(os.path.join(workdir, 'p%d' % peers), info_hash, args.interval)),
                      ('opentracker', lambda: opentracker(os.path.join(workdir, 'p%d' % peers), info_hash))]
            os.makedirs(os.path.join(workdir, 'p%d' % peers))
            for key, make in makers:
                if args.only and key != args.only:
                    continue
                server = make()
                servers.append(server)
                server.start()
                fill = run_load(pool, args.procs, server.port,
                                [announce_path(info_hash, p, 'started') for p in range(peers)],
                                args.concurrency, args.time_limit)
                rng = random.Random(peers)
                paths = [announce_path(info_hash, rng.randrange(peers)) for _ in range(args.announces)]
                cpu0 = server.cpu_seconds()
                load = run_load(pool, args.procs, server.port, paths, args.concurrency, args.time_limit)
                cpu1 = server.cpu_seconds()
                row = {'tracker': server.name, 'peers': peers, 'fill': fill, 'load': load, 'rss_mb': server.rss_mb()}
                if cpu0 is not None and cpu1 is not None and load['requests']:
                    row['cpu_per_1000'] = round(1000 * (cpu1 - cpu0) / load['requests'], 2)
                results['rows'].append(row)
                print('%-18s swarm %5d: %7s announces/s  p50 %6s ms  p99 %7s ms  max %7s ms  errors %d/%d%s' % (
                    server.name, peers, load['ok_per_second'], load['p50_ms'], load['p99_ms'], load['max_ms'],
                    load['errors'], load['requests'], '  TIME LIMIT' if load['timed_out'] else ''), flush=True)
                server.stop()
    finally:
        for server in servers:
            server.stop()
        pool.close()
        pool.join()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump(results, handle, indent=1)
    if args.report:
        write_report(results, args.report)
    return 0


if __name__ == '__main__':
    sys.exit(main())

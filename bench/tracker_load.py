"""Tracker capacity: a swarm's life played against the collection's tracker
and opentracker side by side, in one run, on 127.0.0.1 only.

    apt-get install opentracker      # Debian's package; built whitelist-only
    .venv/bin/python bench/tracker_load.py [--peers 500,5000,20000] [--before REV]

Both trackers (and, with --before REV, the tracker script as it was at git
revision REV) are started here on free loopback ports with the test
info-hash registered (opentracker: its own config file and a whitelist file
holding the hash; started by hand, stopped at the end). For each swarm size
N the generator plays the swarm's life against each tracker in turn:

  1. start wave: every one of the N peers announces `started` (as fast as
     the tracker answers, 64 requests in flight);
  2. saturation: --announces re-announces from random peers, closed loop
     with 64 in flight: half keep-alive clients (HTTP/1.1, one connection
     for many requests), half a new TCP connection per announce (as
     libtorrent does); 1 request in 50 is malformed (bad escapes, short
     hash, TLS bytes, a 20 KB request line) and 20 slow clients hold
     connections open dribbling a byte a second -> announces/s;
  3. steady: the N peers re-announce on the interval the tracker told them,
     for --steady seconds;
  4. fixed rate: 2000 announces/s offered (open loop: latency counts from
     the moment a request was due, so a slow tracker cannot hide its queue)
     for --rate-seconds, same client mix -> p50/p99;
  5. completion burst: every peer announces `completed` (left=0), a new
     connection each, spread evenly over 2 s; refused/reset/timed-out
     connections are counted, and status.json (ours) is polled every
     0.25 s to find when each completion becomes visible there;
  6. the tracker's RSS (and peak RSS) after its swarm's life.

Every phase is bounded by count and by --time-limit seconds. The generator
runs in --procs processes (asyncio Protocols, no streams); its CPU time is
reported next to the tracker's. --profile times the stages of one announce
in-process (parse, swarm update and peer selection, bencode) for the tracker
now and at --before REV. Results: a table on stdout, docs/tracker_load.json,
docs/tracker_load.svg and the tracker section of docs/benchmark.md.
"""
import argparse
import asyncio
import importlib.util
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACKER = os.path.join(ROOT, 'plugins', 'module_utils', 'tracker.py')
OPENTRACKER = '/usr/bin/opentracker'
DOCS = os.path.join(ROOT, 'docs')
BEGIN, END = '<!-- tracker:begin -->', '<!-- tracker:end -->'
HOST = '127.0.0.1'
CONCURRENCY = 64
SLOW_CLIENTS = 20
MALFORMED_EVERY = 50
BURST_SECONDS = 2.0
POLL_EVERY = 0.25
FIXED_RATE = 2000
TIMEOUT = 10.0


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


def percentile(ordered, fraction):
    if not ordered:
        return None
    return ordered[min(len(ordered), max(1, int(math.ceil(fraction * len(ordered))))) - 1]


def quote(raw):
    return ''.join('%%%02X' % b for b in raw)


def announce_request(hash_q, peer, event='', left=1 << 20, keep=False):
    """An announce like libtorrent's from peer number `peer` (own port and host name)."""
    query = ('info_hash=%s&peer_id=-LT2110-%012d&port=%d&uploaded=0&downloaded=0&left=%d&corrupt=0&key=%08x'
             '&numwant=50&compact=1&no_peer_id=1&p2p_host=h%05d' % (hash_q, peer, 10000 + peer % 50000, left,
                                                                   peer, peer))
    if event:
        query += '&event=' + event
    return ('GET /announce?%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: libtorrent/2.0.11.0\r\n%s'
            'Accept-Encoding: gzip\r\n\r\n' % (query, HOST, '' if keep else 'Connection: close\r\n')).encode()


MALFORMED = [
    b'GET /announce?info_hash=%zz&peer_id=%4&port=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    b'GET /announce?info_hash=%01%02&peer_id=-LT2110-000000000001&port=1&uploaded=0&downloaded=0&left=1'
    b' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n',
    b'GET /announce?' + b'a' * 20000 + b' HTTP/1.1\r\nHost: x\r\n\r\n',
]


# ------------------------------------------------------------ the generator

_LENGTH_RE = re.compile(rb'(?i)\r\ncontent-length:\s*([0-9]+)')


class _Reply(asyncio.Protocol):
    """One client connection; answers are delimited by Content-Length (or EOF)."""

    def __init__(self):
        self.transport = None
        self.fut = None
        self.buf = b''
        self.closed = False
        self.keep = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        self._check(False)

    def eof_received(self):
        self._check(True)

    def connection_lost(self, exc):
        self.closed = True
        if self.fut is not None and not self.fut.done():
            if self.buf and self._check(True):
                return
            self.fut.set_result('reset' if isinstance(exc, ConnectionResetError) else 'closed')

    def _check(self, eof):
        fut = self.fut
        if fut is None or fut.done():
            return False
        end = self.buf.find(b'\r\n\r\n')
        if end < 0:
            return False
        head = self.buf[:end]
        match = _LENGTH_RE.search(head)
        if match:
            stop = end + 4 + int(match.group(1))
            if len(self.buf) < stop:
                return False
        elif not eof:
            return False
        else:
            stop = len(self.buf)
        body = self.buf[end + 4:stop]
        self.buf = self.buf[stop:]
        low = head.lower()
        self.keep = match is not None and (
            (head.startswith(b'HTTP/1.1') and b'connection: close' not in low) or b'connection: keep-alive' in low)
        ok = head[9:12] == b'200' and body[:1] == b'd' and b'failure reason' not in body
        fut.set_result('ok' if ok else 'bad')
        return True


class Gen:
    """The client side of one generator process."""

    def __init__(self, port):
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.idle = []            # kept-alive connections free for a request
        self.reconnects = 0
        self.retries = 0

    async def _connect(self):
        try:
            _tr, proto = await self.loop.create_connection(_Reply, HOST, self.port)
        except ConnectionRefusedError:
            return None, 'refused'
        except ConnectionResetError:
            return None, 'reset'
        except OSError as exc:
            return None, 'error: %s' % (exc.strerror or exc)
        return proto, None

    def _timeout(self, fut):
        if not fut.done():
            fut.set_result('timeout')

    async def _exchange(self, proto, data):
        fut = proto.fut = self.loop.create_future()
        timer = self.loop.call_later(TIMEOUT, self._timeout, fut)
        proto.transport.write(data)
        result = await fut
        timer.cancel()
        return result

    async def once(self, data):
        """data on a new connection, closed after the answer."""
        proto, error = await self._connect()
        if proto is None:
            return error
        try:
            return await self._exchange(proto, data)
        finally:
            proto.transport.close()

    async def kept(self, data):
        """data on a kept-alive connection (a new one when none is free)."""
        proto = None
        while self.idle:
            proto = self.idle.pop()
            if not proto.closed:
                break
            proto = None
        reused = proto is not None
        if proto is None:
            proto, error = await self._connect()
            if proto is None:
                return error
            self.reconnects += 1
        result = await self._exchange(proto, data)
        if reused and result in ('closed', 'reset') and not proto.buf:
            # The server closed a connection it had not marked "close"
            # (opentracker answers HTTP/1.1 and hangs up): as any HTTP
            # client does, send the request again on a new connection.
            proto.transport.close()
            self.retries += 1
            proto, error = await self._connect()
            if proto is None:
                return error
            self.reconnects += 1
            result = await self._exchange(proto, data)
        if result == 'ok' and proto.keep and not proto.closed:
            self.idle.append(proto)
        else:
            proto.transport.close()
        return result

    def close(self):
        for proto in self.idle:
            proto.transport.close()
        self.idle = []


async def _slow_client(port, stop, counts):
    """Sends half a request line, then a byte a second; counts being cut off."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        counts['slow_refused'] += 1
        return
    try:
        writer.write(b'GET /announce?')
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            if reader.at_eof():
                counts['slow_cut_off'] += 1
                return
            writer.write(b'a')
            try:
                data = await asyncio.wait_for(reader.read(1), 0.01)
                if not data:
                    counts['slow_cut_off'] += 1
                    return
            except asyncio.TimeoutError:
                pass
    except OSError:
        counts['slow_cut_off'] += 1
    finally:
        writer.close()


def _request_for(job, i, rng, keep):
    peers = job['peers']
    if job['kind'] == 'start':
        return announce_request(job['hash_q'], peers[i], 'started', keep=keep)
    if job['kind'] == 'burst':
        return announce_request(job['hash_q'], peers[i], 'completed', left=0)
    return announce_request(job['hash_q'], rng.choice(peers), keep=keep)


async def _phase(job):
    gen = Gen(job['port'])
    rng = random.Random(job['seed'])
    count, deadline = job['count'], time.monotonic() + job['time_limit']
    latencies, results, sent = [], {}, []
    extra = {'malformed': 0, 'malformed_hung': 0, 'slow_cut_off': 0, 'slow_refused': 0}
    stop = asyncio.Event()
    slow = [asyncio.ensure_future(_slow_client(job['port'], stop, extra)) for _ in range(job.get('slow', 0))]
    mix = job.get('mix', 'both')

    async def one(i, due):
        keep = mix == 'keep' or (mix == 'both' and i % 2 == 0)
        if job.get('malformed') and i % MALFORMED_EVERY == MALFORMED_EVERY - 1:
            extra['malformed'] += 1
            result = await gen.once(MALFORMED[i // MALFORMED_EVERY % len(MALFORMED)])
            if result == 'timeout':
                extra['malformed_hung'] += 1
            return
        data = _request_for(job, i, rng, keep)
        wall = time.time()
        result = await (gen.kept(data) if keep else gen.once(data))
        latencies.append(time.perf_counter() - due)
        results[result] = results.get(result, 0) + 1
        if job['kind'] == 'burst':
            sent.append((job['peers'][i], wall, result))

    cpu0 = time.process_time()
    started = time.perf_counter()
    if job.get('rate'):
        # Open loop: request i is due at started + i / rate, whatever came before.
        rate, tasks = job['rate'], set()
        for i in range(count):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            if time.monotonic() > deadline:
                break
            task = asyncio.ensure_future(one(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(list(tasks), timeout=max(1.0, deadline - time.monotonic() + TIMEOUT))
    else:
        counter = iter(range(count))

        async def worker():
            for i in counter:
                if time.monotonic() > deadline:
                    return
                await one(i, time.perf_counter())
        await asyncio.gather(*(worker() for _ in range(job['concurrency'])))
    elapsed = time.perf_counter() - started
    stop.set()
    if slow:
        await asyncio.wait(slow, timeout=3)
    gen.close()
    return {'latencies': latencies, 'results': results, 'elapsed': elapsed, 'sent': sent,
            'cpu': time.process_time() - cpu0, 'reconnects': gen.reconnects, 'retries': gen.retries,
            'extra': extra}


def _run_job(job):
    return asyncio.run(_phase(job))


def run_phase(pool, procs, kind, port, hash_q, peers, count, time_limit, concurrency=CONCURRENCY, rate=None,
              mix='both', malformed=False, slow=0, on_wait=None):
    """One phase from `procs` processes; the merged numbers."""
    jobs = []
    for k in range(procs):
        shard = peers[k::procs] if kind in ('start', 'burst') else peers
        jobs.append({'kind': kind, 'port': port, 'hash_q': hash_q, 'peers': shard, 'seed': k * 7919 + count,
                     'count': len(shard) if kind in ('start', 'burst') else count // procs,
                     'time_limit': time_limit, 'concurrency': max(1, concurrency // procs),
                     'rate': rate / procs if rate else None, 'mix': mix, 'malformed': malformed,
                     'slow': slow // procs})
    wall0 = time.time()
    pending = pool.map_async(_run_job, jobs)
    if on_wait is not None:
        on_wait(pending)
    parts = pending.get(time_limit + TIMEOUT + 30)
    wall = time.time() - wall0
    latencies = sorted(x for p in parts for x in p['latencies'])
    results = {}
    for p in parts:
        for key, value in p['results'].items():
            results[key] = results.get(key, 0) + value
    extra = {key: sum(p['extra'][key] for p in parts) for key in parts[0]['extra']}
    elapsed = max(p['elapsed'] for p in parts)
    ok = results.get('ok', 0)
    planned = sum(j['count'] for j in jobs)
    out = {'planned': planned, 'answered': len(latencies), 'ok': ok,
           'failed': {k: v for k, v in results.items() if k != 'ok'}, 'seconds': round(elapsed, 3),
           'ok_per_second': round(ok / elapsed, 1) if elapsed else None,
           'p50_ms': _ms(percentile(latencies, 0.5)), 'p99_ms': _ms(percentile(latencies, 0.99)),
           'max_ms': _ms(latencies[-1] if latencies else None),
           'generator_cpu_s': round(sum(p['cpu'] for p in parts), 2),
           'generator_cores': round(sum(p['cpu'] for p in parts) / wall, 2) if wall else None,
           'kept_alive_connections_opened': sum(p['reconnects'] for p in parts),
           'kept_alive_retries': sum(p['retries'] for p in parts),
           'timed_out': len(latencies) + extra['malformed'] < planned}
    if rate:
        out['offered_per_second'] = rate
    if malformed or slow:
        out.update(extra)
    if kind == 'burst':
        out['sent'] = [s for p in parts for s in p['sent']]
    return out


def _ms(seconds):
    return round(1000 * seconds, 2) if seconds is not None else None


# ------------------------------------------------------------- the trackers

class Server(object):
    def __init__(self, key, name, argv, port, workdir, state_dir=None):
        self.key, self.name, self.argv, self.port = key, name, argv, port
        self.state_dir = state_dir
        self.log = open(os.path.join(workdir, '%s.log' % key), 'w')
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if not wait_port(self.port, time.time() + 15):
            self.stop()
            raise RuntimeError('%s did not listen on %s:%d; see %s' % (self.name, HOST, self.port, self.log.name))

    def _stat(self):
        with open('/proc/%d/stat' % self.proc.pid) as handle:
            return handle.read().rsplit(')', 1)[1].split()

    def cpu_seconds(self):
        try:
            fields = self._stat()
            return (int(fields[11]) + int(fields[12])) / float(os.sysconf('SC_CLK_TCK'))
        except (OSError, IndexError, ValueError):
            return None

    def memory_mb(self):
        found = {}
        try:
            with open('/proc/%d/status' % self.proc.pid) as handle:
                for line in handle:
                    if line.startswith(('VmRSS:', 'VmHWM:')):
                        found[line[:5]] = round(int(line.split()[1]) / 1024.0, 1)
        except OSError:
            pass
        return found.get('VmRSS'), found.get('VmHWM')

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def our_tracker(key, name, script, workdir, info_hash, interval, cprofile=None):
    state = os.path.join(workdir, key)
    os.makedirs(state)
    with open(os.path.join(state, 'torrents.json'), 'w') as handle:
        json.dump({info_hash.hex(): {'name': 'bench', 'size': 1 << 20}}, handle)
    port = free_port()
    wrap = ['-m', 'cProfile', '-o', cprofile] if cprofile else []
    return Server(key, name, [sys.executable, '-I'] + wrap + [script, '--bind', HOST, '--port', str(port),
                                                              '--state-dir', state, '--interval', str(interval)],
                  port, workdir, state)


def cprofile_summary(path, top=30):
    """The tracker's own profile (--cprofile): functions by their own time."""
    import pstats
    stats = pstats.Stats(path)
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
    out = {'total_s': round(total, 3), 'functions': []}
    for (filename, line, func), (_cc, calls, tottime, _ct, _callers) in rows:
        out['functions'].append({'function': '%s:%d(%s)' % (os.path.basename(filename), line, func),
                                 'calls': calls, 'own_s': round(tottime, 3),
                                 'share': round(tottime / total, 3) if total else None})
    return out


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
    return Server('opentracker', 'opentracker', [OPENTRACKER, '-f', config], port, workdir)


def http_get(port, path, timeout=10.0):
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(('GET %s HTTP/1.0\r\nHost: x\r\n\r\n' % path).encode())
        chunks = []
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    return b''.join(chunks).partition(b'\r\n\r\n')[2]


def tracker_interval(port, hash_q):
    body = http_get(port, announce_request(hash_q, 0).split(b' ')[1].decode())
    match = re.search(rb'8:intervali([0-9]+)e', body)
    return int(match.group(1)) if match else None


class StatusWatch(object):
    """Polls status.json every POLL_EVERY s; when each host is first seen complete."""

    def __init__(self, port, info_hex):
        self.port, self.info_hex = port, info_hex
        self.seen, self.polls, self.poll_ms = {}, 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            t0 = time.time()
            try:
                status = json.loads(http_get(self.port, '/status.json'))
            except (OSError, ValueError):
                status = None
            t1 = time.time()
            if status is not None:
                self.polls += 1
                self.poll_ms.append(1000 * (t1 - t0))
                for peer in status['torrents'][self.info_hex]['peers']:
                    if peer['left'] == 0 and peer['state'] == 'complete' and peer['host'] not in self.seen:
                        self.seen[peer['host']] = t1
            self.stop.wait(max(0.0, POLL_EVERY - (time.time() - t0)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def burst(pool, procs, server, hash_q, info_hex, peers, time_limit, watch_status):
    """Every peer completes within BURST_SECONDS; when is each visible in status.json?"""
    def wait(pending):
        if watch_status:
            end = time.time() + time_limit + 5
            while not pending.ready() and time.time() < end:
                time.sleep(0.05)
            # The last completions: give status.json up to 5 s more to show them.
            end = time.time() + 5
            while len(watch.seen) < len(peers) and time.time() < end:
                time.sleep(0.1)
    if watch_status:
        with StatusWatch(server.port, info_hex) as watch:
            out = run_phase(pool, procs, 'burst', server.port, hash_q, peers, len(peers), time_limit,
                            rate=len(peers) / BURST_SECONDS, mix='close', on_wait=wait)
    else:
        out = run_phase(pool, procs, 'burst', server.port, hash_q, peers, len(peers), time_limit,
                        rate=len(peers) / BURST_SECONDS, mix='close')
    sent = out.pop('sent')
    if watch_status:
        delays = sorted(watch.seen['h%05d' % peer] - wall for peer, wall, result in sent
                        if result == 'ok' and 'h%05d' % peer in watch.seen)
        ok = sum(1 for _p, _w, result in sent if result == 'ok')
        out['visible'] = len(delays)
        out['not_visible'] = ok - len(delays)
        out['visible_p50_s'] = round(percentile(delays, 0.5), 3) if delays else None
        out['visible_p99_s'] = round(percentile(delays, 0.99), 3) if delays else None
        out['visible_max_s'] = round(delays[-1], 3) if delays else None
        out['visible_within_3s'] = sum(1 for d in delays if d <= 3.0)
        out['status_polls'] = watch.polls
        out['status_poll_ms_max'] = round(max(watch.poll_ms), 1) if watch.poll_ms else None
    else:
        body = http_get(server.port, '/scrape?info_hash=' + hash_q)
        match = re.search(rb'8:completei([0-9]+)e', body)
        out['scrape_complete_after'] = int(match.group(1)) if match else None
    out['refused'] = out['failed'].get('refused', 0)
    out['reset'] = out['failed'].get('reset', 0) + out['failed'].get('closed', 0)
    return out


def life(pool, args, server, info_hash, peers_n):
    """One swarm's life against one tracker; the row of numbers."""
    hash_q = quote(info_hash)
    peers = list(range(peers_n))
    rng = random.Random(peers_n)
    rng.shuffle(peers)
    row = {'tracker': server.name, 'key': server.key, 'peers': peers_n,
           'loadavg_before': [round(x, 2) for x in os.getloadavg()]}
    cpu = [server.cpu_seconds()]

    def tracker_cpu(phase):
        cpu.append(server.cpu_seconds())
        if cpu[-1] is not None and cpu[-2] is not None:
            phase['tracker_cpu_s'] = round(cpu[-1] - cpu[-2], 2)
            if phase.get('answered'):
                phase['tracker_cpu_ms_per_request'] = round(1000 * phase['tracker_cpu_s'] / phase['answered'], 3)
        return phase

    def show(name, phase):
        print('  %-24s %-10s %6d ok of %6d  %8s/s  p50 %7s ms  p99 %8s ms  failed %s  gen CPU %s cores' % (
            server.name, name, phase['ok'], phase['planned'], phase['ok_per_second'], phase['p50_ms'],
            phase['p99_ms'], phase['failed'] or '-', phase['generator_cores']), flush=True)

    row['start'] = tracker_cpu(run_phase(pool, args.procs, 'start', server.port, hash_q, peers, peers_n,
                                         args.time_limit))
    show('start', row['start'])
    def repeated(name, pick, **kwargs):
        """The phase --repeat times (other work on the machine disturbs single runs): the pick of them."""
        runs = []
        for _ in range(args.repeat):
            runs.append(tracker_cpu(run_phase(pool, args.procs, 'announce', server.port, hash_q, peers, **kwargs)))
            show(name, runs[-1])
        chosen = dict(pick(runs))
        chosen['repeats'] = [{k: r[k] for k in ('ok_per_second', 'p50_ms', 'p99_ms', 'failed')} for r in runs]
        return chosen

    def best(runs):
        return max(runs, key=lambda r: r['ok_per_second'] or 0)

    def median_p99(runs):
        return sorted(runs, key=lambda r: r['p99_ms'] or 1e9)[len(runs) // 2]

    # Saturation: the best of the repeats; the fixed rate: the repeat with the median p99.
    row['saturation'] = repeated('saturation', best,
                                 count=args.announces, time_limit=args.time_limit, malformed=True,
                                 slow=SLOW_CLIENTS)
    if peers_n == args.mix_peers:
        for mix in ('keep', 'close'):
            row['saturation_' + mix] = repeated('sat. ' + mix, best, count=args.announces,
                                                time_limit=args.time_limit, mix=mix)
    interval = tracker_interval(server.port, hash_q) or args.interval
    row['interval_told'] = interval
    steady_rate = max(1.0, peers_n / float(interval))
    row['steady'] = tracker_cpu(run_phase(pool, args.procs, 'announce', server.port, hash_q, peers,
                                          int(steady_rate * args.steady), args.time_limit, rate=steady_rate))
    show('steady', row['steady'])
    row['fixed_rate'] = repeated('2000/s', median_p99,
                                 count=FIXED_RATE * args.rate_seconds, time_limit=args.time_limit, rate=FIXED_RATE,
                                 malformed=True, slow=SLOW_CLIENTS)
    if peers_n == args.mix_peers:
        # Harsher than the spread burst: every peer's connection opened at
        # once (within ~50 ms), re-announces, a new connection each.
        phase = tracker_cpu(run_phase(pool, args.procs, 'announce', server.port, hash_q, peers, peers_n,
                                      args.time_limit, rate=peers_n / 0.05, mix='close'))
        phase['refused'] = phase['failed'].get('refused', 0)
        phase['reset'] = phase['failed'].get('reset', 0) + phase['failed'].get('closed', 0)
        row['at_once'] = phase
        show('at once', phase)
    row['burst'] = tracker_cpu(burst(pool, args.procs, server, hash_q, info_hash.hex(), peers, args.time_limit,
                                     server.key != 'opentracker'))
    show('burst', row['burst'])
    if 'visible' in row['burst']:
        b = row['burst']
        print('  %-24s burst: refused %d, reset/closed %d, visible %d (p50 %s s, p99 %s s, max %s s), '
              'within 3 s %d' % (server.name, b['refused'], b['reset'], b['visible'], b['visible_p50_s'],
                                 b['visible_p99_s'], b['visible_max_s'], b['visible_within_3s']), flush=True)
    row['rss_mb'], row['peak_rss_mb'] = server.memory_mb()
    row['loadavg_after'] = [round(x, 2) for x in os.getloadavg()]
    print('  %-24s RSS %s MB (peak %s MB)' % (server.name, row['rss_mb'], row['peak_rss_mb']), flush=True)
    return row


# ------------------------------------------------------------------ profile

def load_tracker_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def profile_stages(module, workdir, swarm_size=5000, rounds=20000):
    """Per-announce cost of each stage in-process (microseconds)."""
    info_hash = bytes(range(20))
    state = tempfile.mkdtemp(dir=workdir)
    with open(os.path.join(state, 'torrents.json'), 'w') as handle:
        json.dump({info_hash.hex(): {'name': 'p', 'size': 1 << 20}}, handle)
    swarm = module.Swarm(state, 2)
    hash_q = quote(info_hash)

    def query(peer, event=''):
        return announce_request(hash_q, peer, event).split(b' ')[1].decode().partition('?')[2]
    for peer in range(swarm_size):
        swarm.announce(module.parse_announce(query(peer, 'started'), '127.0.0.1'))
    queries = [query(random.randrange(swarm_size)) for _ in range(rounds)]
    reqs = [module.parse_announce(q, '127.0.0.1') for q in queries]
    torrent = swarm.by_key[info_hash]
    peer = next(iter(torrent.peers.values()))
    peers = swarm._peers_for(torrent, peer, 50, time.time())   # pylint: disable=protected-access
    answer = {'interval': 20, 'min interval': 20, 'complete': 1, 'incomplete': 4999, 'downloaded': 0}
    peer_lists = getattr(module, 'tracker_swarm', module)._peer_lists   # pylint: disable=protected-access
    status_json = getattr(swarm, 'status_json', None) or (lambda: json.dumps(swarm.status(), sort_keys=True))
    status_json()

    def parse():
        for q in queries:
            module.parse_announce(q, '127.0.0.1')

    def announce():
        for req in reqs:
            swarm.announce(req)

    def select():
        for _ in range(rounds):
            swarm._peers_for(torrent, peer, 50, time.time())   # pylint: disable=protected-access

    def encode():
        for _ in range(rounds):
            full = dict(answer)
            full.update(peer_lists(peers, True, True))
            module.bencode(full)

    def status():
        for _ in range(20):
            status_json()
    # Each stage three times, the fastest kept: other work on the machine only ever adds.
    out = {}
    for key, func, per in (('parse_us', parse, rounds / 1e6), ('swarm_announce_us', announce, rounds / 1e6),
                           ('peer_selection_us', select, rounds / 1e6), ('bencode_us', encode, rounds / 1e6),
                           ('status_json_ms_at_%d' % swarm_size, status, 20 / 1e3)):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            func()
            times.append((time.perf_counter() - t0) / per)
        out[key] = min(times)
    return {k: round(v, 2) for k, v in out.items()}


# ------------------------------------------------------------------ report

def svg_plot(results):
    """Bars: announces/s at saturation and p99 at 2000/s, per tracker and swarm size."""
    rows = results['rows']
    sizes = sorted(set(r['peers'] for r in rows))
    keys = []
    for r in rows:
        if r['key'] not in keys:
            keys.append(r['key'])
    names = {r['key']: r['tracker'] for r in rows}
    colors = {'ours': '#2a9d8f', 'opentracker': '#e76f51', 'before': '#8d99ae'}
    panels = [('announces/s at saturation (higher is better)', lambda r: r['saturation']['ok_per_second'] or 0),
              ('p99 ms at 2000 announces/s offered (lower is better)', lambda r: r['fixed_rate']['p99_ms'] or 0)]
    width, height, pad = 860, 300, 50
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="12">' % (width, 2 * height + 40),
           '<rect width="100%" height="100%" fill="white"/>']
    for p, (title, value) in enumerate(panels):
        top = p * height + 20
        vals = [value(r) for r in rows]
        top_value = max(vals + [1]) * 1.15
        plot_h = height - 2 * pad
        out.append('<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>' % (pad, top + 5, title))
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>' % (
            pad, top + pad + plot_h, width - 20, top + pad + plot_h))
        group_w = (width - pad - 40) / float(len(sizes))
        bar_w = group_w * 0.8 / len(keys)
        for g, size in enumerate(sizes):
            x0 = pad + g * group_w + group_w * 0.1
            out.append('<text x="%.1f" y="%d" text-anchor="middle">%d peers</text>' % (
                x0 + group_w * 0.4, top + pad + plot_h + 18, size))
            for k, key in enumerate(keys):
                match = [r for r in rows if r['peers'] == size and r['key'] == key]
                if not match:
                    continue
                v = value(match[0])
                h = plot_h * v / top_value
                x = x0 + k * bar_w
                y = top + pad + plot_h - h
                out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>' % (
                    x, y, bar_w - 4, h, colors.get(key, '#999')))
                out.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%s</text>' % (
                    x + (bar_w - 4) / 2, y - 4, ('%.0f' % v) if v >= 100 else ('%.1f' % v)))
        for k, key in enumerate(keys):
            lx = width - 300
            ly = top + 20 + 16 * k
            out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>' % (lx, ly - 9, colors.get(key)))
            out.append('<text x="%d" y="%d">%s</text>' % (lx + 14, ly, names[key]))
    out.append('</svg>')
    return '\n'.join(out) + '\n'


def render(results):
    m = results['setup']
    rows = results['rows']
    lines = [BEGIN, '<!-- generated by bench/tracker_load.py; edit the text outside these markers -->', '',
             'Run of %s on %d cores, Python %s, opentracker %s; load average at the start %s, at the end %s. '
             'Generator: %d processes, asyncio; %d requests in flight in the closed-loop phases; half the '
             'announces on kept-alive HTTP/1.1 connections, half on a new connection each; 1 in %d '
             'malformed and %d slow clients during saturation and the fixed rate. Saturation: the best of %s '
             'runs; 2000/s: the run with the median p99 of %s. 127.0.0.1 only.' % (
                 m['date'], m['cpus'], m['python'], m['opentracker_version'], m['load_before'],
                 m.get('load_after', '?'), m['procs'], CONCURRENCY, MALFORMED_EVERY, SLOW_CLIENTS,
                 m.get('repeat', 1), m.get('repeat', 1)), '',
             'Load average (1 min) before each tracker\'s part: %s.' % (', '.join(
                 '%s %d: %s' % (r['key'], r['peers'], r['loadavg_before'][0]) for r in rows if 'loadavg_before' in r)
                 or 'not recorded'), '',
             '| tracker | peers | start wave/s | saturation announces/s | tracker CPU ms/announce | p50 / p99 ms '
             'at 2000/s | steady (interval told) p99 ms | burst: refused / reset | burst: visible in status.json '
             '(p99 / max s) | RSS MB (peak) | generator cores (saturation) |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        b = r['burst']
        if 'visible' in b:
            vis = '%d of %d within 3 s (%s / %s)' % (b['visible_within_3s'], b['planned'], b['visible_p99_s'],
                                                     b['visible_max_s'])
        else:
            vis = 'no status.json (scrape: %s complete)' % b.get('scrape_complete_after')
        fails = r['saturation']['failed']
        lines.append('| %s | %d | %s | %s%s | %s | %s / %s | %s (%d s) | %d / %d of %d | %s | %s (%s) | %s |' % (
            r['tracker'], r['peers'], r['start']['ok_per_second'], r['saturation']['ok_per_second'],
            ' (failed: %s)' % ', '.join('%s %d' % kv for kv in sorted(fails.items())) if fails else '',
            r['saturation'].get('tracker_cpu_ms_per_request', '-'), r['fixed_rate']['p50_ms'],
            r['fixed_rate']['p99_ms'], r['steady']['p99_ms'], r['interval_told'], b['refused'], b['reset'],
            b['planned'], vis, r['rss_mb'], r['peak_rss_mb'], r['saturation']['generator_cores']))
    mixed = [r for r in rows if 'saturation_keep' in r]
    if mixed:
        lines += ['', 'Saturation by client kind (%d peers, no junk): | tracker | kept-alive announces/s | '
                  'connection per announce announces/s |' % mixed[0]['peers'], '|---|---|---|']
        lines[-2] = 'Saturation by client kind, %d peers, no junk mixed in:' % mixed[0]['peers']
        lines.insert(len(lines) - 1, '')
        lines.insert(len(lines) - 1, '| tracker | kept-alive announces/s (p99 ms) | new connection per announce '
                                     'announces/s (p99 ms) |')
        for r in mixed:
            lines.append('| %s | %s (%s) | %s (%s) |' % (
                r['tracker'], r['saturation_keep']['ok_per_second'], r['saturation_keep']['p99_ms'],
                r['saturation_close']['ok_per_second'], r['saturation_close']['p99_ms']))
    at_once = [r for r in rows if 'at_once' in r]
    if at_once:
        lines += ['', '%d connections opened at once (within ~50 ms; re-announces, a new connection each):'
                  % at_once[0]['peers'], '', '| tracker | answered | refused | reset/closed | other failures '
                  '| p50 ms | p99 ms | max ms |', '|---|---|---|---|---|---|---|---|']
        for r in at_once:
            a = r['at_once']
            lines.append('| %s | %d of %d | %d | %d | %d | %s | %s | %s |' % (
                r['tracker'], a['ok'], a['planned'], a['refused'], a['reset'],
                sum(a['failed'].values()) - a['refused'] - a['reset'], a['p50_ms'], a['p99_ms'], a['max_ms']))
    if results.get('profile'):
        lines += ['', 'Where an announce\'s time goes, in-process, 5000-peer swarm (microseconds per announce; '
                  'status.json in ms):', '', '| tracker | parse | swarm update + peer selection + answer '
                  '| of which peer selection | bencode (generic) | status.json at 5000 peers ms |',
                  '|---|---|---|---|---|---|']
        for key, prof in results['profile'].items():
            lines.append('| %s | %s | %s | %s | %s | %s |' % (
                key, prof['parse_us'], prof['swarm_announce_us'], prof['peer_selection_us'], prof['bencode_us'],
                prof['status_json_ms_at_5000']))
    lines += targets(rows)
    lines += ['', '![tracker capacity](tracker_load.svg)', '', 'Raw numbers: docs/tracker_load.json.', '', END]
    return '\n'.join(lines)


def targets(rows):
    """The issue's bars, checked against this run."""
    def find(key, peers):
        return next((r for r in rows if r['key'] == key and r['peers'] == peers), None)
    out = ['', 'Targets (issue 12):', '', '| target | measured | holds |', '|---|---|---|']
    for peers in sorted(set(r['peers'] for r in rows)):
        ours, other = find('ours', peers), find('opentracker', peers)
        if ours is None:
            continue
        rate = ours['saturation']['ok_per_second'] or 0
        if other is not None and other['saturation']['ok_per_second']:
            ratio = rate / other['saturation']['ok_per_second']
            out.append('| %d peers: saturation >= 0.4x opentracker (aim 0.8x) and >= 5000/s | %.0f/s = %.2fx '
                       '(opentracker %.0f/s) | %s |' % (peers, rate, ratio, other['saturation']['ok_per_second'],
                                                         'yes' if ratio >= 0.4 and rate >= 5000 else 'NO'))
        p99 = ours['fixed_rate']['p99_ms']
        out.append('| %d peers: p99 <= 20 ms at 2000 announces/s | %s ms | %s |' % (
            peers, p99, 'yes' if p99 is not None and p99 <= 20 else 'NO'))
        if peers == 5000:
            b = ours['burst']
            out.append('| 5000-peer completion burst: no refused or reset connection | %d refused, %d reset/closed, '
                       '%s other failures | %s |' % (b['refused'], b['reset'], sum(b['failed'].values()) - b['refused']
                                                     - b['reset'], 'yes' if not b['failed'] else 'NO'))
            out.append('| every completion in status.json within 3 s of its announce | %s of %d (max %s s) | %s |' % (
                b.get('visible_within_3s'), b['planned'], b.get('visible_max_s'),
                'yes' if b.get('visible_within_3s') == b['planned'] else 'NO'))
        if peers == 20000:
            out.append('| RSS at 20000 peers <= 200 MB | %s MB (peak %s MB) | %s |' % (
                ours['rss_mb'], ours['peak_rss_mb'], 'yes' if (ours['peak_rss_mb'] or 1e9) <= 200 else 'NO'))
    return out


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
    parser.add_argument('--peers', default='500,5000,20000', help='swarm sizes')
    parser.add_argument('--announces', type=int, default=20000, help='announces in the saturation phase')
    parser.add_argument('--repeat', type=int, default=3,
                        help='runs of the saturation and fixed-rate phases (best rate, median p99 reported)')
    parser.add_argument('--mix-peers', type=int, default=5000,
                        help='swarm size at which saturation is also measured per client kind')
    parser.add_argument('--rate-seconds', type=int, default=4, help='seconds at 2000 announces/s')
    parser.add_argument('--steady', type=int, default=4, help='seconds of re-announces on the interval')
    parser.add_argument('--procs', type=int, default=2, help='load generator processes')
    parser.add_argument('--time-limit', type=int, default=30, help='seconds, per phase')
    parser.add_argument('--interval', type=int, default=2, help='--interval of our tracker')
    parser.add_argument('--before', metavar='REV', help='also run the tracker script of this git revision')
    parser.add_argument('--only', action='append', choices=['ours', 'opentracker', 'before'])
    parser.add_argument('--profile', action='store_true', help='time the stages of an announce in-process')
    parser.add_argument('--cprofile', metavar='DIR',
                        help='run our tracker (and --before) under cProfile, profiles written to DIR')
    parser.add_argument('--json', default=os.path.join(DOCS, 'tracker_load.json'))
    parser.add_argument('--svg', default=os.path.join(DOCS, 'tracker_load.svg'))
    parser.add_argument('--report', default=os.path.join(DOCS, 'benchmark.md'), help='"" for none')
    parser.add_argument('--render', metavar='FILE.json', help='only redraw the report and plot from raw numbers')
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as handle:
            results = json.load(handle)
        if args.svg:
            with open(args.svg, 'w') as handle:
                handle.write(svg_plot(results))
        if args.report:
            write_report(results, args.report)
        return 0
    sizes = [int(x) for x in args.peers.split(',')]
    version = subprocess.run(['dpkg-query', '-W', '-f', '${Version}', 'opentracker'],
                             capture_output=True, text=True, check=False).stdout.strip() or 'not installed'
    load = os.getloadavg()
    results = {'setup': {'date': time.strftime('%Y-%m-%d %H:%M %Z'), 'cpus': os.cpu_count(),
                         'python': '%d.%d.%d' % sys.version_info[:3], 'loadavg_start': load,
                         'load_before': ' / '.join('%.2f' % x for x in load), 'procs': args.procs,
                         'announces': args.announces, 'interval': args.interval, 'opentracker_version': version,
                         'repeat': args.repeat,
                         'commit': subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'],
                                                  capture_output=True, text=True, check=False).stdout.strip()},
               'rows': []}
    print('load average at the start: %s' % results['setup']['load_before'], flush=True)
    workdir = tempfile.mkdtemp(prefix='p2p-tracker-load-')
    servers = []
    try:
        before_script = None
        if args.before:
            before_script = os.path.join(workdir, 'tracker_before.py')
            with open(before_script, 'wb') as handle:
                handle.write(subprocess.run(['git', '-C', ROOT, 'show', '%s:plugins/module_utils/tracker.py'
                                             % args.before], capture_output=True, check=True).stdout)
            results['setup']['before'] = args.before
        if args.profile:
            results['profile'] = {'now': profile_stages(load_tracker_module(TRACKER, 'tracker_now'), workdir)}
            if before_script:
                results['profile']['before (%s)' % args.before] = profile_stages(
                    load_tracker_module(before_script, 'tracker_before'), workdir)
            print(json.dumps(results['profile'], indent=1), flush=True)
        pool = multiprocessing.Pool(args.procs)
        try:
            for peers_n in sizes:
                info_hash = os.urandom(20)
                base = os.path.join(workdir, 'p%d' % peers_n)
                os.makedirs(base)
                prof = {k: os.path.join(args.cprofile, '%s-%d.pstats' % (k, peers_n)) if args.cprofile else None
                        for k in ('ours', 'before')}
                makers = [('ours', lambda: our_tracker('ours', 'p2p.swarm tracker', TRACKER, base, info_hash,
                                                       args.interval, prof['ours'])),
                          ('opentracker', lambda: opentracker(base, info_hash))]
                if before_script:
                    makers.append(('before', lambda: our_tracker('before', 'p2p.swarm tracker at %s' % args.before,
                                                                 before_script, base, info_hash, args.interval,
                                                                 prof['before'])))
                for key, make in makers:
                    if args.only and key not in args.only:
                        continue
                    server = make()
                    servers.append(server)
                    server.start()
                    print('%s, %d peers:' % (server.name, peers_n), flush=True)
                    results['rows'].append(life(pool, args, server, info_hash, peers_n))
                    server.stop()
                    if prof.get(key):
                        results['rows'][-1]['cprofile'] = cprofile_summary(prof[key])
        finally:
            pool.close()
            pool.join()
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results['setup']['loadavg_end'] = os.getloadavg()
    results['setup']['load_after'] = ' / '.join('%.2f' % x for x in results['setup']['loadavg_end'])
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump(results, handle, indent=1)
    if args.svg and results['rows']:
        with open(args.svg, 'w') as handle:
            handle.write(svg_plot(results))
    if args.report and results['rows']:
        write_report(results, args.report)
    return 0


if __name__ == '__main__':
    sys.exit(main())

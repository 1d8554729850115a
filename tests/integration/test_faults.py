"""Faults and strangers on a lab of real sshd hosts: processes really killed,
a tracker really restarted, a disk really full, a host really unreachable,
the bridge really captured. See docs/reliability.md and docs/security.md.

To stay well under ten minutes the independent per-host faults share one
run (the "chaos" run): while one play distributes to the peers,
- 25 % of the downloading peers get their agent SIGKILLed mid-transfer,
- one peer's dest directory is a 1 MiB tmpfs (disk full),
- an inventory host answers no SSH (unreachable from the start),
- one lab host left out of the play (a stranger) tries to join the swarm,
- tcpdump watches every packet on the lab bridge.
Each case is asserted by its own test below; the seeder kill, the tracker
restart and the interrupted plays get runs of their own.
"""
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from helpers import (HOST_PYTHON, WHEEL_DIR, BackgroundPlaybook, agent_python, agent_statuses, describe,
                     host_script, host_sha256, loaded_libtorrent, peers, run_playbook, stop_swarm, swarm_ended, swarm_processes,
                     wait_for, write_payload)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SIZE = 12 * 1024 * 1024
FORKS = 10
RATE = 1024 * 1024            # bytes/s per agent: a transfer takes ~12 s, so "mid-transfer" is a state
DIR = '/srv/faults'
DEST = DIR + '/payload.bin'
TMPFS_SIZE = '1m'             # far less than SIZE
GHOST = 'ghost'
CLOSED_PORT = 9               # nothing listens there on a lab host: connection refused
OWNER, GROUP, MODE = 'nobody', 'nogroup', '0640'


@pytest.fixture(scope='module')
def payload(lab):
    return write_payload(lab, 'faults.bin', SIZE)


def base_vars(path, dest=DEST, **extra):
    # A bounded wait: a play that hangs fails here rather than after 30 minutes.
    values = {'file': path, 'dest': dest, 'p2p_wheel_dir': WHEEL_DIR, 'p2p_timeout': 300}
    values.update(extra)
    return values


def write_inventory(lab, path, host_vars=None, first_peers=(), peer_vars=None):
    """A copy of the lab inventory: extra host variables, extra hosts put first
    in [peers], extra [peers:vars]."""
    out = []
    with open(lab.inventory) as handle:
        for line in handle.read().splitlines():
            name = line.split(' ', 1)[0]
            if host_vars and name in host_vars and 'ansible_host=' in line:
                line += ''.join(' %s=%s' % item for item in sorted(host_vars[name].items()))
            out.append(line)
            if line.strip() == '[peers]':
                out.extend(first_peers)
    if peer_vars:
        out += ['', '[peers:vars]'] + ['%s=%s' % item for item in sorted(peer_vars.items())]
    with open(str(path), 'w') as handle:
        handle.write('\n'.join(out) + '\n')
    return str(path)


def failure_text(stdout, host):
    """The lines Ansible printed about host failing or being unreachable."""
    return '\n'.join(line for line in stdout.splitlines()
                     if line.startswith(('fatal: [%s]' % host, 'fatal: [%s ' % host)))


def one_status(lab, host, dest, since=0):
    """The status of host's agent for dest, if that agent started after since."""
    found = [s for s in agent_statuses(lab, host, dest) if s.get('started_at', 0) >= since]
    return found[0] if found else {}


def wait_under_way(play, lab, dest, since, ahead, behind=None):
    """Wait until some peer holds `ahead` of dest and (with `behind`) some
    peer still less than `behind`; fail at once, with its output, if the
    play ended meanwhile."""
    def under_way():
        assert play.proc.poll() is None, describe(play.finish())
        progress = [one_status(lab, h, dest, since).get('progress', 0) for h in peers(lab)]
        return max(progress) >= ahead and (behind is None or min(progress) < behind)
    wait_for(under_way, 480, 'the swarm to be under way')


def kill_pid(pid, marker):
    """SIGKILL pid after checking it is what we think; wait until it is gone."""
    with open('/proc/%d/cmdline' % pid, 'rb') as handle:
        assert marker in handle.read(), 'pid %d is not a %s' % (pid, marker)
    os.kill(pid, signal.SIGKILL)

    def gone():
        try:
            with open('/proc/%d/stat' % pid) as handle:
                return handle.read().rsplit(')', 1)[1].split()[0] == 'Z'
        except OSError:
            return True
    wait_for(gone, 10, 'pid %d to die' % pid, every=0.05)


def tracker_status(lab, port=6969, timeout=5):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open('http://%s:%d/status.json' % (lab.ip('seed'), port), timeout=timeout) as resp:
        return json.loads(resp.read().decode('utf-8'))


class Capture:
    """tcpdump on the lab bridge, to a pcap file; stop() returns its summary."""

    def __init__(self, lab, path, bpf, snaplen):
        self.path = str(path)
        self.err = self.path + '.err'
        with open(self.err, 'w') as err:
            self.proc = subprocess.Popen(['tcpdump', '-i', lab.bridge, '-nn', '-U', '-s', str(snaplen),
                                          '-w', self.path, bpf], stdout=subprocess.DEVNULL, stderr=err)
        wait_for(lambda: self.proc.poll() is not None or 'listening on' in open(self.err).read(), 20,
                 'tcpdump to listen')
        assert self.proc.poll() is None, open(self.err).read()

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=20)
        with open(self.err) as err:
            stats = err.read()
        with open(self.path, 'rb') as handle:
            data = handle.read()
        return data, stats

    def text(self, limit=40):
        out = subprocess.run(['tcpdump', '-nn', '-r', self.path], capture_output=True, text=True).stdout
        return '\n'.join(out.splitlines()[:limit])


def pcap_frames(data):
    """The captured frames of a pcap file (little-endian, Ethernet)."""
    frames, offset = [], 24
    while offset + 16 <= len(data):
        incl = int.from_bytes(data[offset + 8:offset + 12], 'little')
        frames.append(data[offset + 16:offset + 16 + incl])
        offset += 16 + incl
    return frames


def ipv4_addresses(frame):
    """(source, destination) of an IPv4 frame, else (None, None)."""
    if len(frame) < 34 or frame[12:14] != b'\x08\x00':
        return None, None
    return socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])


HANDSHAKE = b'\x13BitTorrent protocol'


STRANGER = r'''
import json, sys, time
import libtorrent as lt
torrent, me, targets, seconds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
ses = lt.session({'listen_interfaces': me + ':0', 'enable_dht': False, 'enable_lsd': False,
                  'enable_upnp': False, 'enable_natpmp': False, 'enable_outgoing_utp': False,
                  'enable_incoming_utp': False,
                  'alert_mask': lt.alert.category_t.peer_notification | lt.alert.category_t.connect_notification})
params = lt.add_torrent_params()
params.ti = lt.torrent_info(torrent)
params.save_path = '/tmp/stranger'
params.flags &= ~lt.torrent_flags.auto_managed
params.flags &= ~lt.torrent_flags.paused
handle = ses.add_torrent(params)
attempts = most_peers = disconnects = 0
deadline, next_try = time.time() + seconds, 0
while time.time() < deadline:
    if time.time() >= next_try:
        for ip, port in targets:
            handle.connect_peer((ip, port))
            attempts += 1
        next_try = time.time() + 2
    for alert in ses.pop_alerts():
        if isinstance(alert, lt.peer_disconnected_alert):
            disconnects += 1
    most_peers = max(most_peers, handle.status().num_peers)
    time.sleep(0.1)
print(json.dumps({'attempts': attempts, 'most_peers': most_peers, 'disconnects': disconnects,
                  'downloaded': handle.status().total_payload_download}))
'''

ANNOUNCE = r'''
import sys, urllib.parse, urllib.request
url, info_hash = sys.argv[1], bytes.fromhex(sys.argv[2])
query = urllib.parse.urlencode({'info_hash': info_hash, 'peer_id': b'-XX0001-' + b'0' * 12, 'port': 6881,
                                'uploaded': 0, 'downloaded': 0, 'left': 1, 'compact': 1})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
print(opener.open(url + '?' + query, timeout=10).read().decode('latin-1'))
'''


def stranger_tries(lab, env, stranger, python, info_hash, seconds=8):
    """From a lab host outside the play: connect to every agent the tracker
    lists (with python, an interpreter of the stranger's that imports
    libtorrent), and announce to the tracker; returns (peer result, announce
    answer). The scripts go to the stranger as text: nothing of the
    controller's checkout or venv runs there."""
    # The torrent the play pushed to the peers, copied into the stranger's private /tmp.
    shutil.copy(lab.host_dir(peers(lab)[0]) + '/var/lib/p2p-swarm/torrents/%s.torrent' % info_hash,
                lab.host_dir(stranger) + '/tmp/stranger.torrent')
    torrent = '/tmp/stranger.torrent'
    entry = tracker_status(lab)['torrents'][info_hash]
    targets = [[p['ip'], p['port']] for p in entry['peers'] if p['state'] in ('complete', 'downloading')]
    assert targets, entry
    script = host_script(lab, stranger, 'stranger.py', STRANGER)
    proc = lab.exec(stranger, [python, script, torrent, lab.ip(stranger), json.dumps(targets), str(seconds)],
                    timeout=60)
    assert proc.returncode == 0, proc.stderr
    tried = json.loads(proc.stdout.strip().splitlines()[-1])
    tried['targets'] = targets
    script = host_script(lab, stranger, 'announce.py', ANNOUNCE)
    answer = lab.exec(stranger, [HOST_PYTHON, script, 'http://%s:6969/announce' % lab.ip('seed'), info_hash],
                      timeout=30)
    return tried, answer.stdout + answer.stderr


# ----------------------------------------------------------- the chaos run

@pytest.fixture(scope='module')
def chaos(lab, env, payload, tmp_path_factory):
    """One play with several independent faults; returns what was observed.
    Whatever fails on the way, the play, its agents, the captures and the
    tmpfs are gone when it returns or raises."""
    work = tmp_path_factory.mktemp('chaos')
    everyone = peers(lab)
    stranger, full = everyone[-1], everyone[-2]
    downloading = everyone[:-2]
    victims = downloading[1::4][:max(1, len(downloading) // 4)]
    seen = {'victims': victims, 'full': full, 'stranger': stranger, 'downloading': downloading, 'killed_at': {}}
    for host in everyone:      # a clean directory, whatever ran before
        assert lab.exec(host, ['sh', '-c', 'rm -rf %s && mkdir -p %s' % (DIR, DIR)]).returncode == 0
    # The stranger stays out of the play; it gets the libtorrent the
    # collection installs on a host, as any peer of the play does.
    seen['stranger_python'], seen['stranger_libtorrent'] = agent_python(lab, env, stranger, work)
    inventory = write_inventory(lab, work / 'inventory.ini', first_peers=[
        '%s ansible_host=%s ansible_port=%d' % (GHOST, lab.ip(everyone[0]), CLOSED_PORT)])
    subnet = lab.subnet + '.0/24'

    def unmount_full():
        seen['full_listing'] = lab.exec(full, ['ls', '-A', DIR]).stdout.split()
        lab.exec(full, ['umount', DIR])

    def stop_capture(name, capture):
        seen[name], seen[name + '_stats'] = capture.stop()
        seen[name + '_text'] = capture.text()

    def stop_play(play):
        play.stop()
        seen['left_running'] = swarm_ended(lab)     # what the play itself left (checked by a test)
        stop_swarm(lab, env)

    with contextlib.ExitStack() as undo:     # undone last to first, also when a step fails
        assert lab.exec(full, ['mount', '-t', 'tmpfs', '-o', 'size=' + TMPFS_SIZE, 'tmpfs', DIR]).returncode == 0
        undo.callback(unmount_full)
        # Anything but TCP between lab addresses (ARP aside) is a leak or a
        # discovery protocol: DHT, LSD, UPnP/SSDP, NAT-PMP, IPv6, multicast.
        leaks = Capture(lab, work / 'leaks.pcap', 'not arp and not (ip and tcp and src net %s and dst net %s '
                        'and not ip multicast and not ip broadcast)' % (subnet, subnet), 256)
        undo.callback(stop_capture, 'leaks', leaks)
        # Small pushed TCP segments: handshakes and extension handshakes (PEX would show there).
        talk = Capture(lab, work / 'talk.pcap', 'tcp and tcp[tcpflags] & tcp-push != 0 and less 1500', 1500)
        undo.callback(stop_capture, 'talk', talk)
        since = time.time()
        play = BackgroundPlaybook(lab, env, FORKS, base_vars(
            payload[0], p2p_targets='peers:!%s' % stranger, p2p_download_rate_limit=RATE,
            p2p_owner=OWNER, p2p_group=GROUP, p2p_mode=MODE), work, inventory=inventory)
        undo.callback(stop_play, play)
        # Kill each victim's agent as soon as it is well into its transfer.
        pending = list(victims)

        def kill_ready():
            for host in list(pending):
                status = one_status(lab, host, DEST, since)
                # progress: the verified share of the file, what a rerun can keep
                if status.get('state') == 'downloading' and status.get('progress', 0) >= 0.2:
                    # Mid-download: the partial file is hidden and owner-only.
                    part = lab.exec(host, ['stat', '-c', '%a', DIR + '/.payload.bin.p2p-part'])
                    seen.setdefault('partial', (host, part.stdout.strip() or part.stderr.strip()))
                    kill_pid(status['pid'], b'agent.py')
                    seen['killed_at'][host] = int(status['progress'] * SIZE)
                    pending.remove(host)
            assert play.proc.poll() is None, describe(play.finish())
            return not pending
        wait_for(kill_ready, 480, 'the victims to be mid-transfer', every=0.1)
        running = [one_status(lab, h, DEST, since) for h in downloading if h not in victims][0]
        info_hash = running['job_dir'].split('/')[-2]
        seen['agent_libtorrent'] = loaded_libtorrent(running['pid'])
        seen['stranger_tried'], seen['stranger_announce'] = stranger_tries(lab, env, stranger,
                                                                           seen['stranger_python'], info_hash)
        seen['result'] = play.finish(timeout=600)
    return seen


def test_killed_agents_fail_alone_with_the_reason(lab, chaos, payload):
    """(a) 25 % of the downloading peers lose their agent (SIGKILL) mid-transfer."""
    proc = chaos['result']
    assert len(chaos['killed_at']) == len(chaos['victims']), chaos['killed_at']
    failed = set(h for h, counts in proc.recap.items() if counts['failed'])
    assert failed == set(chaos['victims']) | {chaos['full']}, describe(proc)
    for host in chaos['victims']:
        assert proc.recap[host]['failed'] == 1, describe(proc)
        text = failure_text(proc.stdout, host)
        assert 'died at' in text and 'killed or crashed' in text, text or describe(proc)
        assert lab.exec(host, ['test', '-e', DEST]).returncode != 0, host
    for host in chaos['downloading']:
        if host not in chaos['victims']:
            assert proc.recap[host]['failed'] == 0 and proc.recap[host]['unreachable'] == 0, describe(proc)
            assert host_sha256(lab, host, DEST) == payload[1], host
    # The wait named them as lost, and did not sit out its timeout.
    assert 'stopped before completing' in proc.stdout, describe(proc)
    for host in chaos['victims']:
        assert '%s (' % host in proc.stdout.rsplit('stopped: ', 1)[-1].split('\n')[0], describe(proc)
    assert chaos['left_running'] == [], chaos['left_running']


def test_disk_full_host_fails_with_no_space_and_keeps_nothing(lab, chaos):
    """(d) dest directory on a 1 MiB tmpfs."""
    proc, full = chaos['result'], chaos['full']
    assert proc.recap[full]['failed'] == 1, describe(proc)
    assert 'no space' in failure_text(proc.stdout, full), describe(proc)
    assert chaos['full_listing'] == [], chaos['full_listing']


def test_unreachable_host_is_reported_and_the_rest_finish(lab, chaos, payload):
    """(e) an inventory host whose SSH port refuses, first in the play."""
    proc = chaos['result']
    assert proc.recap[GHOST]['unreachable'] == 1, describe(proc)
    assert 'UNREACHABLE' in failure_text(proc.stdout, GHOST), describe(proc)
    finished = [h for h in chaos['downloading'] if h not in chaos['victims']]
    assert finished and all(host_sha256(lab, h, DEST) == payload[1] for h in finished)


def test_files_land_with_owner_group_mode_and_partials_are_private(lab, chaos):
    """(h) requested owner/group/mode on dest; the hidden partial file is owner-only."""
    for host in chaos['downloading']:
        if host not in chaos['victims']:
            assert lab.exec(host, ['stat', '-c', '%U %G %a', DEST]).stdout.split() == [OWNER, GROUP, MODE[1:]]
    assert 'partial' in chaos, 'no host was caught mid-download'
    host, mode = chaos['partial']
    assert mode == '600', (host, mode)


def test_stranger_gets_nothing_from_agents_or_tracker(lab, chaos):
    """(h) a lab host outside the play: agents drop its connections (ip filter),
    the tracker refuses its announce (allow list)."""
    tried = chaos['stranger_tried']
    # The stranger speaks with the agents' own libtorrent (the one the
    # collection set up on a lab host), not one of the controller's.
    assert chaos['stranger_libtorrent']['file'] == chaos['agent_libtorrent'], \
        (chaos['stranger_python'], chaos['stranger_libtorrent'], chaos['agent_libtorrent'])
    assert tried['attempts'] > 0 and tried['disconnects'] > 0, tried
    assert tried['downloaded'] == 0, tried
    # On the wire: the stranger sent handshakes, no agent ever answered one.
    stranger = lab.ip(chaos['stranger'])
    sent = answered = 0
    for frame in pcap_frames(chaos['talk']):
        if HANDSHAKE in frame:
            src, dst = ipv4_addresses(frame)
            sent += src == stranger
            answered += dst == stranger
    assert sent > 0 and answered == 0, (sent, answered)
    assert 'failure reason' in chaos['stranger_announce'] and 'not allowed' in chaos['stranger_announce'], \
        chaos['stranger_announce']


def test_no_packet_leaves_the_lab_and_no_discovery_protocol_runs(chaos, lab):
    """(h) during the whole run: only TCP between lab addresses on the bridge
    (no DHT, LSD 239.192.152.143, SSDP 1900, NAT-PMP 5351, IPv6, nothing to
    the outside), and no PEX in any extension handshake."""
    leaks = chaos['leaks']
    assert len(leaks) >= 24, chaos['leaks_stats']
    assert len(pcap_frames(leaks)) == 0, chaos['leaks_text']
    assert re.search(r'^0 packets dropped by kernel', chaos['leaks_stats'], re.M), chaos['leaks_stats']
    talk = chaos['talk']
    assert talk.count(HANDSHAKE) >= len(chaos['downloading']), 'no handshake captured'
    assert b'1:md' in talk, 'no extension handshake captured'
    assert b'ut_pex' not in talk


def test_rerun_completes_the_killed_hosts_from_their_partial_data(lab, env, payload, chaos):
    """(a) the rerun resumes: a victim downloads only what it lacked."""
    since = time.time()
    proc = run_playbook(lab, env, FORKS, base_vars(payload[0], p2p_owner=OWNER, p2p_group=GROUP, p2p_mode=MODE))
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert proc.recap[host]['failed'] == 0, describe(proc)
        assert host_sha256(lab, host, DEST) == payload[1], host
    with open(os.path.join(os.path.dirname(chaos['result'].args[2]), 'rerun.out'), 'w') as out:
        out.write(proc.stdout)       # for a post-mortem
    for host, had in chaos['killed_at'].items():
        status = one_status(lab, host, DEST, since)
        assert status.get('placed'), status
        # The new agent found the verified pieces of the killed one on disk
        # ('downloaded' would also count the swarm's duplicate blocks).
        # (pieces still in libtorrent's write queue at the kill are lost)
        assert status.get('resumed', 0) >= had / 4, (host, had, status.get('resumed'))
        assert proc.recap[host]['changed'] > 0
    for host in chaos['downloading']:
        if host not in chaos['victims']:
            # Complete already: no agent started there. (The recap counts the
            # run_once tracker and seed steps as changes on every host.)
            assert one_status(lab, host, DEST, since) == {}, host
    assert swarm_ended(lab) == []


def test_rerun_with_only_another_mode_applies_it_without_a_swarm(lab, env, payload, chaos):
    """Every host holds the content, only the requested mode differs: it is
    applied, and no tracker, seed or wait is started for it."""
    proc = run_playbook(lab, env, FORKS, base_vars(payload[0], p2p_owner=OWNER, p2p_group=GROUP, p2p_mode='0600'))
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert proc.recap[host]['changed'] > 0 and proc.recap[host]['failed'] == 0, describe(proc)
        assert lab.exec(host, ['stat', '-c', '%a', DEST]).stdout.strip() == '600', host
    assert 'swarm faults.bin:' not in proc.stdout, describe(proc)     # no wait, no progress
    assert swarm_ended(lab) == []


# ------------------------------------------------------ seeder and tracker

def test_seeder_killed_after_a_full_copy_every_host_still_finishes(lab, env, payload, tmp_path):
    """(b) one unthrottled peer completes, then the seeding agent is SIGKILLed."""
    dest = DIR + '/seedkill.bin'
    fast = peers(lab)[0]
    since = time.time()
    inventory = write_inventory(lab, tmp_path / 'inventory.ini', host_vars={fast: {'p2p_download_rate_limit': 0}},
                                peer_vars={'p2p_download_rate_limit': RATE // 2})
    # (if the test fails, the nothing_left_running fixture stops the play and its agents)
    play = BackgroundPlaybook(lab, env, FORKS, base_vars(payload[0], dest=dest), tmp_path, inventory=inventory)
    wait_for(lambda: one_status(lab, fast, dest, since).get('placed') or play.proc.poll() is not None, 480,
             'a first complete copy')
    seeder = [s for s in agent_statuses(lab, 'seed', payload[0])
              if s.get('state') == 'seeding' and os.path.exists('/proc/%d' % s['pid'])]
    assert len(seeder) == 1, seeder
    kill_pid(seeder[0]['pid'], b'agent.py')
    behind = [h for h in peers(lab)[1:] if one_status(lab, h, dest, since).get('progress', 0) < 0.99]
    proc = play.finish(timeout=600)
    assert behind, 'every peer was nearly done when the seeder died: nothing tested'
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert host_sha256(lab, host, dest) == payload[1], host
    assert swarm_ended(lab) == []


def test_tracker_restart_mid_swarm_every_host_finishes(lab, env, payload, tmp_path):
    """(c) the tracker is killed and started again while the peers download."""
    dest = DIR + '/trackerrestart.bin'
    # (if the test fails, the nothing_left_running fixture stops the play, its
    # agents and the tracker started here)
    play = BackgroundPlaybook(lab, env, FORKS, base_vars(payload[0], dest=dest, p2p_download_rate_limit=RATE),
                              tmp_path)
    pidfile = lab.host_dir('seed') + '/var/lib/p2p-swarm/tracker/tracker.pid'
    since = time.time()

    wait_under_way(play, lab, dest, since, ahead=0.3, behind=0.7)
    with open(pidfile) as handle:
        pid = int(handle.read())
    # The tracker's own command line: the seed's interpreter and the script
    # the collection installed there (nothing of the checkout).
    with open('/proc/%d/cmdline' % pid, 'rb') as handle:
        argv = [a.decode() for a in handle.read().split(b'\0')[:-1]]
    kill_pid(pid, b'tracker.py')
    with open(os.path.dirname(pidfile) + '/tracker.log', 'ab') as log:
        tracker = subprocess.Popen(lab.exec_argv('seed', argv), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd='/')
    with open(pidfile, 'w') as handle:
        handle.write('%d\n' % tracker.pid)   # nsenter execs the tracker itself: same pid

    def answers():
        try:
            return tracker_status(lab, timeout=2).get('pid') == tracker.pid
        except OSError:
            return False
    wait_for(answers, 30, 'the new tracker to answer')
    proc = play.finish(timeout=600)
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert host_sha256(lab, host, dest) == payload[1], host
    assert swarm_ended(lab) == []


def test_tracker_killed_mid_swarm_the_wait_names_it_within_a_minute(lab, env, payload, tmp_path):
    """The tracker dies and stays dead: the wait gives up on it within a
    minute, naming it, and the hosts (which finish from their listed peers)
    are asked and reported as done, long before p2p_timeout."""
    dest = DIR + '/trackerkilled.bin'
    play = BackgroundPlaybook(lab, env, FORKS, base_vars(payload[0], dest=dest, p2p_download_rate_limit=RATE),
                              tmp_path)
    pidfile = lab.host_dir('seed') + '/var/lib/p2p-swarm/tracker/tracker.pid'
    since = time.time()

    wait_under_way(play, lab, dest, since, ahead=0.2)
    with open(pidfile) as handle:
        kill_pid(int(handle.read()), b'tracker.py')
    killed = time.time()
    proc = play.finish(timeout=600)
    ended = time.time() - killed
    assert proc.returncode == 0, describe(proc)
    assert 'unreachable' in proc.stdout and 'giving up' in proc.stdout, describe(proc)
    # 60 s for the wait to give up, then one short round to the hosts.
    assert ended < 120, (ended, describe(proc))
    for host in peers(lab):
        assert host_sha256(lab, host, dest) == payload[1], host
    assert swarm_ended(lab) == []


# --------------------------------------------------- interrupted playbooks

def interrupt_mid_swarm(lab, env, payload, dest, sig, workdir):
    """Start a distribute run, send sig to its process group (a terminal's
    Ctrl-C is SIGINT to the group) once agents download; return the run."""
    for host in peers(lab):
        lab.exec(host, ['mkdir', '-p', os.path.dirname(dest)])
    since = time.time()
    play = BackgroundPlaybook(lab, env, FORKS, base_vars(payload[0], dest=dest, p2p_download_rate_limit=RATE),
                              workdir)
    try:
        # Data flowing: the tracker and the seed, which join after the agents, run too.
        wait_for(lambda: play.proc.poll() is not None or any(
            one_status(lab, h, dest, since).get('progress', 0) > 0 for h in peers(lab)), 480,
            'agents downloading')
        assert play.proc.poll() is None, describe(play.finish())
        if sig == signal.SIGKILL:
            # As `kill -9` of every ansible-playbook process: the fork
            # workers would otherwise outlive their parent (docs/reliability.md).
            workers = play.kill_all()
            play.proc.wait(timeout=60)
            assert wait_for(lambda: not any(os.path.exists('/proc/%d' % pid) for pid in workers), 30,
                            'the killed playbook\'s workers to be gone')
        else:
            play.signal_group(sig)
            # Ansible ends its running tasks' workers first; on 2 loaded cores that took over 60 s once.
            play.proc.wait(timeout=180)
    finally:
        if play.proc.poll() is None:
            play.kill_all()
            play.proc.wait(timeout=30)
    return play


def no_half_file(lab, dest, digest):
    """dest is either absent or complete and verified on every peer."""
    for host in peers(lab):
        if lab.exec(host, ['test', '-e', dest]).returncode == 0:
            assert host_sha256(lab, host, dest) == digest, host


def test_ctrl_c_then_the_cleanup_playbook_leaves_nothing_running(lab, env, payload, tmp_path):
    """(f) SIGINT to ansible-playbook mid-swarm: agents and tracker outlive the
    play (they are detached); p2p.swarm.cleanup ends every one of them."""
    dest = DIR + '/interrupted.bin'
    interrupt_mid_swarm(lab, env, payload, dest, signal.SIGINT, tmp_path)
    left = swarm_processes(lab)
    assert any('/tracker.py ' in p for p in left) and any('/agent.py ' in p for p in left), left
    # p2p_seeder_host as the lab inventory has it (a play's host pattern does not
    # see inventory variables): without it the play also stops the agents in
    # the controller's own /var/lib/p2p-swarm, which other runs may own.
    proc = run_playbook(lab, env, FORKS, {'p2p_seeder_host': 'seed'}, playbook='p2p.swarm.cleanup', timeout=300)
    assert proc.returncode == 0, describe(proc)
    assert swarm_ended(lab) == [], swarm_processes(lab)
    no_half_file(lab, dest, payload[1])


def test_killed_playbook_then_a_rerun_succeeds_and_cleans_up(lab, env, payload, tmp_path):
    """(f) SIGKILL to ansible-playbook mid-swarm, then the same command again:
    it adopts the running agents, finishes, and stops everything."""
    dest = DIR + '/interrupted.bin'    # partly fetched by the test above: resumed
    interrupt_mid_swarm(lab, env, payload, dest, signal.SIGKILL, tmp_path)
    assert swarm_processes(lab), 'nothing was running when ansible-playbook was killed'
    no_half_file(lab, dest, payload[1])
    proc = run_playbook(lab, env, FORKS, base_vars(payload[0], dest=dest))
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert host_sha256(lab, host, dest) == payload[1], host
    assert swarm_ended(lab) == []

# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The swarm agent: one detached libtorrent session per torrent on a host.

p2p_fetch writes this file to the host's state directory and runs it as a
plain script (`python agent.py JOB.json`), so it may import only the standard
library and libtorrent. It downloads into a hidden file beside `dest`, lets
libtorrent check every piece, applies owner/group/mode and renames into place,
then seeds while the swarm still needs it. Progress and the outcome go to a
JSON status file that p2p_fetch reads.

This file is the entry point and the run loop; the rest sits next to it, in
module_utils and in the state directory alike (p2p_fetch writes every file
script_files() names):

    agent_session.py   libtorrent settings, listen ports, peers, announce URLs, ip filters
    agent_stripes.py   striped piece priorities (StripePicker)
    fileops.py         atomic writes
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import faulthandler
import json
import os
import signal
import sys
import time
import warnings

if __package__:   # imported from the collection (the module, tests)
    from ansible_collections.p2p.swarm.plugins.module_utils import agent_session
    from ansible_collections.p2p.swarm.plugins.module_utils import agent_stripes
    from ansible_collections.p2p.swarm.plugins.module_utils import fileops
else:             # the script on the host, its files side by side
    _HERE = os.path.dirname(os.path.abspath(__file__))
    if _HERE not in sys.path:
        sys.path.insert(0, _HERE)
    # Run as `python agent.py` its directory is on sys.path already; either
    # way, no __pycache__ in the state directory.
    sys.dont_write_bytecode = True
    import agent_session  # pylint: disable=import-error
    import agent_stripes  # pylint: disable=import-error
    import fileops  # pylint: disable=import-error

try:
    import libtorrent as lt
except ImportError:  # the module reports a missing libtorrent before starting us
    lt = None

TICK = 0.25  # seconds between status updates and alert polls
SWARM_DONE_HOLD = 5.0  # tracker must report no incomplete peer this long before we exit
STRIPE_EVERY = 0.2  # seconds between piece-priority updates while striping
PART_FILE_GRACE = 10.0  # seconds a finished download may wait for libtorrent to create its file
PEER_RETRY = 5.0  # seconds between attempts to reach the listed peers not connected yet
# A placed agent ends once the tracker has failed every announce for this
# long: the run is over and has stopped it (one failure is no proof).
TRACKER_GONE_AFTER = 5.0
# A held seed (job hold_peers) serves once that many download agents are
# connected, or once none has joined for HOLD_QUIET seconds (hosts that hold
# the file already never come), or HOLD_FIRST seconds after its start when
# none came at all: a hold always ends.
HOLD_QUIET = 5.0
HOLD_FIRST = 120.0
HOLD_EVERY = 0.1  # seconds between looks at who has joined, while held


def script_files():
    """[(file name, module)]: what the agent script needs on a host, itself last."""
    return [('fileops.py', fileops), ('agent_session.py', agent_session),
            ('agent_stripes.py', agent_stripes), ('agent.py', sys.modules[__name__])]


def part_name(dest):
    """The hidden name beside dest that holds data until it is complete."""
    return '.%s.p2p-part' % os.path.basename(dest)


def reserve_space(path, size):
    """Create the hidden part file with all its blocks allocated, so that
    "disk full" is one clear error now and not a failure mid-download
    (libtorrent itself allocates only when it first writes, which can be
    after another process has taken the space). Returns True when the file
    is new; an existing one holds a partial download to resume."""
    created = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if created:
            os.unlink(path)
        raise OSError(exc.errno, 'cannot allocate %s (%d bytes): %s' % (path, size, exc.strerror))
    finally:
        os.close(fd)
    return created


class Agent(object):
    """Drives one torrent from start to exit; see run() for the loop."""

    def __init__(self, job):
        self.job = job
        self.seed = bool(job.get('seed'))
        self.dest = job['dest']
        self.started = time.time()
        self.placed_at = None
        self.swarm_done_since = None
        self.announced_ok = False
        self.last_tracker_error = None
        self.unregistered = False     # the tracker answered that it no longer serves the torrent
        self.last_reply_at = None     # when the tracker last answered
        self.failing_since = None     # first failed announce since its last answer
        self.last_peer_at = None      # last tick with at least one peer connected
        self.stop_requested = False
        self.status = {
            'pid': os.getpid(), 'run_id': job.get('run_id'), 'state': 'starting',
            'dest': self.dest, 'seed': self.seed, 'placed': False,
            'error': None, 'started_at': self.started, 'progress': 0.0,
        }
        self.session = None
        self.handle = None
        self.picker = None            # StripePicker when the job asks for striping
        self.part_missing_since = None
        self.new_part = None          # the part file this run created, while it holds no data
        self.seeder_shut_out = False
        self.open_filter = None       # the ip filter from before the seeder was shut out
        self.listed_peers = []        # (ip, port) from the inventory, see peer_endpoints()
        self.peers_tried_at = 0.0
        self.trackers = []            # announce URLs as given to libtorrent
        self.hold_for = int(job.get('hold_peers') or 0) if self.seed else 0
        self.held_peers = set()       # addresses of download agents seen while the seed holds
        self.last_join_at = None

    # -- set-up ---------------------------------------------------------
    def start(self):
        ti = lt.torrent_info(self.job['torrent'])
        # An SSL torrent carries the root certificate of the run's CA.
        self.job['ssl'] = bool(ti.ssl_cert())
        self.status['ssl'] = self.job['ssl']
        if self.job['ssl'] and not (self.job.get('ssl_cert') and self.job.get('ssl_key')):
            raise ValueError('the torrent is an SSL torrent and no ssl_cert/ssl_key was given')
        settings = agent_session.session_settings(self.job)
        # The port other hosts can reach us on (the seed is told it by the role).
        port = settings['listen_interfaces'].split(',')[0].rsplit(':', 1)[1].rstrip('s')   # 's': TLS only
        self.status['listen_port'] = int(port) or None
        if self.hold_for:
            # Held: every peer stays choked until watch_hold() lets go. A seed
            # started before the hosts' agents (a seeder play) then starts the
            # swarm once they are all there, not with the first one.
            settings['unchoke_slots_limit'] = 0
            # libtorrent unchokes on its next tick: 0.1 s after the release, not 0.5 s.
            settings['tick_interval'] = 100
            self.status['held'] = True
        self.session = lt.session(settings)
        agent_session.apply_rate_limits_to_lan(self.session)
        if self.job.get('allowed_peers'):
            allowed = list(self.job['allowed_peers'])
            allowed += agent_session.tracker_addresses([t.url for t in ti.trackers()])
            self.session.set_ip_filter(agent_session.build_ip_filter(allowed))
        params = lt.add_torrent_params()
        params.ti = ti
        params.save_path = os.path.dirname(self.dest)
        name = os.path.basename(self.dest) if self.seed else part_name(self.dest)
        params.renamed_files = {0: name}
        params.storage_mode = lt.storage_mode_t.storage_mode_allocate
        if not self.seed and reserve_space(os.path.join(params.save_path, name), ti.total_size()):
            # A file just created holds no piece: nothing to check.
            params.flags |= lt.torrent_flags.no_verify_files
            self.new_part = os.path.join(params.save_path, name)
        self.trackers = [agent_session.tracker_url_for(t.url, self.job.get('peer_name')) for t in ti.trackers()]
        params.trackers = list(self.trackers)
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        params.flags |= lt.torrent_flags.override_trackers
        if self.seed:
            # The seeder's copy was just hashed by p2p_torrent; seed mode
            # verifies each piece lazily the first time it is uploaded.
            params.flags |= lt.torrent_flags.seed_mode
        elif int(self.job.get('stripe_count') or 0) > 1:
            self.picker = agent_stripes.StripePicker(ti.num_pieces(), self.job.get('stripe_index') or 0,
                                                     self.job['stripe_count'])
            # Priorities from the first request on, not a moment after.
            params.piece_priorities = self.picker.priorities()
        self.handle = self.session.add_torrent(params)
        if self.job['ssl']:
            # This host's certificate, signed by the CA in the torrent; peers
            # without one from that CA fail the TLS handshake both ways.
            if hasattr(self.handle, 'set_ssl_certificate_buffer'):   # libtorrent >= 2.1's binding
                with open(self.job['ssl_cert']) as cert, open(self.job['ssl_key']) as key:
                    self.handle.set_ssl_certificate_buffer(cert.read(), key.read(), agent_session.FFDHE2048_PEM)
            else:
                # 2.0.x's binding takes file paths only, the DH parameters too.
                dh_params = os.path.join(self.job['job_dir'], 'dhparams.pem')
                with open(dh_params, 'w') as handle:
                    handle.write(agent_session.FFDHE2048_PEM)
                self.handle.set_ssl_certificate(self.job['ssl_cert'], self.job['ssl_key'], dh_params)
        self.listed_peers = agent_session.peer_endpoints(self.job.get('peers'))
        self.connect_listed_peers()

    def connect_listed_peers(self):
        """Reach out to the listed peers we hold no connection to. libtorrent
        ignores a peer it is connected to already; a refused attempt (agent not
        started yet) is tried again on a later tick while data is missing."""
        if not self.listed_peers or self.handle is None:
            return
        self.peers_tried_at = time.time()
        connected = set((peer.ip[0], peer.ip[1]) for peer in self.handle.get_peer_info())
        for endpoint in self.listed_peers:
            if endpoint not in connected:
                self.handle.connect_peer(endpoint)

    def report_outcome(self, outcome, error=None):
        """Carry the verdict in every later announce (the next one is sent
        now; a failing agent's 'stopped' at exit carries it too)."""
        if self.handle is None or not self.trackers:
            return
        try:
            self.handle.replace_trackers([lt.announce_entry(agent_session.with_outcome(url, outcome, error))
                                         for url in self.trackers])
            self.handle.force_reannounce()
        except (RuntimeError, TypeError, AttributeError) as exc:  # the verdict still reaches the module
            self.status['outcome_report_error'] = str(exc)

    # -- events ---------------------------------------------------------
    def on_alert(self, alert):
        if isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
            self.fail('%s' % alert.message(), fatal_storage=True)
        elif isinstance(alert, lt.file_rename_failed_alert):
            self.fail('could not rename into %s: %s' % (self.dest, alert.message()))
        elif isinstance(alert, lt.file_renamed_alert):
            self.placed_at = time.time()
            self.status.update(placed=True, placed_at=self.placed_at)
            self.write_placed_stamp()
            self.report_outcome('placed')
        elif isinstance(alert, lt.hash_failed_alert):
            # Corrupt data never reaches dest: the piece is dropped and fetched again.
            self.status['hash_failures'] = self.status.get('hash_failures', 0) + 1
        elif isinstance(alert, lt.peer_ban_alert):
            # libtorrent bans a peer whose data failed the hash check.
            banned = self.status.setdefault('banned_peers', [])
            if alert.ip[0] not in banned:
                banned.append(alert.ip[0])
        elif isinstance(alert, lt.tracker_reply_alert):
            self.announced_ok = True
            self.last_reply_at = time.time()
            self.failing_since = None
            self.unregistered = False
        elif isinstance(alert, lt.tracker_error_alert):
            url = alert.tracker_url().split('?', 1)[0]
            # The tracker's own words ("unregistered torrent") say more than
            # libtorrent's generic "tracker sent a failure message".
            reason = alert.failure_reason() or alert.error.message()
            self.last_tracker_error = '%s: %s' % (url, reason)
            self.unregistered = 'unregistered torrent' in reason
            if 'abort' not in reason.lower():   # replace_trackers() aborts the announce in flight
                self.failing_since = self.failing_since or time.time()

    def place(self):
        """Give the complete, hash-checked data its final name and attributes."""
        part = os.path.join(os.path.dirname(self.dest), part_name(self.dest))
        if not os.path.exists(part):
            # libtorrent hashes the last piece from its write buffer and may
            # report the download complete a moment before its disk thread
            # has created the file: try again on the next tick.
            self.part_missing_since = self.part_missing_since or time.time()
            if time.time() - self.part_missing_since < PART_FILE_GRACE:
                return
        try:
            owner, group = self.job.get('owner'), self.job.get('group')
            if owner is not None or group is not None:
                os.chown(part, -1 if owner is None else owner, -1 if group is None else group)
            mode = self.job.get('mode')
            os.chmod(part, mode if mode is not None else 0o644)
        except OSError as exc:
            self.fail('cannot set owner/mode on %s: %s' % (part, exc))
            return
        self.status['state'] = 'finishing'
        # libtorrent renames with rename(2) and keeps seeding from the new name.
        self.handle.rename_file(0, os.path.basename(self.dest))

    def write_placed_stamp(self):
        """Record what was placed so a rerun can skip re-hashing an untouched file."""
        try:
            st = os.stat(self.dest)
        except OSError:
            return
        stamp = {'dest': self.dest, 'size': st.st_size, 'mtime_ns': st.st_mtime_ns,
                 'ino': st.st_ino, 'placed_at': self.placed_at}
        fileops.write_atomic(os.path.join(self.job['job_dir'], 'placed.json'), json.dumps(stamp, sort_keys=True))

    def fail(self, message, fatal_storage=False):
        if self.status['state'] == 'failed':
            return
        self.status.update(state='failed', error=message)
        self.report_outcome('failed', message)
        if fatal_storage and self.handle is not None and not self.seed:
            # Nothing half-written stays behind after a storage error (disk
            # full, I/O error): drop the torrent and its hidden partial file.
            self.session.remove_torrent(self.handle, lt.session.delete_files)
            self.handle = None

    # -- main loop ------------------------------------------------------
    def tick(self):
        for alert in self.session.pop_alerts():
            self.on_alert(alert)
        if self.handle is None or self.status['state'] == 'failed':
            return
        st = self.handle.status()
        # st.progress is relative to the *wanted* pieces; with striped piece
        # priorities most are unwanted at first, so report the whole file's share.
        total = float(st.total)
        if 'resumed' not in self.status and not self.seed and st.state not in (
                lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data):
            # Verified bytes found on disk at start: what an interrupted run left.
            self.status['resumed'] = st.total_done
        self.status.update(
            progress=round(min(1.0, st.total_done / total), 4) if total else round(st.progress, 4),
            downloaded=st.total_payload_download,
            uploaded=st.all_time_upload, download_rate=st.download_payload_rate,
            upload_rate=st.upload_payload_rate, peers=st.num_peers, seeds=st.num_seeds,
            swarm_incomplete=st.num_incomplete, swarm_complete=st.num_complete,
            tracker_error=self.last_tracker_error, tracker_ok=self.announced_ok)
        if st.num_peers > 0:
            self.last_peer_at = time.time()
        if st.errc.value():
            self.fail(st.errc.message(), fatal_storage=True)
            return

        if st.state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data):
            self.status['state'] = 'checking'
        elif not st.is_seeding:
            self.status['state'] = 'downloading'
            self.steer_stripes(st)
            if time.time() - self.peers_tried_at >= PEER_RETRY:
                self.connect_listed_peers()
        elif self.seed or self.status['placed']:
            self.status['state'] = 'seeding'
            if self.status.get('held'):
                self.watch_hold()
        elif self.status['state'] != 'finishing':
            self.place()
        self.watch_swarm(st)

    def watch_hold(self):
        """Count the hosts whose download agent reached the held seed; release
        it when all are there, or when they stopped coming. Hosts are told
        apart by address: libtorrent gives every connection its own peer id,
        and an agent is often connected twice (it to us, we to it)."""
        now = time.time()
        for peer in self.handle.get_peer_info():
            if (peer.pid.to_bytes().startswith(agent_session.PEER_FINGERPRINT.encode('ascii'))
                    and peer.ip[0] not in self.held_peers):
                self.held_peers.add(peer.ip[0])
                self.last_join_at = now
        self.status['held_peers'] = len(self.held_peers)
        if (len(self.held_peers) >= self.hold_for
                or (self.last_join_at and now - self.last_join_at >= HOLD_QUIET)
                or (not self.last_join_at and now - self.started >= HOLD_FIRST)):
            self.session.apply_settings({'unchoke_slots_limit': agent_session.UNCHOKE_SLOTS})
            self.status.update(held=False, released_at=now)

    def steer_stripes(self, st):
        """Feed the StripePicker and apply what it decides."""
        if self.picker is None or not self.picker.active:
            return
        seeders, others, seeder_connections = set(), set(), 0
        for peer in self.handle.get_peer_info():
            if peer.pid.to_bytes().startswith(agent_session.SEED_FINGERPRINT.encode('ascii')):
                seeders.add(peer.ip[0])
                seeder_connections += 1
            else:
                others.add(peer.ip[0])
        # Availability counts every connection to a peer that has the piece,
        # seeds included; take the original seeder's connections off.
        avail = self.handle.piece_availability()
        held_elsewhere = [count > seeder_connections for count in avail] if avail else []
        have = self.handle.status(lt.torrent_handle.query_pieces).pieces
        # The tracker's counts include the original seeder (-1 when it sent none).
        joined = st.num_incomplete + st.num_complete - 1 if min(st.num_incomplete, st.num_complete) >= 0 else None
        now = time.time()
        priorities, shut_out = self.picker.update(have, held_elsewhere, now, joined)
        if priorities is not None:
            self.handle.prioritize_pieces(priorities)
        # An address shared with another peer (agents on one machine) is never shut out.
        self.shut_out_seeder(seeders - others if shut_out else set())
        # When the own stripe was in and when striping fell back to a plain
        # swarm: the benchmark reads these to explain the seeder's upload.
        if seeders:
            self.status.setdefault('seeder_seen_at', now)
        if shut_out:
            self.status.setdefault('stripe_done_at', now)
        if not self.picker.active:
            self.status['striping_given_up_at'] = now
        self.status['striping'] = 'on' if self.picker.active else 'given up'

    def shut_out_seeder(self, addresses):
        """Refuse the seeder's address(es) (libtorrent drops the connection
        at once), or let it back in when addresses is empty."""
        if addresses and not self.seeder_shut_out:
            self.open_filter = self.session.get_ip_filter()
            closed = self.session.get_ip_filter()
            for address in addresses:
                closed.add_rule(address, address, 1)
            self.session.set_ip_filter(closed)
            self.seeder_shut_out = True
        elif not addresses and self.seeder_shut_out and not self.picker.active:
            self.session.set_ip_filter(self.open_filter)
            self.seeder_shut_out = False

    def watch_swarm(self, st):
        """Note when the tracker says every peer is complete."""
        if self.status['state'] != 'seeding':
            return
        if st.num_incomplete == 0 and st.num_complete > 0:
            if self.swarm_done_since is None:
                self.swarm_done_since = time.time()
        else:
            self.swarm_done_since = None

    def exit_reason(self):
        """Why the agent should stop now, or None to keep going."""
        now = time.time()
        state = self.status['state']
        if self.stop_requested:
            return 'stopped on request'
        if state == 'failed':
            return 'failed'
        if now - self.started > float(self.job.get('lifetime') or 7200):
            if not (self.seed or self.status['placed']):
                self.fail('timed out after %d s at %.1f%%' % (now - self.started, 100 * self.status['progress']))
            return 'lifetime over'
        grace = float(self.job.get('tracker_grace') or 60)
        # Alone: no answer from the tracker ever, and no peer (listed or not) for `grace` seconds.
        if (not self.announced_ok and state != 'seeding'
                and now - (self.last_peer_at or self.started) > grace):
            self.fail('tracker unreachable and no peer for %d s: %s' % (grace, self.last_tracker_error or 'no answer'))
            return 'failed'
        if self.seed and self.announced_ok and self.unregistered:
            # The tracker says it no longer serves the torrent: every run
            # that used this seed released its claim. (A tracker that is
            # merely unreachable says nothing: the seed goes on.)
            return 'torrent no longer on the tracker'
        if state == 'seeding' and not self.seed:
            if self.swarm_done_since and now - self.swarm_done_since >= SWARM_DONE_HOLD:
                return 'swarm complete'
            if self.tracker_gone_since(self.placed_at):
                # The run stops its tracker once every host is done.
                return 'tracker stopped'
            if self.placed_at and now - self.placed_at > float(self.job.get('linger') or 0):
                return 'linger time over'
        return None

    def tracker_gone_since(self, moment):
        """The tracker answered once, and has failed every announce for
        TRACKER_GONE_AFTER seconds, starting after `moment`."""
        return (moment is not None and self.announced_ok and self.failing_since is not None
                and self.failing_since > moment and time.time() - self.failing_since >= TRACKER_GONE_AFTER)

    def write_status(self):
        self.status['updated_at'] = time.time()
        fileops.write_atomic(self.job['status_path'], json.dumps(self.status, sort_keys=True))

    def wait(self):
        """Sleep until the next tick.

        Not session.wait_for_alert(): its Python binding wraps the alert it
        returns, and in libtorrent 2.0.x (Debian 12's 2.0.8) that alert can be
        freed by the network thread meanwhile: agents died of SIGSEGV in the
        binding's dynamic_cast at random (a core dump showed where), about one
        agent in a few hundred.
        Polling costs at most one tick of delay before a host places its file.
        """
        striping = self.picker is not None and self.picker.active and self.status['state'] == 'downloading'
        time.sleep(HOLD_EVERY if self.status.get('held') else STRIPE_EVERY if striping else TICK)

    def run(self):
        def request_stop(signum, frame):
            self.stop_requested = True
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            self.start()
        except Exception as exc:  # bad torrent, unusable dest dir: report, do not crash silently
            self.status.update(state='failed', error='cannot start: %s' % exc)
            self.write_status()
            return 1
        reason = None
        while reason is None:
            self.tick()
            self.write_status()
            reason = self.exit_reason()
            if reason is None:
                self.wait()
        if self.status['state'] not in ('failed',):
            self.status['state'] = 'done' if (self.seed or self.status['placed']) else 'stopped'
        self.status['exit_reason'] = reason
        self.status['exited_at'] = time.time()
        self.write_status()
        # Dropping the session sends the tracker a 'stopped' event (bounded
        # by stop_tracker_timeout) and closes files.
        self.handle = None
        self.session = None
        if self.new_part and not self.status.get('downloaded') and os.path.exists(self.new_part):
            # A run that got no data (tracker unreachable, stopped early)
            # leaves nothing behind; one with data keeps it for a rerun.
            os.unlink(self.new_part)
        return 0 if self.status['state'] != 'failed' else 1


def main(argv):
    if len(argv) != 2:
        sys.stderr.write('usage: agent.py JOB.json\n')
        return 2
    with open(argv[1]) as handle:
        job = json.load(handle)
    if lt is None:
        sys.stderr.write('libtorrent is not importable by %s\n' % sys.executable)
        return 2
    os.umask(0o077)  # partial data is nobody else's business until placed
    # A crash inside libtorrent leaves no Python traceback; this puts the
    # fatal signal and the Python stack into the log the module quotes.
    faulthandler.enable()
    # libtorrent's deprecation notices would crowd the log tail that error messages quote.
    warnings.simplefilter('ignore', DeprecationWarning)
    return Agent(job).run()


if __name__ == '__main__':
    sys.exit(main(sys.argv))

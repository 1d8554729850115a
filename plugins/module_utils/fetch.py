# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one p2p_fetch call does on a host: check dest, write the torrent,
start or find the agent (module_utils/agent.py) of a (torrent, dest) pair,
maybe wait for its outcome, stop it. The module itself keeps the options."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import os
import sys
import time

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.p2p.swarm.plugins.module_utils import addresses
from ansible_collections.p2p.swarm.plugins.module_utils import agent as agent_lib
from ansible_collections.p2p.swarm.plugins.module_utils import fileops
from ansible_collections.p2p.swarm.plugins.module_utils import jobs
from ansible_collections.p2p.swarm.plugins.module_utils import locks
from ansible_collections.p2p.swarm.plugins.module_utils import metainfo
from ansible_collections.p2p.swarm.plugins.module_utils import verify
from ansible_collections.p2p.swarm.plugins.module_utils import versions

try:
    import libtorrent as lt
    LIBTORRENT_IMPORT_ERROR = None
except ImportError as exc:
    lt = None
    LIBTORRENT_IMPORT_ERROR = exc

FINISHED = ('done', 'failed', 'stopped')
START_TIMEOUT = 15           # seconds for an agent to get its torrent going


def load_torrent(module, path):
    try:
        ti = lt.torrent_info(path)
    except RuntimeError as exc:
        module.fail_json(msg='torrent %s is not a valid .torrent file: %s' % (path, exc))
    except Exception as exc:  # libtorrent raises several types for unreadable files
        module.fail_json(msg='cannot read torrent %s: %s' % (path, exc))
    try:
        # libtorrent silently rewrites '..' and absolute paths; the raw
        # metainfo shows what the torrent tried. Refuse before anything else.
        desc = metainfo.describe(path)
        metainfo.check_paths_safe(desc)
    except ValueError as exc:
        module.fail_json(msg='torrent %s refused: %s' % (path, exc))
    if ti.num_files() != 1:
        module.fail_json(msg='torrent %s holds %d files; p2p_fetch places single-file torrents only'
                         % (path, ti.num_files()))
    return ti, desc


def keep_content(module, path, data, mode, what):
    """Content that travels inside the call: keep it at path (written only
    when it differs; in check mode a temporary copy). Returns the path to use."""
    if module.check_mode:
        path = os.path.join(module.tmpdir, 'check.' + os.path.basename(path))
    elif os.path.isfile(path):
        with open(path, 'rb') as handle:
            if handle.read() == data:
                return path
    try:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        fileops.write_atomic(path, data, mode=mode)
    except OSError as exc:
        module.fail_json(msg='cannot write %s %s: %s' % (what, path, exc.strerror or exc))
    return path


def write_torrent_content(module):
    """torrent_content given: keep it at torrent."""
    try:
        data = base64.b64decode(module.params['torrent_content'], validate=True)
    except (binascii.Error, ValueError) as exc:
        module.fail_json(msg='torrent_content is not base64: %s' % exc)
    return keep_content(module, module.params['torrent'], data, 0o644, 'torrent')


def sha256_text(path, size=None, sha256=None, info_hash=None):
    """What --diff shows of a file: its path, size and checksum."""
    lines = ['path: %s' % path]
    if size is None and not os.path.isfile(path):
        return 'path: %s (absent)\n' % path
    if size is None:
        size, sha256 = os.path.getsize(path), fileops.file_sha256(path)
    lines += ['size: %d' % size, 'sha256: %s' % (sha256 or 'not recorded in the torrent')]
    if info_hash:
        lines.append('info_hash: %s' % info_hash)
    return '\n'.join(lines) + '\n'


def allowed_networks(module, entries):
    """allowed_peers as CIDR strings: addresses and networks as given, names resolved here."""
    try:
        networks, unresolved = addresses.resolve_networks(entries)
    except addresses.AddressError as exc:
        module.fail_json(msg='allowed_peers: %s' % exc)
    for name in unresolved:
        module.warn('allowed_peers: cannot resolve %s; left out' % name)
    if entries and not networks:
        module.fail_json(msg='allowed_peers: none of %s resolves to an address; the agent could '
                         'talk to no peer' % ', '.join(str(e) for e in entries))
    return networks


def write_pem(module, name, mode):
    """<name>_content given (ssl_cert, ssl_key): keep it at <name>."""
    data = module.params[name + '_content']
    data = (data if data.endswith('\n') else data + '\n').encode('utf-8')
    return keep_content(module, module.params[name], data, mode, name)


def check_ssl_files(module, ti, params):
    """For an SSL torrent, ssl_cert and ssl_key must name readable PEM files."""
    if not ti.ssl_cert():
        if params['ssl_cert'] or params['ssl_key']:
            module.warn('ssl_cert/ssl_key ignored: %s is not an SSL torrent' % params['torrent'])
        return
    missing = [name for name in ('ssl_cert', 'ssl_key') if not params[name]]
    if missing:
        module.fail_json(msg='torrent %s is an SSL torrent (it carries a root certificate): %s must be '
                         'given, a certificate signed by that CA and its key'
                         % (params['torrent'], ' and '.join(missing)), ssl=True)
    for name, marker in (('ssl_cert', '-----BEGIN CERTIFICATE-----'), ('ssl_key', 'PRIVATE KEY-----')):
        path = params[name]
        try:
            with open(path) as handle:
                text = handle.read(65536)
        except (IOError, OSError) as exc:
            module.fail_json(msg='%s %s cannot be read: %s' % (name, path, exc.strerror or exc), ssl=True)
        except UnicodeDecodeError:
            text = ''
        if marker not in text:
            module.fail_json(msg='%s %s is not a PEM %s' % (name, path, 'certificate' if name == 'ssl_cert'
                                                            else 'private key'), ssl=True)


def check_dest(module, dest):
    parent = os.path.dirname(dest) or '.'
    if os.path.isdir(dest):
        module.fail_json(msg='dest %s is a directory; give the full path of the file' % dest)
    state_dir = os.path.abspath(module.params['state_dir'])
    if not os.path.isdir(parent) and parent.startswith(state_dir + os.sep) and not module.check_mode:
        # Our own cache (archives to unpack): made here, saving the role a round.
        os.makedirs(parent, 0o755)
    if not os.path.isdir(parent) and not (module.check_mode and parent.startswith(state_dir + os.sep)):
        module.fail_json(msg='directory %s for dest does not exist' % parent)


def check_space(module, dest, size):
    """Fail early, with the numbers, if the download cannot fit."""
    parent = os.path.dirname(dest)
    part = os.path.join(parent, agent_lib.part_name(dest))
    have = os.path.getsize(part) if os.path.exists(part) else 0
    st = os.statvfs(parent)
    free = st.f_bavail * st.f_frsize
    if free + have < size:
        module.fail_json(msg='no space left for %s: need %d bytes, %d available in %s'
                         % (dest, size - have, free, parent), dest=dest, status='failed')


def agent_result(status, pid=None):
    keys = ('progress', 'downloaded', 'uploaded', 'pid', 'error', 'hash_failures', 'banned_peers', 'listen_port')
    result = dict((k, status[k]) for k in keys if status.get(k) is not None)
    result['status'] = status.get('state', 'absent')
    if pid is not None:
        result['pid'] = pid
    return result


class Fetch(object):
    """One p2p_fetch call: check dest, start/find the agent, maybe wait."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.dest = os.path.abspath(self.params['dest'])
        self.ti, self.desc = load_torrent(module, self.params['torrent'])
        self.info_hash = jobs.info_hash_hex(self.ti)
        self.job = jobs.Job(self.params['state_dir'], self.info_hash, self.dest)
        self.base = dict(dest=self.dest, info_hash=self.info_hash, size=verify.content_size(self.ti),
                         ssl=bool(self.ti.ssl_cert()))

    def diff(self):
        """--diff: the file at dest now, and what the torrent will put there."""
        return {'before': sha256_text(self.dest),
                'after': sha256_text(self.dest, verify.content_size(self.ti), self.desc.get('sha256'),
                                     self.info_hash)}

    def exit(self, changed, **extra):
        result = dict(self.base, changed=changed)
        result.update(extra)
        self.module.exit_json(**result)

    def fail(self, msg, **extra):
        result = dict(self.base)
        result.update(extra)
        self.module.fail_json(msg=msg, **result)

    def apply_attributes(self, changed):
        file_args = self.module.load_file_common_arguments(self.params, path=self.dest)
        return self.module.set_fs_attributes_if_different(file_args, changed)

    def agent_job(self, seed):
        p = self.params
        owner = fileops.resolve_uid(p['owner'])
        group = fileops.resolve_gid(p['group'])
        return {
            'torrent': os.path.abspath(p['torrent']), 'dest': self.dest, 'seed': seed,
            'peer_name': p['peer_name'] or os.uname()[1], 'run_id': p['run_id'],
            'owner': owner, 'group': group, 'mode': fileops.octal_mode(p['mode']),
            'lifetime': p['lifetime'], 'linger': p['linger'], 'tracker_grace': p['tracker_grace'],
            'upload_rate': p['upload_rate_limit'], 'download_rate': p['download_rate_limit'],
            'listen_port': p['listen_port'], 'listen_address': p['listen_address'],
            'preferred_port': p['preferred_port'], 'peers': p['peers'],
            'allowed_peers': allowed_networks(self.module, p['allowed_peers']),
            'stripe_index': p['stripe_index'], 'stripe_count': 0 if seed else p['stripe_count'],
            'hold_peers': p['hold_peers'] if seed else 0,
            'ssl_cert': p['ssl_cert'] and os.path.abspath(p['ssl_cert']),
            'ssl_key': p['ssl_key'] and os.path.abspath(p['ssl_key']),
        }

    def stop_other_agents_on_dest(self):
        """One agent per dest. An agent of another torrent for the same path
        (left running by an interrupted run, or an older version of the file)
        writes the same hidden file and would rename it over dest later."""
        dest_id = os.path.basename(self.job.dir)
        for job in jobs.all_jobs(self.params['state_dir']):
            if job.dir != self.job.dir and os.path.basename(job.dir) == dest_id:
                pid = job.running_pid()
                if pid is not None:
                    job.stop(pid)

    def start_agent(self, seed):
        check_ssl_files(self.module, self.ti, self.params)
        try:
            self.stop_other_agents_on_dest()
            return self.job.start(agent_lib, self.agent_job(seed), self.params['python'] or sys.executable)
        except (KeyError, OSError) as exc:
            self.fail('cannot start the swarm agent: %s' % exc)

    # -- state=present --------------------------------------------------
    def present(self):
        pid = self.job.running_pid()
        status = self.job.read_status()
        run_id = self.params['run_id']
        if (pid is not None and status.get('placed') and status.get('run_id') != run_id
                and not self.params['wait'] and self.dest_holds_content()):
            # An earlier run's agent that placed this content and seeds on for a
            # few seconds before it ends by itself: nothing to do for this run.
            changed = self.apply_attributes(False)
            self.exit(changed, status='complete', progress=1.0,
                      msg='dest already holds the content (an earlier run\'s agent is still seeding it)')
        if pid is None and run_id and status.get('run_id') == run_id:
            if status.get('state') in FINISHED or status.get('placed'):
                return self.report_finished(status)
            # This run's agent is gone without a verdict (SIGKILL, OOM killer,
            # crash): report it instead of quietly starting another one. A
            # rerun (new run_id) resumes from the partial data.
            self.fail('swarm agent of this run died at %.1f%% without finishing (killed or crashed); '
                      'partial data kept, a rerun resumes it. Agent log: %s'
                      % (100 * float(status.get('progress') or 0), self.job.log_tail()),
                      **agent_result(dict(status, state='failed')))
        if pid is None:
            if self.dest_holds_content():
                changed = self.apply_attributes(False)
                self.exit(changed, status='complete', progress=1.0,
                          msg='dest already holds the content')
            diff = {'diff': self.diff()} if self.module._diff else {}
            if self.module.check_mode:
                check_ssl_files(self.module, self.ti, self.params)
                self.exit(True, status='absent', msg='would download %s' % self.dest, **diff)
            check_space(self.module, self.dest, verify.content_size(self.ti))
            pid = self.start_agent(seed=False)
            self.wait_until_started(pid)
            if not self.params['wait']:
                self.exit(True, **dict(agent_result(self.job.read_status(), pid), **diff))
        if not self.params['wait']:
            self.exit(True, **agent_result(self.job.read_status(), pid))
        return self.wait_for(pid)

    def wait_until_started(self, pid):
        """Until the agent has its torrent in libtorrent (a fraction of a
        second). A start-up error (read-only or full disk, bad certificate)
        then fails this task on this host: the agent never reaches the
        tracker, so nothing else would report it."""
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            status = self.job.read_status()
            if status.get('state') == 'failed':
                # It exits right after writing this; report once it is gone.
                stop_by = time.time() + 5
                while self.job.is_agent(pid) and time.time() < stop_by:
                    time.sleep(0.05)
                self.fail(status.get('error') or 'swarm agent failed to start', **agent_result(status))
            if status.get('state') not in (None, 'starting'):
                return
            if not self.job.is_agent(pid):
                status = self.job.read_status()   # it may have written its error and exited since
                self.fail(status.get('error') or 'swarm agent exited at start: %s' % self.job.log_tail(),
                          **agent_result(status))
            time.sleep(0.05)
        # A slow machine: the agent runs, its own outcome will tell.

    def dest_holds_content(self):
        if verify.stamp_matches(self.job.stamp_path, self.dest):
            return True
        if os.path.isfile(self.dest) and verify.file_matches_torrent(self.dest, self.ti):
            verify.write_stamp(self.job.stamp_path, self.dest)
            return True
        return False

    def wait_for(self, pid):
        deadline = time.time() + self.params['timeout']
        while time.time() < deadline:
            status = self.job.read_status()
            if status.get('placed') or status.get('state') in FINISHED:
                return self.report_finished(status)
            if not self.job.is_agent(pid):
                status = self.job.read_status()
                if status.get('placed') or status.get('state') in FINISHED:
                    return self.report_finished(status)
                self.fail('swarm agent exited unexpectedly: %s' % self.job.log_tail(),
                          **agent_result(status))
            time.sleep(0.5)
        status = self.job.read_status()
        self.job.stop(pid)
        self.fail('download not complete after %d s: %.1f%% done, %s peers; partial data kept for a rerun'
                  % (self.params['timeout'], 100 * float(status.get('progress') or 0), status.get('peers', 0)),
                  **agent_result(status))

    def stop_agent_if_done_with(self):
        """stop_when_done: the outcome is known, this host need not seed on.
        True when no agent of this dest runs any more."""
        if not (self.params['stop_when_done'] and self.params['wait']):
            return False
        pid = self.job.running_pid()
        if pid is not None:
            self.job.stop(pid)
        return True

    def report_finished(self, status):
        result = agent_result(status)
        if self.stop_agent_if_done_with():
            result['agent_stopped'] = True
        if status.get('placed') and verify.stamp_matches(self.job.stamp_path, self.dest):
            changed = self.apply_attributes(True)
            msg = 'downloaded and verified'
            if status.get('tracker_ok') is False:
                # It found its peers from the list it was given (p2p_fetch peers).
                msg += ' with no tracker (never reached it: %s)' % (status.get('tracker_error') or 'no answer')
            self.exit(changed, msg=msg, **result)
        error = status.get('error') or 'agent %s before completing' % status.get('state', 'exited')
        self.fail(error, **result)

    # -- state=seeding --------------------------------------------------
    def seeding(self):
        pid = self.job.running_pid()
        if pid is not None:
            self.exit(False, **agent_result(self.job.read_status(), pid))
        if not os.path.isfile(self.dest):
            self.fail('file to seed %s does not exist' % self.dest)
        if os.path.getsize(self.dest) != verify.content_size(self.ti):
            self.fail('file to seed %s has %d bytes, the torrent describes %d'
                      % (self.dest, os.path.getsize(self.dest), verify.content_size(self.ti)))
        if self.module.check_mode:
            self.exit(True, status='absent', msg='would start seeding')
        pid = self.start_agent(seed=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            status = self.job.read_status()
            if status.get('state') == 'seeding':
                self.exit(True, **agent_result(status, pid))
            if status.get('state') == 'failed' or not self.job.is_agent(pid):
                self.fail('seeding agent failed: %s' % (status.get('error') or self.job.log_tail()),
                          **agent_result(status))
            time.sleep(0.2)
        self.job.stop(pid)
        self.fail('seeding agent did not start within 30 s: %s' % self.job.log_tail())

    # -- state=stopped --------------------------------------------------
    def stopped(self):
        pid = self.job.running_pid()
        if pid is None:
            self.exit(False, **agent_result(self.job.read_status()))
        if self.module.check_mode:
            self.exit(True, pid=pid, msg='would stop the agent')
        self.job.stop(pid)
        self.exit(True, **agent_result(self.job.read_status()))


def stop_all(module):
    """state=stopped without a torrent: end every agent under state_dir."""
    agents = []
    for job in jobs.all_jobs(module.params['state_dir']):
        pid = job.running_pid()
        if pid is None:
            continue
        if not module.check_mode:
            job.stop(pid)
        status = job.read_status()
        agents.append({'pid': pid, 'dest': status.get('dest'), 'seed': bool(status.get('seed')),
                       'progress': status.get('progress')})
    module.exit_json(changed=bool(agents), agents=agents, status='stopped',
                     msg='%s %d agent(s)' % ('would stop' if module.check_mode else 'stopped', len(agents)))


def run(module):
    """The whole call, once AnsibleModule has checked the options."""
    if module.params['state'] == 'stopped' and not module.params['torrent']:
        stop_all(module)   # needs no libtorrent
    if lt is None:
        # libtorrent_missing tells the peer role to look for (or install) an
        # interpreter that has it, rather than to fail the host.
        module.fail_json(msg=missing_required_lib('libtorrent') + ' (interpreter: %s)' % sys.executable,
                         exception=str(LIBTORRENT_IMPORT_ERROR), libtorrent_missing=True)
    if versions.too_old(lt.__version__):
        module.fail_json(msg='libtorrent %s under %s is too old: %s or later is needed'
                         % (lt.__version__, sys.executable, versions.MIN_VERSION), libtorrent_missing=True)
    if (module.check_mode and module.params['state'] == 'seeding' and not module.params['torrent_content']
            and not os.path.isfile(module.params['torrent'])):
        # A first --check: the seeder never made the torrent, so nothing can be read from it.
        module.exit_json(changed=True, status='absent', dest=os.path.abspath(module.params['dest']),
                         msg='would seed %s once the torrent %s is made' % (module.params['dest'], module.params['torrent']))
    if module.params['torrent_content']:
        module.params['torrent'] = write_torrent_content(module)
    elif module.params['state'] == 'stopped' and not os.path.exists(module.params['torrent']):
        # Agents are started with the torrent on disk: none can run without it
        # (a host whose play failed before it got the torrent).
        module.exit_json(changed=False, status='absent', dest=os.path.abspath(module.params['dest']),
                         msg='torrent %s is not on this host: no agent of it runs' % module.params['torrent'])
    if not os.path.isfile(module.params['torrent']):
        module.fail_json(msg='torrent file %s does not exist' % module.params['torrent'])
    for name, mode in (('ssl_cert', 0o644), ('ssl_key', 0o600)):
        if module.params[name + '_content'] is not None:
            module.params[name] = write_pem(module, name, mode)
    if module.params['state'] == 'present':
        check_dest(module, os.path.abspath(module.params['dest']))
    if module.params['state'] == 'seeding':
        # Slices of one run (or runs of one file) start the same seed at once: one does.
        with locks.locked(module.params['state_dir'], 'seed.lock', module.check_mode):
            Fetch(module).seeding()
    getattr(Fetch(module), module.params['state'])()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: p2p_fetch
short_description: Make a file hold a torrent's content, fetched over a private swarm
version_added: 0.1.0
description:
  - Ensures that O(dest) on the managed host holds the content described by a
    .torrent file, downloading it from the other hosts of a private BitTorrent
    swarm with libtorrent.
  - The transfer runs in a detached agent process, so the module can return at
    once (O(wait=false)) and many hosts download at the same time whatever the
    number of Ansible forks. A later call with O(wait=true), or M(p2p.swarm.p2p_wait)
    on the controller, waits for the outcome.
  - Data is written to a hidden file beside O(dest), every piece is checked
    against the torrent's hashes, and only a complete file is renamed to O(dest).
    An interrupted download resumes from the data already there.
  - The agent keeps seeding after it finishes, until the tracker reports that no
    peer still downloads, O(linger) seconds pass, or it is stopped with
    O(state=stopped).
  - With O(state=seeding) the module seeds an existing complete copy instead;
    this is how the seeder role serves the original file.
  - If O(dest) already holds the content nothing is downloaded and the result
    is C(changed=false).
author:
  - p2p.swarm contributors (@p2p-swarm)
requirements:
  - libtorrent (python bindings, 2.0 or later) for the interpreter running the module
extends_documentation_fragment:
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    description: Reports whether O(dest) would be downloaded; starts no agent.
  diff_mode:
    support: partial
    description: >-
      When the module would download or starts a download, shows path, size and
      SHA-256 of the file at O(dest) before, and of the torrent's content after
      (the SHA-256 that M(p2p.swarm.p2p_torrent) records in the .torrent; the
      info-hash too). Changes of owner, group or mode alone show no diff.
options:
  torrent:
    description:
      - Path of the .torrent file on the managed host.
      - Required, with O(dest), unless O(state=stopped).
    type: path
  torrent_content:
    description:
      - The .torrent file itself, base64-encoded (as M(ansible.builtin.slurp)
        returns it). It is written to O(torrent) when that file is missing or
        differs (its directory is created), so a play needs no separate copy
        step, which costs several SSH round trips per host.
      - In check mode nothing is written; the content is read from a temporary copy.
    type: str
  dest:
    description:
      - Path of the file to create or check. Its directory must exist (it is
        not created), unless it lies inside O(state_dir), where the peer role keeps
        archives to unpack there.
      - With O(state=seeding), the complete file to seed.
      - Required, with O(torrent), unless O(state=stopped).
    type: path
  state:
    description:
      - V(present) makes O(dest) hold the content, downloading it if needed.
      - V(seeding) seeds an existing complete O(dest) (the original copy).
      - V(stopped) stops the agent of this torrent and reports its last status.
        Partial data is kept so a later V(present) resumes.
      - V(stopped) without O(torrent) and O(dest) stops every agent under
        O(state_dir), downloads and seeds alike; this is the clean-up after an
        interrupted play (see the C(p2p.swarm.cleanup) playbook).
    type: str
    choices: [present, seeding, stopped]
    default: present
  wait:
    description:
      - Wait until the download is complete (or failed) before returning.
      - With V(false) the module returns once the agent is running.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait with O(wait=true). On timeout the agent is stopped and
        the task fails; the partial data stays for a rerun.
    type: int
    default: 1800
  stop_when_done:
    description:
      - With O(wait=true), stop this host's agent as soon as its outcome is
        known instead of letting it seed for O(linger) seconds more.
      - Use it once every host is known to be complete; the peer role sets it
        after M(p2p.swarm.p2p_wait), so that the report and the clean-up take
        one round per host instead of two. Stopping early while other hosts
        still download takes this host's pieces away from them.
    type: bool
    default: false
  lifetime:
    description: Upper bound, in seconds, on how long an agent may run at all.
    type: int
    default: 7200
  linger:
    description:
      - Seconds to keep seeding after this host is complete, unless the tracker
        reports earlier that no peer is still downloading.
    type: int
    default: 300
  tracker_grace:
    description:
      - Seconds without any tracker answer and without any peer after which
        the agent gives up and reports the tracker as unreachable.
    type: int
    default: 60
  peer_name:
    description:
      - Name this host announces to the tracker, so progress can be shown per
        inventory host. The roles pass C(inventory_hostname).
      - Defaults to the host name.
    type: str
  run_id:
    description:
      - Identifier of one distribution run. A later call with the same
        O(run_id) reports the outcome of the agent that run started even when
        that agent has already exited, instead of starting a new one.
    type: str
  upload_rate_limit:
    description: Upload limit of the agent in bytes per second, V(0) for none.
    type: int
    default: 0
  download_rate_limit:
    description: Download limit of the agent in bytes per second, V(0) for none.
    type: int
    default: 0
  listen_port:
    description: TCP port the agent accepts peers on; V(0) picks one (O(preferred_port) if it is free).
    type: int
    default: 0
  preferred_port:
    description:
      - With O(listen_port=0), the port to listen on when it is free, else a free one.
        Other hosts are told to try it (O(peers)), so their agents can reach this
        one without the tracker. V(0) for none.
    type: int
    default: 0
  peers:
    description:
      - Peers the agent connects to by itself, as C(address:port) (C([v6]:port) for
        IPv6; names are resolved on the managed host), besides those the tracker
        names. The swarm then forms, and completes, even where the tracker is slow
        or unreachable from this host. Addresses that refuse are tried again every
        few seconds while data is missing.
      - The peer role passes the seeder and a random subset of the other hosts.
    type: list
    elements: str
    default: []
  listen_address:
    description: Address the agent listens on. V(0.0.0.0) and V(::) listen on every address of both families.
    type: str
    default: 0.0.0.0
  state_dir:
    description: Directory for the agent script, its status, log and pidfile.
    type: path
    default: /var/lib/p2p-swarm
  python:
    description: Interpreter that runs the agent; it must import libtorrent.
    type: path
  allowed_peers:
    description:
      - Addresses, networks (CIDR) or host names the agent exchanges data
        with. Every other address is refused, for incoming and outgoing
        connections alike (a libtorrent ip filter). Names are resolved on the
        managed host; a name that does not resolve is left out with a warning.
      - The trackers named in the torrent stay reachable whatever this says.
      - Empty (the default) sets no filter. The peer role passes the
        addresses of the play's hosts and of the seeder.
    type: list
    elements: str
    default: []
  stripe_index:
    description:
      - This host's position, from V(0), among the O(stripe_count) hosts that
        download the torrent in this run. The peer role passes the host's
        index in its list of hosts that need the file.
      - Used only with O(stripe_count) of 2 or more.
    type: int
    default: 0
  stripe_count:
    description:
      - Number of hosts downloading together. With 2 or more the agent uses
        striped piece priorities, so the seeder sends each piece out about
        once instead of about twice; host O(stripe_index) fetches the
        pieces p with p % O(stripe_count) == O(stripe_index) from the seeder
        first, takes the other pieces only from peers that already hold
        them, and stops taking data from the seeder once its own stripe is
        complete. If that stalls for a few seconds (a host died with its
        stripe half-fetched) the agent falls back to a plain swarm.
      - V(0) or V(1) turns striping off (libtorrent's rarest-first picker).
      - Ignored with O(state=seeding).
    type: int
    default: 0
  ssl_cert:
    description:
      - Path on the managed host of this host's certificate (PEM), signed by
        the CA whose root certificate the torrent carries (an SSL torrent, see
        O(p2p.swarm.p2p_torrent#module:ssl_ca_cert)). Its subjectAltName must
        hold a DNS entry equal to the torrent's name, or V(*).
      - Required, with O(ssl_key), for an SSL torrent; ignored, with a warning,
        for any other torrent.
      - With an SSL torrent the agent listens on O(listen_port) for TLS
        connections only and exchanges data only with peers that show a
        certificate of the same CA; M(p2p.swarm.p2p_certificate) makes them.
    type: path
  ssl_key:
    description:
      - Path on the managed host of the private key (PEM, unencrypted) of
        O(ssl_cert). Keep it C(0600).
    type: path
notes:
  - O(mode) is applied before the file gets its final name when it is an octal
    number; a symbolic mode is applied right after.
seealso:
  - module: p2p.swarm.p2p_torrent
  - module: p2p.swarm.p2p_wait
  - module: p2p.swarm.p2p_tracker
  - module: p2p.swarm.p2p_certificate
'''

EXAMPLES = r'''
- name: Download a release over the swarm and wait for it
  p2p.swarm.p2p_fetch:
    torrent: /var/lib/p2p-swarm/app-1.2.tar.gz.torrent
    dest: /opt/app/app-1.2.tar.gz
    owner: app
    mode: '0640'
    peer_name: "{{ inventory_hostname }}"

- name: Start the download on every host, return at once
  p2p.swarm.p2p_fetch:
    torrent: /var/lib/p2p-swarm/app.torrent
    dest: /opt/app/app.tar.gz
    wait: false
    run_id: "{{ run_id }}"
  register: started

- name: Collect each host's outcome later in the play
  p2p.swarm.p2p_fetch:
    torrent: /var/lib/p2p-swarm/app.torrent
    dest: /opt/app/app.tar.gz
    run_id: "{{ run_id }}"
    timeout: 60

- name: Seed the original copy
  p2p.swarm.p2p_fetch:
    torrent: /build/app.torrent
    dest: /build/app.tar.gz
    state: seeding

- name: Download an SSL torrent (authenticated swarm) with this host's certificate
  p2p.swarm.p2p_fetch:
    torrent: /var/lib/p2p-swarm/app.torrent
    dest: /opt/app/app.tar.gz
    ssl_cert: /var/lib/p2p-swarm/ssl/host.pem
    ssl_key: /var/lib/p2p-swarm/ssl/host.key

- name: After an interrupted play, stop every agent on the host
  p2p.swarm.p2p_fetch:
    state: stopped
'''

RETURN = r'''
dest:
  description: Path of the file.
  returned: when O(dest) is given
  type: str
agents:
  description: >-
    With O(state=stopped) and no O(torrent): the agents that were running
    and are now stopped, each with C(pid), C(dest), C(seed) and C(progress).
  returned: when O(state=stopped) without O(torrent)
  type: list
  elements: dict
agent_stopped:
  description: True when O(stop_when_done) ended this host's agent (or none was left running).
  returned: with O(stop_when_done=true), once the outcome is known
  type: bool
libtorrent_missing:
  description: >-
    True when the interpreter running the module cannot import libtorrent
    (the task fails); the peer role then looks for, or installs, one that can.
  returned: on that failure
  type: bool
info_hash:
  description: Info-hash of the torrent (v1 hex, or v2 hex for v2-only torrents).
  returned: success
  type: str
  sample: 5a8ce26e8a19a877d8ccc927fcc18e34e1f5ff67
status:
  description: >-
    State of the agent: V(complete) (nothing to do), V(downloading), V(checking),
    V(seeding), V(done), V(stopped), V(failed) or V(absent).
  returned: always
  type: str
progress:
  description: Fraction of the content this host has, 0.0 to 1.0.
  returned: success
  type: float
pid:
  description: Process id of the agent, when one runs.
  returned: when an agent runs
  type: int
listen_port:
  description: TCP port the agent accepts peers on (both address families).
  returned: when an agent ran
  type: int
  sample: 6881
downloaded:
  description: Payload bytes the agent downloaded.
  returned: when an agent ran
  type: int
uploaded:
  description: Payload bytes the agent uploaded to other peers.
  returned: when an agent ran
  type: int
size:
  description: Size of the content in bytes.
  returned: success
  type: int
ssl:
  description: Whether the torrent is an SSL torrent (data only over TLS between holders of the CA's certificates).
  returned: when O(torrent) is given
  type: bool
hash_failures:
  description: >-
    Pieces that failed the hash check and were fetched again. Corrupt data never
    reaches O(dest); a non-zero count means a peer sent bad data (a failing disk or
    memory on that peer, or an attacker).
  returned: when a piece failed its check
  type: int
banned_peers:
  description: Addresses of peers banned for sending data that failed the hash check.
  returned: when a peer was banned
  type: list
  elements: str
  sample: [10.0.0.7]
'''

import base64
import binascii
import os
import sys
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.p2p.swarm.plugins.module_utils import addresses
from ansible_collections.p2p.swarm.plugins.module_utils import agent as agent_lib
from ansible_collections.p2p.swarm.plugins.module_utils import fileops
from ansible_collections.p2p.swarm.plugins.module_utils import jobs
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


def write_torrent_content(module):
    """torrent_content given: keep it at torrent (only when it differs, and
    never in check mode, where a temporary copy is read instead)."""
    try:
        data = base64.b64decode(module.params['torrent_content'], validate=True)
    except (binascii.Error, ValueError) as exc:
        module.fail_json(msg='torrent_content is not base64: %s' % exc)
    path = module.params['torrent']
    if module.check_mode:
        path = os.path.join(module.tmpdir, 'check.torrent')
    elif os.path.isfile(path):
        with open(path, 'rb') as handle:
            if handle.read() == data:
                return path
    try:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        fileops.write_atomic(path, data, mode=0o644)
    except OSError as exc:
        module.fail_json(msg='cannot write torrent %s: %s' % (path, exc.strerror or exc))
    return path


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


def main():
    module = AnsibleModule(
        argument_spec=dict(
            torrent=dict(type='path'),
            dest=dict(type='path'),
            state=dict(type='str', default='present', choices=['present', 'seeding', 'stopped']),
            wait=dict(type='bool', default=True),
            stop_when_done=dict(type='bool', default=False),
            timeout=dict(type='int', default=1800),
            lifetime=dict(type='int', default=7200),
            linger=dict(type='int', default=300),
            tracker_grace=dict(type='int', default=60),
            peer_name=dict(type='str'),
            run_id=dict(type='str'),
            upload_rate_limit=dict(type='int', default=0),
            download_rate_limit=dict(type='int', default=0),
            listen_port=dict(type='int', default=0),
            preferred_port=dict(type='int', default=0),
            peers=dict(type='list', elements='str', default=[]),
            listen_address=dict(type='str', default='0.0.0.0'),
            state_dir=dict(type='path', default='/var/lib/p2p-swarm'),
            python=dict(type='path'),
            allowed_peers=dict(type='list', elements='str', default=[]),
            stripe_index=dict(type='int', default=0),
            stripe_count=dict(type='int', default=0),
            ssl_cert=dict(type='path'),
            ssl_key=dict(type='path'),
            torrent_content=dict(type='str'),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
        required_if=[('state', 'present', ('torrent', 'dest')), ('state', 'seeding', ('torrent', 'dest'))],
        required_together=[('torrent', 'dest')],
    )
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
    if module.params['state'] == 'present':
        check_dest(module, os.path.abspath(module.params['dest']))
    fetch = Fetch(module)
    getattr(fetch, module.params['state'])()


if __name__ == '__main__':
    main()

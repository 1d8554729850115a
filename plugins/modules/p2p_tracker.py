#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: p2p_tracker
short_description: Run the swarm's private BitTorrent tracker and register torrents on it
version_added: 0.1.0
description:
  - Starts or stops a small HTTP BitTorrent tracker (announce, scrape, JSON status,
    Prometheus metrics and a live HTML page) as a detached process on the target host.
  - The tracker only serves info-hashes registered with it. Registrations live in
    C(<state_dir>/torrents.json); the running tracker picks up changes within a second,
    and this module waits until the tracker reports them before returning.
  - The tracker is a standard-library-only Python script (C(tracker.py) and the
    C(tracker_*.py) files it imports) written into O(state_dir); the target needs
    Python 3.9 or later and nothing else. No systemd is needed or used.
  - A running tracker whose port, bind address, interval, interpreter or script
    differ from what the task asks for is restarted. Registrations and allow lists
    never restart it (they are per torrent and merge).
  - Runs share a tracker safely. With O(user), a registration is that user's claim
    (with its own allow list and a lease). Runs side by side, or slices of one run
    on several controllers, each add and later release their own claim. A torrent
    is served while one claim on it lasts.
  - Unless O(keep_running=true) was asked for once (a tracker run as a service),
    the tracker ends by itself when no registration is left.
author:
  - p2p.swarm contributors (@p2p-swarm)
extends_documentation_fragment:
  - p2p.swarm.action_group
options:
  state:
    description:
      - V(started) installs the tracker script, starts the tracker unless it already runs,
        and registers O(info_hashes).
      - V(registered) only registers O(info_hashes) with the tracker that runs in
        O(state_dir), and fails when none runs there.
      - V(released) drops the claims of O(user) (on O(info_hashes), or on every torrent
        when empty). A tracker without keep-running ends once nothing is registered.
      - V(stopped) stops the tracker if it runs and forgets O(keep_running). Registrations are left as they are.
    type: str
    choices: [started, registered, released, stopped]
    default: started
  port:
    description: TCP port the tracker listens on.
    type: int
    default: 6969
  bind_address:
    description:
      - Address the tracker listens on. V(0.0.0.0) means every IPv4 address;
        an IPv6 address (for example V(::)) makes it listen on IPv6.
    type: str
    default: 0.0.0.0
  state_dir:
    description:
      - Directory holding the tracker script, its pidfile, log file and C(torrents.json).
      - Created when missing.
    type: path
    default: /var/lib/p2p-swarm/tracker
  interval:
    description:
      - Announce interval (and minimum interval) in seconds handed to clients.
      - Short intervals let the controller see progress quickly; peers that
        have not announced for 3 x O(interval) + 5 seconds are considered gone.
    type: int
    default: 2
  info_hashes:
    description:
      - Torrents to register. Each item is either an info-hash as a hex string
        (40 hex digits for a v1 or hybrid torrent, 64 for a v2 torrent), or a
        dictionary with the keys C(info_hash) (required), C(info_hash_v2) (optional,
        the v2 hash of a hybrid torrent, so both announce forms land in one swarm),
        C(name) and C(size) (bytes, used for progress percentages).
      - A v2 hash also accepts announces made with its first 20 bytes, as
        BitTorrent v2 clients send them to trackers.
      - Merged with what is already registered unless O(exclusive=true).
      - Ignored when O(state=stopped).
    type: list
    elements: raw
    default: []
  user:
    description:
      - Who registers, for example a run's identifier. Its registrations become claims
        that O(state=released) with the same O(user) drops again, and that end after O(lease).
      - Empty, registrations are permanent.
    type: str
    default: ''
  lease:
    description:
      - Seconds a claim of O(user) lasts when it is never released (a run that was killed).
    type: int
    default: 7200
  keep_running:
    description:
      - V(true) keeps the tracker running with no registration (a tracker run as a service);
        it stays so until O(state=stopped).
      - V(false) lets it end by itself once the last registration is released or has run out.
    type: bool
    default: true
  exclusive:
    description:
      - When V(true), the registrations become exactly O(info_hashes) and every other
        registered torrent is dropped (its peers are forgotten by the tracker).
    type: bool
    default: false
  python:
    description:
      - Python 3 interpreter that runs the tracker.
      - Defaults to the interpreter running this module.
    type: path
  allowed_networks:
    description:
      - Addresses, networks (CIDR) or host names (resolved on the target) of
        the hosts that may announce for O(info_hashes). Everyone else gets a failure
        answer and never learns who is in the swarm. Each claim has its own list;
        a torrent admits the hosts of every claim on it.
      - C(/status.json), C(/metrics) and the page stay readable from anywhere
        the tracker's port can be reached (the controller reads the status).
      - Empty (the default) serves any address. The seeder role passes the
        addresses of the play's hosts.
    type: list
    elements: str
    default: []
notes:
  - The tracker logs one line when it starts and one when it stops to C(<state_dir>/tracker.log).
  - Status is served at C(/status.json), metrics at C(/metrics) and a live page at C(/).
  - Supports check mode, reporting whether the tracker would be started, restarted or
    stopped and whether registrations would change.
attributes:
  check_mode:
    description: Whether the task can run with C(--check) and report what it would change.
    support: full
  diff_mode:
    description: Whether the task can show a diff with C(--diff).
    support: none
seealso:
  - module: p2p.swarm.p2p_wait
'''

EXAMPLES = r'''
- name: Start the tracker and register a torrent
  p2p.swarm.p2p_tracker:
    state: started
    port: 6969
    info_hashes:
      - info_hash: "{{ torrent.info_hash }}"
        name: app-1.2.tar.gz
        size: "{{ torrent.size }}"
  register: tracker

- name: Register a bare info-hash and drop every other registration
  p2p.swarm.p2p_tracker:
    info_hashes:
      - 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b
    exclusive: true

- name: Watch the swarm in a browser
  ansible.builtin.debug:
    msg: "open http://{{ inventory_hostname }}:{{ tracker.port }}/"

- name: Claim a torrent for one run; the tracker ends once every claim is released
  p2p.swarm.p2p_tracker:
    info_hashes: ["{{ torrent.info_hash }}"]
    user: "{{ run_id }}"
    keep_running: false
    allowed_networks: ["10.1.0.0/24"]

- name: Release the run's claim
  p2p.swarm.p2p_tracker:
    state: released
    user: "{{ run_id }}"

- name: Stop the tracker
  p2p.swarm.p2p_tracker:
    state: stopped
'''

RETURN = r'''
pid:
  description: Process id of the running tracker, or null when it is stopped.
  returned: always
  type: int
  sample: 41234
started:
  description: Whether this task started (or restarted) the tracker.
  returned: always
  type: bool
  sample: true
port:
  description: Port the tracker listens on.
  returned: always
  type: int
  sample: 6969
bind_address:
  description: Address the tracker listens on.
  returned: always
  type: str
  sample: 0.0.0.0
announce_path:
  description: Path part of the announce URL, to append to C(http://<tracker address>:<port>).
  returned: always
  type: str
  sample: /announce
url:
  description:
    - Announce URL. Its host part is O(bind_address), or this host's name when the
      tracker listens on every address; build your own from RV(port) and RV(announce_path)
      when peers must use another address.
  returned: always
  type: str
  sample: http://tracker01:6969/announce
status_url:
  description: URL of the JSON status, with the same host part as RV(url).
  returned: always
  type: str
  sample: http://tracker01:6969/status.json
local_status_url:
  description: URL of the JSON status as reached from the tracker host itself.
  returned: always
  type: str
  sample: http://127.0.0.1:6969/status.json
registered:
  description: Info-hashes registered after this task (hex, sorted; v2 forms of hybrids included).
  returned: always
  type: list
  elements: str
  sample: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b]
added:
  description: Info-hashes this task registered (or would register in check mode).
  returned: always
  type: list
  elements: str
removed:
  description: Info-hashes this task dropped because of O(exclusive).
  returned: always
  type: list
  elements: str
state_dir:
  description: The tracker's state directory.
  returned: always
  type: str
  sample: /var/lib/p2p-swarm/tracker
log_file:
  description: Path of the tracker log.
  returned: always
  type: str
  sample: /var/lib/p2p-swarm/tracker/tracker.log
'''

import os
import platform
import sys
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.p2p.swarm.plugins.module_utils import addresses
from ansible_collections.p2p.swarm.plugins.module_utils import daemon
from ansible_collections.p2p.swarm.plugins.module_utils import locks
from ansible_collections.p2p.swarm.plugins.module_utils import tracker_registry as registry
from ansible_collections.p2p.swarm.plugins.module_utils.tracker_process import (
    TrackerError, install_scripts, local_base, probe_bind, read_cmdline, script_is_current, wait_until_serving)

STARTUP_TIMEOUT = 10.0
WILDCARDS = ('0.0.0.0', '::', '')


def resolve_allowed(module, names, result):
    """Collapsed networks for allowed_networks (names resolved here), or []."""
    if not names:
        return []
    try:
        networks, unresolved = addresses.resolve_networks(names)
    except addresses.AddressError as exc:
        module.fail_json(msg='allowed_networks: %s' % exc, **result)
    for name in unresolved:
        module.warn('allowed_networks: cannot resolve %s; left out' % name)
    if not networks:
        module.fail_json(msg='allowed_networks: none of %s resolves to an address' % ', '.join(names), **result)
    return list(addresses.collapse(networks))


def set_keep(state_dir, keep):
    path = os.path.join(state_dir, registry.KEEP_FILE)
    if keep:
        daemon.write_atomic(path, 'the tracker keeps running with no registration\n', mode=0o644)
    elif os.path.exists(path):
        os.unlink(path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='started', choices=['started', 'registered', 'released', 'stopped']),
            port=dict(type='int', default=6969),
            bind_address=dict(type='str', default='0.0.0.0'),
            state_dir=dict(type='path', default='/var/lib/p2p-swarm/tracker'),
            interval=dict(type='int', default=2),
            info_hashes=dict(type='list', elements='raw', default=[]),
            user=dict(type='str', default=''),
            lease=dict(type='int', default=7200),
            keep_running=dict(type='bool', default=True),
            exclusive=dict(type='bool', default=False),
            python=dict(type='path'),
            allowed_networks=dict(type='list', elements='str', default=[]),
        ),
        required_if=[('state', 'released', ('user',))],
        supports_check_mode=True,
    )
    p = module.params
    port, bind, state_dir = p['port'], p['bind_address'], p['state_dir']
    if not 1 <= port <= 65535:
        module.fail_json(msg='port must be between 1 and 65535, got %d' % port)
    if p['interval'] < 1:
        module.fail_json(msg='interval must be at least 1 second')

    script = os.path.join(state_dir, 'tracker.py')
    pidfile = os.path.join(state_dir, 'tracker.pid')
    log_path = os.path.join(state_dir, 'tracker.log')
    reg_path = os.path.join(state_dir, registry.FILE_NAME)
    public_host = bind if bind not in WILDCARDS else platform.node()
    public_base = 'http://%s:%d' % ('[%s]' % public_host if ':' in public_host else public_host, port)
    local_status_url = local_base(bind, port) + '/status.json'

    if not module.check_mode and p['state'] != 'stopped':
        try:
            if not os.path.isdir(state_dir):
                os.makedirs(state_dir, 0o755)
        except OSError as exc:
            module.fail_json(msg='cannot create %s on %s: %s' % (state_dir, platform.node(), exc))
    # Runs side by side (slices of one run start together) change the
    # registrations and start the tracker one at a time.
    with locks.locked(state_dir, 'tracker.lock', module.check_mode or p['state'] == 'stopped'):
        pid = daemon.read_pidfile(pidfile, script)
        current = registry.load(reg_path)
        result = dict(
            changed=False, started=False, pid=pid, port=port, bind_address=bind,
            announce_path='/announce', url=public_base + '/announce',
            status_url=public_base + '/status.json', local_status_url=local_status_url,
            registered=registry.hashes(current), added=[], removed=[],
            state_dir=state_dir, log_file=log_path,
        )

        if p['state'] == 'stopped':
            if pid is not None:
                result['changed'] = True
                if not module.check_mode:
                    daemon.stop(pid, script)
                    try:
                        os.unlink(pidfile)
                    except OSError:
                        pass
            if not module.check_mode:
                set_keep(state_dir, False)
            result['pid'] = None
            module.exit_json(**result)

        if p['state'] == 'released':
            try:
                wanted = registry.normalize(p['info_hashes']) if p['info_hashes'] else None
            except registry.RegistrationError as exc:
                module.fail_json(msg=str(exc), **result)
            merged = registry.release(current, p['user'], None if wanted is None else set(wanted))
        else:
            if p['state'] == 'registered' and pid is None:
                module.fail_json(msg='no tracker runs in %s on %s: start it first (the p2p.swarm.tracker role)'
                                 % (state_dir, platform.node()), **result)
            try:
                wanted = registry.normalize(p['info_hashes'])
            except registry.RegistrationError as exc:
                module.fail_json(msg=str(exc), **result)
            allowed = resolve_allowed(module, p['allowed_networks'], result)
            merged = registry.claim(current, wanted, user=p['user'], expires=time.time() + p['lease'],
                                    allowed=allowed, exclusive=p['exclusive'])
        before, after = set(registry.hashes(current)), set(registry.hashes(merged))
        result.update(registered=sorted(after), added=sorted(after - before), removed=sorted(before - after))
        # A renewed claim is no change: what the tracker serves stays the same.
        regs_changed = merged != current
        result['changed'] = before != after

        python = p['python'] or sys.executable
        argv = [python, '-I', script, '--bind', bind, '--port', str(port),
                '--state-dir', state_dir, '--interval', str(p['interval'])]
        start = p['state'] == 'started' and (
            pid is None or read_cmdline(pid) != argv or not script_is_current(script))
        restart = start and pid is not None
        keep_now = registry.keep_running(state_dir)
        result['started'] = start
        result['changed'] = result['changed'] or start or (p['state'] == 'started' and p['keep_running'] and not keep_now)
        if module.check_mode:
            module.exit_json(**result)
        if p['state'] == 'started' and not p['keep_running'] and not merged and pid is None:
            module.fail_json(msg='nothing to serve: a tracker with keep_running=false needs info_hashes', **result)

        try:
            if regs_changed:
                daemon.write_atomic(reg_path, registry.dumps(merged), mode=0o644)
            if p['state'] != 'started':
                module.exit_json(**result)
            if p['keep_running']:
                set_keep(state_dir, True)
            install_scripts(state_dir)
            if restart:
                daemon.stop(pid, script)
            if start:
                probe_bind(bind, port)
                try:
                    log_offset = os.path.getsize(log_path)
                except OSError:
                    log_offset = 0
                pid = daemon.spawn(argv, pidfile, log_path)
            else:
                log_offset = 0
            result['pid'] = pid
            if start or regs_changed:
                try:
                    wait_until_serving(pid, script, local_status_url, log_path, log_offset, port,
                                       result['registered'], STARTUP_TIMEOUT)
                except TrackerError:
                    if start:
                        daemon.stop(pid, script)
                        result['pid'] = None
                    raise
        except TrackerError as exc:
            module.fail_json(msg=str(exc), **result)
        except (IOError, OSError) as exc:
            module.fail_json(msg='cannot run the tracker in %s: %s' % (state_dir, exc), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# The work is done by the action plugin of the same name on the controller;
# this file only carries the documentation.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: p2p_wait
short_description: Wait on the controller until a swarm has delivered a torrent to every host
version_added: 0.1.0
description:
  - Polls the JSON status of a p2p.swarm tracker (see M(p2p.swarm.p2p_tracker)) until every
    expected host holds the complete torrent or has stopped, printing a progress line
    (hosts done, overall percent, aggregate download rate, slowest hosts) every few seconds.
  - Runs on the controller; nothing is executed on the managed hosts. Use it once per play
    (C(run_once=true)) after the agents were started in the background, so that every host
    downloads at once whatever the number of forks.
  - Hosts are recognized by the host name their agent adds to its announces
    (the C(p2p_host) announce parameter, set to the inventory hostname).
  - Fails when the timeout passes before every host finished (naming the hosts that did
    not, with their progress or C(never announced)), when a host stopped before it had the
    whole torrent, and when the tracker stayed unreachable.
author:
  - p2p.swarm contributors (@p2p-swarm)
extends_documentation_fragment:
  - p2p.swarm.controller_action
  - p2p.swarm.action_group
options:
  status_url:
    description: URL of the tracker's C(/status.json), as reachable from the controller.
    type: str
    required: true
  info_hash:
    description:
      - Info-hash of the torrent, in hex. The v1 hash, the v2 hash or its 40-digit
        truncation all match a hybrid torrent registered with both.
    type: str
    required: true
  hosts:
    description:
      - Inventory hostnames that must complete.
      - Give only the hosts whose agent was started for this torrent; an empty list
        returns at once.
    type: list
    elements: str
    required: true
  timeout:
    description:
      - Seconds to wait in total before failing.
      - V(0) looks once and reports.
    type: float
    default: 3600
  poll:
    description: Seconds between two polls of the tracker.
    type: float
    default: 1.0
  progress_every:
    description: Seconds between two progress lines.
    type: float
    default: 2.0
  size:
    description:
      - Size of the torrent content in bytes, used for percentages.
      - Defaults to the size registered with the tracker; without either, a host's
        percentage comes from the bytes it downloaded and has left.
    type: int
  stale_grace:
    description:
      - A host whose last record on the tracker says it stopped before the wait began
        (for example a failed earlier run) is given this many seconds to announce again
        before it counts as stopped.
    type: float
    default: 60
  announce_grace:
    description:
      - Seconds into the wait after which a host the tracker has never heard of counts
        as failed, so the wait ends without it instead of running into O(timeout).
        A download agent that cannot reach the tracker gives up by itself after its
        O(p2p.swarm.p2p_fetch#module:tracker_grace) (60 s by default); the peer role
        passes that plus 30 s. V(0) waits for such a host until O(timeout).
    type: float
    default: 120
  tracker_lost_after:
    description:
      - Seconds the tracker may stay unreachable (refused, timed out, not a tracker's answer)
        before the wait gives up, naming the tracker and the hosts that finished, instead of
        running into O(timeout). The clock restarts at every answer. V(0) waits until O(timeout).
    type: float
    default: 60
notes:
  - Peers that have not announced for 3 x the tracker interval + 5 seconds show as
    C(expired); they are waited for (they may come back) and named on timeout.
  - In check mode the status is read once and reported without failing.
attributes:
  check_mode:
    description: Whether the task can run with C(--check); here it reads the status once instead of waiting.
    support: full
seealso:
  - module: p2p.swarm.p2p_tracker
'''

EXAMPLES = r'''
- name: Wait until every web server holds the release
  p2p.swarm.p2p_wait:
    status_url: "http://{{ tracker_host }}:6969/status.json"
    info_hash: "{{ torrent.info_hash }}"
    hosts: "{{ ansible_play_hosts }}"
    timeout: 1800
  run_once: true
  register: swarm

- name: Show how long the slowest host took
  ansible.builtin.debug:
    msg: "p50 {{ swarm.p50 }} s, p99 {{ swarm.p99 }} s, max {{ swarm.max }} s"
  run_once: true
'''

RETURN = r'''
elapsed:
  description: Seconds spent waiting.
  returned: always
  type: float
  sample: 14.2
name:
  description: Name of the torrent as registered with the tracker.
  returned: when the tracker answered
  type: str
  sample: app-1.2.tar.gz
complete_hosts:
  description: Hosts that hold the complete torrent.
  returned: always
  type: list
  elements: str
  sample: [web01, web02]
incomplete_hosts:
  description: Hosts still downloading, lost (expired) or that never announced.
  returned: always
  type: list
  elements: str
  sample: [web03]
stopped_hosts:
  description: Hosts whose agent stopped before it had the whole torrent.
  returned: always
  type: list
  elements: str
  sample: []
never_announced:
  description: Expected hosts the tracker has no record of.
  returned: always
  type: list
  elements: str
  sample: []
per_host:
  description:
    - Per expected host, C(state) (V(complete), V(downloading), V(stopped), V(expired)
      or V(never announced)), C(percent), C(completed_at) (seconds after the wait
      started, 0 if it was complete before) and C(download_seconds) (from the host's
      first announce to completion).
  returned: always
  type: dict
  sample:
    web01: {state: complete, percent: 100.0, completed_at: 11.8, download_seconds: 12.4}
    web03: {state: downloading, percent: 51.0, completed_at: null, download_seconds: null}
p50:
  description: Median of the completion times (C(completed_at)) of the complete hosts, in seconds.
  returned: always
  type: float
  sample: 10.9
p99:
  description: 99th percentile (nearest rank) of the completion times, in seconds.
  returned: always
  type: float
  sample: 12.3
max:
  description: Latest completion time, in seconds.
  returned: always
  type: float
  sample: 12.6
'''

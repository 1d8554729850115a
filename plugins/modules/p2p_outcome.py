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
module: p2p_outcome
short_description: A host's download outcome as its swarm agent reported it through the tracker
version_added: 0.1.0
description:
  - Turns what a host's agent reported to the tracker (collected by M(p2p.swarm.p2p_wait)) into
    that host's task result, on the controller, without connecting to the host.
  - V(changed) when the agent placed the verified file; failed, naming the cause, when the agent
    reported a failure. When the swarm has no outcome for the host (it never reached the tracker,
    or the wait ended before it finished) the result says C(confirmed=false), and the host itself
    should be asked with M(p2p.swarm.p2p_fetch) (O(p2p.swarm.p2p_fetch#module:wait=true)).
author:
  - p2p.swarm contributors (@p2p-swarm)
options:
  start:
    description: The registered result of the M(p2p.swarm.p2p_fetch) call that started this host's agent.
    type: dict
    required: true
  swarm:
    description: The registered result of M(p2p.swarm.p2p_wait) for the torrent; empty when no wait ran.
    type: dict
    default: {}
  host:
    description: Inventory name the agent announced under; defaults to the current host.
    type: str
extends_documentation_fragment:
  - p2p.swarm.controller_action
seealso:
  - module: p2p.swarm.p2p_wait
  - module: p2p.swarm.p2p_fetch
'''

EXAMPLES = r'''
- name: Start the download on every host
  p2p.swarm.p2p_fetch:
    torrent: /var/lib/p2p-swarm/torrents/app.torrent
    dest: /opt/app.tar.gz
    wait: false
  register: started

- name: Wait for the swarm
  p2p.swarm.p2p_wait:
    status_url: "http://{{ tracker_host }}:6969/status.json"
    info_hash: "{{ started.info_hash }}"
    hosts: "{{ ansible_play_hosts }}"
  run_once: true
  failed_when: false
  register: swarm

- name: Report each host's outcome
  p2p.swarm.p2p_outcome:
    start: "{{ started }}"
    swarm: "{{ swarm }}"
  register: outcome
'''

RETURN = r'''
confirmed:
  description: Whether the outcome is known without asking the host.
  returned: always
  type: bool
  sample: true
status:
  description: V(placed), V(failed), or the start's status when nothing was started (V(complete), V(absent)).
  returned: always
  type: str
  sample: placed
swarm_state:
  description: The host's state in the swarm wait when the outcome is not confirmed.
  returned: when confirmed is false
  type: str
  sample: never announced
'''

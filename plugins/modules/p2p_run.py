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
module: p2p_run
short_description: Start a p2p.swarm run on the controller
version_added: 0.1.0
description:
  - Picks the run's identifier (the fact C(p2p_run_id)), which names its certificates, and the name of
    its claim on the tracker (the fact C(p2p_claim_id)), the same for the same command run again from
    this controller (so a rerun after a killed run releases what that run left), different for another
    file, destination or slice of hosts (so runs side by side keep their own).
  - Refuses a play with C(strategy=free) in one line before anything runs, because the roles do
    their seeder and tracker steps once per play (C(run_once)), which that strategy runs on every host.
  - The peer role calls it first, once per play.
author:
  - p2p.swarm contributors (@p2p-swarm)
options:
  run_id:
    description: Use this identifier instead of a new random one.
    type: str
    default: ''
  claim_key:
    description: What, besides the controller and the play's hosts, tells this run's claim from others (seeder, file, destination).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - p2p.swarm.controller_action
seealso:
  - module: p2p.swarm.p2p_tracker
'''

EXAMPLES = r'''
- name: Start the run
  p2p.swarm.p2p_run:
    claim_key: [build01, /build/app.tar.gz, /opt/app.tar.gz]
  run_once: true
'''

RETURN = r'''
run_id:
  description: The run's identifier, also set as the fact C(p2p_run_id).
  returned: always
  type: str
  sample: 4k2v9x0q1m7a
claim_id:
  description: The name of the run's claim on the tracker, also set as the fact C(p2p_claim_id).
  returned: always
  type: str
  sample: run-3f9a0c2b7d1e4a65
strategy:
  description: The play's strategy.
  returned: always
  type: str
  sample: linear
'''

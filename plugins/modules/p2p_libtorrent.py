#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: p2p_libtorrent
short_description: Find an interpreter that imports libtorrent, or install libtorrent from a wheel
version_added: 0.1.0
description:
  - Looks for an interpreter on the host that imports libtorrent 2.0.5 or later, trying
    O(python), the interpreter of O(venv), the interpreter running this module and
    C(/usr/bin/python3) in that order.
  - With O(state=present) and none found, installs libtorrent into O(venv) from the wheel
    O(wheel) (a file on the host) or from the package index O(index_url). It needs neither
    pip nor the venv module, which bare Debian and Ubuntu hosts do not have; the
    environment is a C(pyvenv.cfg) and a link to the interpreter running this module, and
    the wheel is unpacked into its site-packages. The environment does not see the
    system's packages, so an older system libtorrent cannot shadow the installed one.
  - With O(state=probe) it only looks, and also picks, from O(wheels), the wheel file name
    that fits the host's Python version, machine and C library, for the controller to copy.
  - Part of the p2p.swarm collection; the peer role's C(libtorrent) entry point runs it.
author:
  - p2p.swarm contributors (@p2p-swarm)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The interpreters are probed; nothing is downloaded or written.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  state:
    description:
      - V(probe) only looks for libtorrent and never changes anything.
      - V(present) installs libtorrent into O(venv) when no interpreter imports it.
    type: str
    choices: [probe, present]
    default: probe
  python:
    description: Interpreters to try first.
    type: list
    elements: path
    default: []
  venv:
    description: Environment that libtorrent is installed into, and whose interpreter is tried.
    type: path
    default: /opt/p2p-swarm/venv
  wheel:
    description: A libtorrent wheel on the host to install with O(state=present).
    type: path
  index_url:
    description:
      - PEP 503 package index to download the wheel from with O(state=present), when O(wheel) is not given.
      - Empty with no O(wheel) fails on a host without libtorrent.
    type: str
    default: ''
  wheels:
    description: Wheel file names (on the controller) to pick the one for this host from.
    type: list
    elements: str
    default: []
  link_venv:
    description:
      - With O(state=present), when the interpreter found is not the one of O(venv) (a system
        libtorrent), make O(venv) a thin environment on top of it that sees the system's
        packages, so that later runs find libtorrent at the interpreter of O(venv) at once.
      - Only for the interpreter running this module; others are left as they are.
    type: bool
    default: false
  min_version:
    description: Oldest libtorrent accepted. Older ones count as missing and are reported by version.
    type: str
    default: 2.0.5
'''

EXAMPLES = r'''
- name: Find libtorrent, or say which wheel this host needs
  p2p.swarm.p2p_libtorrent:
    state: probe
    wheels: "{{ lookup('ansible.builtin.fileglob', '/srv/wheels/libtorrent-*.whl', wantlist=True) | map('basename') }}"
  register: found

- name: Install it from the package index when it is missing
  p2p.swarm.p2p_libtorrent:
    state: present
    index_url: https://pypi.org/simple/
'''

RETURN = r'''
found:
  description: Whether an interpreter imports libtorrent O(min_version) or later (after installing, with O(state=present)).
  returned: always
  type: bool
python:
  description: That interpreter; empty when none.
  returned: always
  type: str
  sample: /opt/p2p-swarm/venv/bin/python
version:
  description: Its libtorrent version; empty when none.
  returned: always
  type: str
  sample: 2.1.1.0
problem:
  description: When no interpreter will do, one line saying what was tried or found.
  returned: always
  type: str
  sample: 'no libtorrent 2.0.5 or later (found: /usr/bin/python3 has 1.2.19.0)'
too_old:
  description: Interpreters that import a libtorrent older than O(min_version), with the version.
  returned: always
  type: dict
host_python:
  description: The interpreter running the module, as a wheel must match it.
  returned: always
  type: dict
  sample: {tag: cp311, version: 3.11.2, machine: x86_64, glibc: '2.36'}
wheel:
  description: With O(wheels), the one that fits this host; empty when none does.
  returned: always
  type: str
source:
  description: What was (or in check mode would be) installed from, with O(state=present); empty when nothing was.
  returned: always
  type: str
'''

import os
import shutil
import sys
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.p2p.swarm.plugins.module_utils import versions
from ansible_collections.p2p.swarm.plugins.module_utils import wheels


def candidates(module):
    p = module.params
    found = []
    for python in list(p['python']) + [wheels.venv_python(p['venv']), sys.executable, '/usr/bin/python3']:
        if python not in found:
            found.append(python)
    return found


def find(module):
    """(python, version, too_old) of the first good candidate."""
    old = {}
    for python in candidates(module):
        version = wheels.probe(python)
        if version and versions.too_old(version, module.params['min_version']):
            old[python] = version
        elif version:
            return python, version, old
    return '', '', old


def problem(module, old):
    """One line: why no interpreter will do."""
    found = ', '.join('%s has %s' % item for item in sorted(old.items()))
    return 'no libtorrent %s or later (%s)' % (
        module.params['min_version'],
        'found: %s' % found if found else 'tried: %s' % ', '.join(candidates(module)))


def link_venv(module, python, host, result):
    """Point venv at the system interpreter that imports libtorrent."""
    venv = module.params['venv']
    if python == wheels.venv_python(venv) or os.path.realpath(python) != os.path.realpath(sys.executable):
        return
    if wheels.probe(wheels.venv_python(venv)) == result['version']:   # linked before
        result['python'] = wheels.venv_python(venv)
        return
    result.update(changed=True, source=python)
    if not module.check_mode:
        try:
            wheels.make_venv(venv, sys.executable, host, system_site_packages=True)
        except OSError as exc:
            module.fail_json(msg='cannot make %s: %s' % (venv, exc), **result)
        if wheels.probe(wheels.venv_python(venv)) == result['version']:
            result['python'] = wheels.venv_python(venv)


def install(module, host):
    """Install from the wheel or the index; returns the source it used."""
    p = module.params
    if p['wheel']:
        if module.check_mode:   # a copy task in check mode did not put it there
            return p['wheel']
        if not os.path.isfile(p['wheel']):
            raise wheels.WheelError('wheel %s is not on the host' % p['wheel'])
        wheels.install_wheel(p['wheel'], p['venv'], sys.executable, host)
        return p['wheel']
    if not p['index_url']:
        raise wheels.WheelError('no wheel and no package index given')
    url, sha256 = wheels.index_wheel(p['index_url'], host)
    if module.check_mode:
        return url
    scratch = tempfile.mkdtemp(prefix='p2p-wheel-')
    try:
        wheels.install_wheel(wheels.download(url, sha256, scratch), p['venv'], sys.executable, host)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return url


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='probe', choices=['probe', 'present']),
            python=dict(type='list', elements='path', default=[]),
            venv=dict(type='path', default='/opt/p2p-swarm/venv'),
            wheel=dict(type='path'),
            index_url=dict(type='str', default=''),
            wheels=dict(type='list', elements='str', default=[]),
            link_venv=dict(type='bool', default=False),
            min_version=dict(type='str', default=versions.MIN_VERSION),
        ),
        supports_check_mode=True,
    )
    host = wheels.host_python()
    python, version, old = find(module)
    result = dict(changed=False, found=bool(python), python=python, version=version, too_old=old,
                  problem='' if python else problem(module, old), host_python=host,
                  wheel=wheels.pick_wheel(module.params['wheels'], host) or '', source='')
    if python and module.params['state'] == 'present' and module.params['link_venv']:
        link_venv(module, python, host, result)
    if python or module.params['state'] == 'probe':
        module.exit_json(**result)
    try:
        result['source'] = install(module, host)
    except (wheels.WheelError, OSError) as exc:
        module.fail_json(msg='cannot install libtorrent for %s: %s' % (wheels.describe_host(host), exc), **result)
    result['changed'] = True
    if module.check_mode:
        module.exit_json(msg='would install libtorrent from %s' % result['source'], **result)
    python = wheels.venv_python(module.params['venv'])
    version = wheels.probe(python)
    if not version or versions.too_old(version, module.params['min_version']):
        module.fail_json(msg='libtorrent installed from %s into %s but %s' % (
            result['source'], module.params['venv'],
            'it is %s, older than %s' % (version, module.params['min_version']) if version
            else '%s cannot import it' % python), **result)
    result.update(found=True, python=python, version=version)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: p2p_certificate
short_description: Make a swarm CA and certificates signed by it, for SSL torrents
version_added: 0.1.0
description:
  - Creates, on the host where it runs, a certificate authority (an EC P-256 key and a
    self-signed certificate) at O(ca_key) and O(ca_cert) when they do not exist yet.
  - With O(cert) and O(key), also creates a key and a certificate signed by that CA,
    for one host of an authenticated swarm. Its subjectAltName holds the DNS entries
    O(dns_names); libtorrent accepts a certificate for an SSL torrent whose name is one
    of them, and V(*) stands for any torrent of the CA.
  - The CA certificate goes into the torrent (M(p2p.swarm.p2p_torrent) O(p2p.swarm.p2p_torrent#module:ssl_ca_cert)),
    each host's certificate and key to its agent (M(p2p.swarm.p2p_fetch)
    O(p2p.swarm.p2p_fetch#module:ssl_cert), O(p2p.swarm.p2p_fetch#module:ssl_key)). The
    peer role runs it on the controller with a new CA for every run.
  - Existing files are kept when they fit together (the certificate signed by the CA,
    the key matching the certificate); otherwise the host's key and certificate are made
    again. Keys are written with mode C(0600), certificates C(0644), each through a
    temporary file renamed into place.
author:
  - p2p.swarm contributors (@p2p-swarm)
requirements:
  - the C(cryptography) Python package (ansible-core depends on it, so the controller has it)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would be created; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  ca_key:
    description:
      - Path of the CA's private key. Created with the CA when neither it nor O(ca_cert) exists.
    type: path
    required: true
  ca_cert:
    description: Path of the CA's certificate (PEM).
    type: path
    required: true
  ca_name:
    description: Common name of a new CA.
    type: str
    default: p2p.swarm run CA
  cert:
    description:
      - Path of the host certificate to create (PEM). Give it with O(key), or neither
        to only make sure the CA exists.
    type: path
  key:
    description: Path of the host's private key (PEM, unencrypted).
    type: path
  common_name:
    description:
      - Common name of the host certificate, for the logs; libtorrent does not check it.
      - Defaults to the name of the host the module runs on.
    type: str
  dns_names:
    description:
      - subjectAltName DNS entries of the host certificate. libtorrent accepts the
        certificate for an SSL torrent whose name is one of them.
      - V(*) (the default) is valid for every torrent with this CA's certificate.
    type: list
    elements: str
    default: ['*']
  days:
    description: Validity of new certificates, in days (from an hour ago, for skewed clocks).
    type: int
    default: 30
notes:
  - The directories of the paths must exist.
  - Anyone holding the CA key can make certificates that join the swarm; keep it on the
    controller and remove it once the certificates are made.
seealso:
  - module: p2p.swarm.p2p_torrent
  - module: p2p.swarm.p2p_fetch
'''

EXAMPLES = r'''
- name: Make the run's CA and a certificate for each host, on the controller
  p2p.swarm.p2p_certificate:
    ca_key: /home/ops/.cache/p2p-swarm/run1/ca.key
    ca_cert: /home/ops/.cache/p2p-swarm/run1/ca.pem
    cert: "/home/ops/.cache/p2p-swarm/run1/{{ inventory_hostname }}.pem"
    key: "/home/ops/.cache/p2p-swarm/run1/{{ inventory_hostname }}.key"
    common_name: "{{ inventory_hostname }}"
  delegate_to: localhost

- name: Only make sure a CA exists
  p2p.swarm.p2p_certificate:
    ca_key: /etc/p2p-swarm/ca.key
    ca_cert: /etc/p2p-swarm/ca.pem
'''

RETURN = r'''
ca_cert:
  description: Path of the CA certificate.
  returned: success
  type: str
ca_created:
  description: Whether a new CA was made (or would be, in check mode).
  returned: success
  type: bool
cert:
  description: Path of the host certificate.
  returned: when O(cert) is given
  type: str
cert_created:
  description: Whether the host's key and certificate were made (or would be, in check mode).
  returned: success
  type: bool
dns_names:
  description: subjectAltName DNS entries of the host certificate.
  returned: when O(cert) is given
  type: list
  elements: str
  sample: ['*']
'''

import os
import socket

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.p2p.swarm.plugins.module_utils import swarm_ca


def check_dirs(module, paths):
    for path in paths:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            module.fail_json(msg='directory %s for %s does not exist' % (parent, path))


def host_cert_usable(p):
    """The host's files exist, fit together and the cert was signed by this CA."""
    if not (os.path.isfile(p['cert']) and os.path.isfile(p['key'])):
        return False
    try:
        return (swarm_ca.signed_by(p['cert'], p['ca_cert']) and swarm_ca.key_matches(p['cert'], p['key'])
                and sorted(swarm_ca.dns_names(p['cert'])) == sorted(p['dns_names']))
    except (ValueError, TypeError, OSError):
        return False   # unreadable or not PEM: made again


def run_module(module):
    p = module.params
    if bool(p['cert']) != bool(p['key']):
        module.fail_json(msg='cert and key go together: give both or neither')
    if not p['dns_names'] or not all(p['dns_names']):
        module.fail_json(msg='dns_names must hold at least one non-empty name ("*" for any torrent)')
    if p['days'] < 1:
        module.fail_json(msg='days must be at least 1')
    check_dirs(module, [p['ca_key'], p['ca_cert']] + ([p['cert'], p['key']] if p['cert'] else []))

    have_key, have_cert = os.path.exists(p['ca_key']), os.path.exists(p['ca_cert'])
    if have_key != have_cert:
        module.fail_json(msg='the CA is half there: %s exists but %s does not; remove it to make a new CA'
                         % ((p['ca_key'], p['ca_cert']) if have_key else (p['ca_cert'], p['ca_key'])))
    result = dict(changed=False, ca_cert=p['ca_cert'], ca_created=not have_key, cert_created=False)
    if p['cert']:
        result.update(cert=p['cert'], dns_names=p['dns_names'])
        # With a new CA every host certificate is new too.
        result['cert_created'] = result['ca_created'] or not host_cert_usable(p)
    result['changed'] = result['ca_created'] or result['cert_created']
    if module.check_mode or not result['changed']:
        module.exit_json(**result)

    try:
        if result['ca_created']:
            swarm_ca.make_ca(p['ca_key'], p['ca_cert'], common_name=p['ca_name'], days=p['days'])
        if result['cert_created']:
            swarm_ca.make_host_cert(p['ca_key'], p['ca_cert'], p['key'], p['cert'],
                                    p['common_name'] or socket.gethostname(),
                                    dns_names=p['dns_names'], days=p['days'])
    except (IOError, OSError) as exc:
        module.fail_json(msg='cannot write %s: %s' % (getattr(exc, 'filename', None) or 'the files',
                                                      getattr(exc, 'strerror', None) or exc), **result)
    except ValueError as exc:   # a CA key or certificate that does not parse
        module.fail_json(msg='cannot use the CA %s / %s: %s' % (p['ca_cert'], p['ca_key'], exc), **result)
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ca_key=dict(type='path', required=True, no_log=False),
            ca_cert=dict(type='path', required=True),
            ca_name=dict(type='str', default='p2p.swarm run CA'),
            cert=dict(type='path'),
            key=dict(type='path', no_log=False),
            common_name=dict(type='str'),
            dns_names=dict(type='list', elements='str', default=['*']),
            days=dict(type='int', default=30),
        ),
        supports_check_mode=True,
        required_together=[('cert', 'key')],
    )
    if not swarm_ca.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib('cryptography'), exception=swarm_ca.CRYPTOGRAPHY_IMPORT_ERROR)
    run_module(module)


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: p2p_archive
short_description: Pack a directory into a deterministic tar, to distribute it as one file
version_added: 0.1.0
description:
  - Packs the directory O(path) on the target host (the seeder) into an uncompressed tar
    file C(<cache_dir>/<name>), which the swarm then distributes like any file and
    M(p2p.swarm.p2p_unpack) extracts on each host.
  - The tar is deterministic. Entries are in sorted order (depth first, the top
    directory first as C(.)); each keeps its permission bits and its modification time
    in whole seconds; owner and group are dropped (uid and gid 0, no names), since the
    owner of the extracted tree is chosen where it is extracted. The same tree therefore
    always gives the same bytes, the same torrent and the same info-hash.
  - Regular files, directories and symbolic links are packed. Devices, fifos and sockets
    are refused, and so are symbolic links that point outside the directory (absolute
    targets, or relative ones climbing out with C(..)). Hard links are stored as separate
    files.
  - The module is idempotent. The tar is written to a temporary file beside its final
    name and renamed into place only when its content differs; otherwise the existing
    file is left alone, modification time included, and the module reports no change.
  - Part of the p2p.swarm collection; the peer role runs it on the seeder when
    C(p2p_file) is a directory.
author:
  - p2p.swarm contributors (@p2p-swarm)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The tar is computed (every file is read) to tell whether it would change, but nothing is written.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description:
      - The directory to pack, on the target host. If it is a symbolic link it is followed.
    type: path
    required: true
  cache_dir:
    description:
      - Directory where the tar is written. It is created (mode C(0755)) when missing.
    type: path
    default: /var/lib/p2p-swarm/cache
  name:
    description:
      - File name of the tar inside O(cache_dir). Default C(<base name of path>.tar).
      - A plain name, without C(/).
    type: str
notes:
  - The tar is not compressed; the swarm checks every piece, and most payloads worth
    distributing this way (packages, images, model weights) are compressed already.
  - The cache keeps one tar per name. It takes as much space as the directory.
seealso:
  - module: p2p.swarm.p2p_unpack
  - module: p2p.swarm.p2p_torrent
'''

EXAMPLES = r'''
- name: Pack a release directory on the seeder
  p2p.swarm.p2p_archive:
    path: /build/app-1.2
  register: packed

- name: Make a torrent of the tar
  p2p.swarm.p2p_torrent:
    path: "{{ packed.archive }}"
    dest: /var/lib/p2p-swarm/torrents/
    trackers:
      - http://10.0.0.1:6969/announce

- name: Pack into another cache directory under another name
  p2p.swarm.p2p_archive:
    path: /srv/models/llm-7b
    cache_dir: /data/p2p-cache
    name: llm-7b-nightly.tar
'''

RETURN = r'''
changed:
  description: Whether the tar was written (or would be, in check mode), that is, whether its content changed.
  returned: always
  type: bool
  sample: false
archive:
  description: Path of the tar.
  returned: success
  type: str
  sample: /var/lib/p2p-swarm/cache/app-1.2.tar
sha256:
  description: SHA-256 of the tar's bytes.
  returned: success
  type: str
  sample: 9f2c3f9b1c7d0a7e8d3b1f5a6c4e2d0b9a8f7e6d5c4b3a29180706f5e4d3c2b1
size:
  description: Size of the tar in bytes.
  returned: success
  type: int
  sample: 10485760
entries:
  description: Number of entries in the tar (the top directory, directories, files and symbolic links).
  returned: success
  type: int
  sample: 42
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.p2p.swarm.plugins.module_utils import archive


def run_module(module):
    p = module.params
    src = p['path']
    if not os.path.exists(src):
        module.fail_json(msg='path %s does not exist' % src)
    if not os.path.isdir(src):
        module.fail_json(msg='path %s is not a directory' % src)
    name = p['name'] or os.path.basename(os.path.realpath(src).rstrip('/')) + '.tar'
    if '/' in name or name in ('', '.', '..'):
        module.fail_json(msg="name %r must be a plain file name" % name)
    dest = os.path.join(p['cache_dir'], name)
    result = dict(changed=False, archive=dest)
    if not os.path.isdir(p['cache_dir']):
        if module.check_mode:
            result['changed'] = True
        else:
            try:
                os.makedirs(p['cache_dir'], 0o755)
            except OSError as exc:
                module.fail_json(msg='cannot create cache_dir %s: %s' % (p['cache_dir'], exc.strerror or exc), **result)
    try:
        if module.check_mode and not os.path.isdir(p['cache_dir']):
            outcome = dict(archive.pack_digest(src), changed=True)
        else:
            outcome = archive.pack_to_file(src, dest, check_mode=module.check_mode)
    except archive.ArchiveError as exc:
        module.fail_json(msg=str(exc), **result)
    except (IOError, OSError) as exc:
        module.fail_json(msg='cannot pack %s into %s: %s: %s' % (src, dest, getattr(exc, 'filename', None) or '',
                                                                 getattr(exc, 'strerror', None) or exc), **result)
    result.update(outcome)
    result['changed'] = result['changed'] or outcome['changed']
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            cache_dir=dict(type='path', default='/var/lib/p2p-swarm/cache'),
            name=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    run_module(module)


if __name__ == '__main__':
    main()

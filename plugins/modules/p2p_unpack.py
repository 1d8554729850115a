#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: p2p_unpack
short_description: Extract a verified archive into a directory, safely and atomically
version_added: 0.1.0
description:
  - Extracts the archive O(src) (a tar, plain or compressed with gzip, bzip2 or xz, or a
    zip file) into the directory O(dest) on the target host. The peer role runs it on each
    host after the swarm has placed and verified the archive.
  - Every member is checked before anything is written. Absolute names, names with
    C(..), devices and fifos, symbolic links pointing outside O(dest) and hard links to
    anything but an earlier regular file of the archive are refused, with an error naming
    the member. Nothing is ever written through a symbolic link.
  - The tree is built in a hidden directory beside O(dest) (C(.<name>.p2p-tmp-*)) and
    renamed into place when complete. An existing O(dest) directory is renamed aside, the
    new tree renamed in, and the old one removed; if any step fails, O(dest) is left as
    it was and the hidden directory is removed. O(dest) is replaced whole, so files that
    are not in the archive do not survive.
  - Files and directories get the permission bits and modification times stored in the
    archive, without set-user-ID and set-group-ID bits. The top directory gets O(mode),
    else the mode of the archive's C(.) entry, else C(0755).
  - The module is idempotent. After extracting it writes a stamp under O(state_dir)
    recording O(dest), the archive's identity (O(archive_id), else the SHA-256 of O(src)),
    O(owner), O(group), O(mode) and the inode of O(dest). When all still match, it reports
    no change and extracts nothing.
author:
  - p2p.swarm contributors (@p2p-swarm)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - p2p.swarm.state_dir
attributes:
  check_mode:
    support: full
    details: Checks the archive's members and reports whether O(dest) would be replaced; writes nothing.
  diff_mode:
    support: partial
    details: Shows the archive identity O(dest) was extracted from before and after.
  platform:
    platforms: posix
options:
  src:
    description:
      - Path of the archive on the target host.
      - Its format is found from its content, not its name.
    type: path
    required: true
  dest:
    description:
      - The directory to extract into. Its parent directory must exist.
      - If it exists it must be a directory (not a symbolic link); it is replaced whole.
    type: path
    required: true
  owner:
    description:
      - Owner (name or number) of the whole extracted tree. Unset keeps the user the module runs as.
      - Owners stored in the archive are never used.
    type: str
  group:
    description: Group (name or number) of the whole extracted tree. Unset keeps the user's group.
    type: str
  mode:
    description:
      - Permissions of the top directory O(dest), in octal such as V(0755). Quote it in YAML.
      - Unset uses the mode of the archive's C(.) entry, or V(0755) when it has none.
      - The modes of everything below come from the archive.
    type: str
  archive_id:
    description:
      - An identity of the archive to record in the stamp, such as the torrent's
        info-hash, so that a rerun does not need to read O(src) to compute its SHA-256.
      - Unset uses the SHA-256 of O(src).
    type: str
  force:
    description:
      - Extract even when the stamp says O(dest) already holds this archive.
      - The stamp cannot see edits made inside O(dest) after the extraction; use this to undo them.
    type: bool
    default: false
notes:
  - Between the two renames there is an instant in which O(dest) does not exist; readers
    never see a half-extracted tree.
  - The hidden directory is on the same file system as O(dest), which needs room for
    both trees while the new one is built.
seealso:
  - module: p2p.swarm.p2p_archive
  - module: p2p.swarm.p2p_fetch
'''

EXAMPLES = r'''
- name: Extract the release the swarm placed in the cache
  p2p.swarm.p2p_unpack:
    src: /var/lib/p2p-swarm/cache/app-1.2.tar
    dest: /opt/app
    owner: app
    group: app
    mode: "0750"

- name: Extract a deploy tarball, identified by its torrent's info-hash
  p2p.swarm.p2p_unpack:
    src: /var/lib/p2p-swarm/cache/site.tar.gz
    dest: /srv/www/site
    archive_id: "{{ torrent.info_hash }}"
'''

RETURN = r'''
changed:
  description: Whether O(dest) was replaced (or would be, in check mode).
  returned: always
  type: bool
  sample: true
dest:
  description: The directory extracted into.
  returned: success
  type: str
  sample: /opt/app
archive_id:
  description: The identity recorded for the archive (O(archive_id) or the SHA-256 of O(src)).
  returned: success
  type: str
  sample: 0f2a4c1d7e3b5a69880c1d2e3f4a5b6c7d8e9f01
members:
  description: Number of archive members extracted (or checked, in check mode). V(0) when nothing was done.
  returned: success
  type: int
  sample: 42
stamp:
  description: Path of the stamp file.
  returned: success
  type: str
  sample: /var/lib/p2p-swarm/unpacked/5d41402abc4b2a76b9719d911017c592.json
'''

import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.p2p.swarm.plugins.module_utils import archive
from ansible_collections.p2p.swarm.plugins.module_utils import fileops


def stamp_path(state_dir, dest):
    return os.path.join(state_dir, 'unpacked', hashlib.sha1(dest.encode('utf-8')).hexdigest() + '.json')


def read_stamp(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def write_stamp(path, data):
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    fileops.write_atomic(path, json.dumps(data, sort_keys=True), mode=0o644)


def run_module(module):
    p = module.params
    src, dest = p['src'], os.path.abspath(p['dest']).rstrip('/') or '/'
    result = dict(changed=False, dest=dest, members=0)
    if not os.path.isfile(src):
        module.fail_json(msg='archive %s does not exist or is not a regular file' % src, **result)
    if not os.path.isdir(os.path.dirname(dest)):
        module.fail_json(msg='dest parent %s does not exist' % os.path.dirname(dest), **result)
    if os.path.lexists(dest) and (os.path.islink(dest) or not os.path.isdir(dest)):
        module.fail_json(msg='dest %s exists and is not a directory' % dest, **result)
    mode = fileops.octal_mode(p['mode'])
    if p['mode'] is not None and (mode is None or not 0 <= mode <= 0o7777):
        module.fail_json(msg="mode %r is not an octal mode such as '0755'" % p['mode'], **result)
    try:
        uid = fileops.resolve_uid(p['owner'])
    except KeyError:
        module.fail_json(msg="owner '%s' does not exist on this host" % p['owner'], **result)
    try:
        gid = fileops.resolve_gid(p['group'])
    except KeyError:
        module.fail_json(msg="group '%s' does not exist on this host" % p['group'], **result)

    archive_id = p['archive_id'] or fileops.file_sha256(src)
    result['archive_id'] = archive_id
    stamp_file = stamp_path(p['state_dir'], dest)
    result['stamp'] = stamp_file
    wanted = dict(dest=dest, archive_id=archive_id, owner=p['owner'], group=p['group'], mode=p['mode'])
    stamp = read_stamp(stamp_file)
    try:
        inode = os.stat(dest).st_ino
    except OSError:
        inode = None
    before = dict((k, (stamp or {}).get(k)) for k in wanted)
    if not p['force'] and stamp is not None and inode is not None and stamp.get('ino') == inode \
            and before == wanted:
        module.exit_json(**result)

    result['changed'] = True
    if module._diff:
        result['diff'] = dict(before=before if inode is not None else {}, after=wanted,
                              before_header=dest, after_header='%s (%s)' % (dest, src))
    try:
        if module.check_mode:
            handle, members = archive.open_archive(src)
            handle.close()
            archive.check_members(members)
            result['members'] = len(members)
            module.exit_json(**result)
        result['members'] = archive.extract_atomically(src, dest, mode=mode, uid=-1 if uid is None else uid,
                                                       gid=-1 if gid is None else gid)
        write_stamp(stamp_file, dict(wanted, ino=os.stat(dest).st_ino))
    except archive.ArchiveError as exc:
        module.fail_json(msg='cannot extract %s into %s: %s' % (src, dest, exc), **result)
    except (IOError, OSError) as exc:
        where = getattr(exc, 'filename', None)
        module.fail_json(msg='cannot extract %s into %s: %s%s' % (
            src, dest, (where + ': ') if where else '', getattr(exc, 'strerror', None) or exc), **result)
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type='path', required=True),
            dest=dict(type='path', required=True),
            owner=dict(type='str'),
            group=dict(type='str'),
            mode=dict(type='str'),
            archive_id=dict(type='str'),
            state_dir=dict(type='path', default='/var/lib/p2p-swarm'),
            force=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    run_module(module)


if __name__ == '__main__':
    main()

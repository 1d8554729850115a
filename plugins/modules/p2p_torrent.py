#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: p2p_torrent
short_description: Create a .torrent file for a file or directory
version_added: 0.1.0
description:
  - Hashes a file or a directory on the target host with libtorrent and writes the
    resulting C(.torrent) (metainfo) file to O(dest).
  - The torrent is deterministic. It carries no creation date and a fixed creator
    string, so the same content with the same options always gives the same bytes
    and the same info-hash.
  - The module is idempotent. When O(dest) already holds exactly the bytes it would
    write, it reports no change and leaves the file alone, modification time
    included. The content is read in full on every run to find that out.
  - A directory gives a multi-file torrent of every regular file below it, in sorted
    order. Symbolic links, devices, fifos and sockets inside the directory are
    refused. Empty subdirectories cannot be expressed in a torrent and are left out.
  - Part of the p2p.swarm collection, which spreads big files over a private
    BitTorrent swarm. See M(p2p.swarm.p2p_fetch) for the download side.
author:
  - p2p.swarm contributors (@p2p-swarm)
requirements:
  - Python bindings of libtorrent 2.0 or later (C(pip install libtorrent)) on the
    target host. libtorrent 1.2 can only make O(version=v1) torrents.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The torrent is computed (the content is read) but nothing is written.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description:
      - The file or directory to make a torrent of, on the target host.
      - A file gives a single-file torrent named after the file. A directory gives a
        multi-file torrent named after the directory.
      - If O(path) itself is a symbolic link it is followed. Links inside a directory
        are refused.
    type: path
    required: true
  dest:
    description:
      - Where to write the C(.torrent) file on the target host.
      - If O(dest) is an existing directory, the file is written inside it as
        C(<name>.torrent), where C(<name>) is the base name of O(path).
      - The directory holding O(dest) must exist.
    type: path
    required: true
  trackers:
    description:
      - Announce URLs of the trackers, for example V(http://10.0.0.1:6969/announce).
      - Allowed forms are C(http://host[:port]/path), C(https://host[:port]/path) and
        C(udp://host:port).
      - At least one is needed. A private torrent cannot use DHT, peer exchange or
        local discovery, so the tracker is the only way its peers find each other.
      - Each URL goes in its own tier, so clients try them in the order given.
      - The trackers are not part of the info-hash. Changing them rewrites O(dest)
        but keeps the info-hash.
    type: list
    elements: str
    required: true
  private:
    description:
      - Mark the torrent private (BEP 27). Clients then find peers only through the
        trackers and never through DHT, peer exchange or local service discovery.
      - This flag is part of the info-hash.
    type: bool
    default: true
  piece_size:
    description:
      - Piece size in bytes. It must be a power of two of at least 16384 (16 KiB).
      - V(0) picks one automatically, aiming at 1000 to 2000 pieces and staying
        between 256 KiB and 16 MiB.
      - The piece size is part of the info-hash.
    type: int
    default: 0
  version:
    description:
      - Which BitTorrent metainfo format to write.
      - V(v1) is the original format (SHA-1 pieces, BEP 3) that every client reads.
      - V(v2) is BEP 52 (SHA-256 merkle trees per file). Only v2-capable clients
        such as libtorrent 2 can use it.
      - V(hybrid) carries both. v1 and v2 clients can use it, and it has both a v1
        and a v2 info-hash.
    type: str
    choices: [v1, v2, hybrid]
    default: hybrid
  comment:
    description:
      - Free text stored in the torrent. It is not part of the info-hash.
    type: str
  mode:
    description:
      - Permissions of the C(.torrent) file, in octal such as V(0644) or in
        symbolic form such as V(u=rw,go=r), as in M(ansible.builtin.file).
      - Quote octal values in YAML so that they stay octal.
    type: raw
    default: '0644'
  ssl_ca_cert:
    description:
      - Path on the target host of a CA certificate (one PEM certificate). It is
        embedded in the torrent as its root certificate, which makes an SSL
        torrent; libtorrent then exchanges the data only over TLS, and only with
        peers showing a certificate signed by this CA (see
        O(p2p.swarm.p2p_fetch#module:ssl_cert) and M(p2p.swarm.p2p_certificate)).
      - The certificate is part of the info dictionary, so it changes the
        info-hash. The same content, options and certificate still give the
        same bytes.
      - Not set (the default) makes a plain torrent.
    type: path
notes:
  - The file is written through a temporary file in the directory of O(dest) and
    renamed into place, so readers never see a half-written torrent.
seealso:
  - module: p2p.swarm.p2p_fetch
  - name: BEP 3, The BitTorrent Protocol Specification
    description: The v1 metainfo format.
    link: https://www.bittorrent.org/beps/bep_0003.html
  - name: BEP 52, The BitTorrent Protocol Specification v2
    description: The v2 and hybrid metainfo format.
    link: https://www.bittorrent.org/beps/bep_0052.html
'''

EXAMPLES = r'''
- name: Make a torrent of a release tarball
  p2p.swarm.p2p_torrent:
    path: /build/app-1.2.tar.gz
    dest: /var/lib/p2p-swarm/app-1.2.tar.gz.torrent
    trackers:
      - http://10.0.0.1:6969/announce
  register: torrent

- name: Show the info-hash the peers will look for
  ansible.builtin.debug:
    msg: "{{ torrent.info_hash }} ({{ torrent.num_pieces }} pieces of {{ torrent.piece_length }} bytes)"

- name: Make a v1-only torrent of a model directory, written into a directory
  p2p.swarm.p2p_torrent:
    path: /srv/models/llm-7b
    dest: /var/lib/p2p-swarm/
    trackers:
      - http://tracker.internal:6969/announce
      - udp://tracker-backup.internal:6969
    version: v1
    piece_size: 4194304
    comment: nightly build
    mode: '0600'

- name: Make an SSL torrent that only holders of the run's certificates can use
  p2p.swarm.p2p_torrent:
    path: /build/app-1.2.tar.gz
    dest: /var/lib/p2p-swarm/app-1.2.tar.gz.torrent
    trackers:
      - http://10.0.0.1:6969/announce
    ssl_ca_cert: /var/lib/p2p-swarm/ssl/ca.pem
'''

RETURN = r'''
changed:
  description: Whether O(dest) was written or its mode changed (or would be, in check mode).
  returned: always
  type: bool
  sample: true
dest:
  description: The path of the C(.torrent) file. A name is added when O(dest) is a directory.
  returned: success
  type: str
  sample: /var/lib/p2p-swarm/app-1.2.tar.gz.torrent
info_hash:
  description: The v1 info-hash (SHA-1, 40 hex digits). V(null) for a O(version=v2) torrent.
  returned: success
  type: str
  sample: 0f2a4c1d7e3b5a69880c1d2e3f4a5b6c7d8e9f01
info_hash_v2:
  description: The v2 info-hash (SHA-256, 64 hex digits). V(null) for a O(version=v1) torrent.
  returned: success
  type: str
  sample: 3c9d0a5e7f11b2c4d6e8f0a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1
name:
  description: Name of the torrent, the base name of O(path).
  returned: success
  type: str
  sample: app-1.2.tar.gz
size:
  description: Total bytes of content (padding added by v2 and hybrid torrents not counted).
  returned: success
  type: int
  sample: 1073741824
piece_length:
  description: Piece size in bytes.
  returned: success
  type: int
  sample: 1048576
num_pieces:
  description:
    - Number of pieces.
    - v2 and hybrid torrents start every file on a piece boundary, so this can exceed
      RV(size) divided by RV(piece_length).
  returned: success
  type: int
  sample: 1024
files:
  description:
    - The files in the torrent, in torrent order.
    - For a single-file torrent the path is the file name. For a directory it is the
      path below the directory, with C(/) separators.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: Path of the file, relative to the top of the torrent.
      type: str
      returned: success
      sample: weights/part-0001.bin
    size:
      description: Size of the file in bytes.
      type: int
      returned: success
      sample: 536870912
  sample:
    - path: app-1.2.tar.gz
      size: 1073741824
trackers:
  description: Announce URLs in the torrent, in tier order.
  returned: success
  type: list
  elements: str
  sample:
    - http://10.0.0.1:6969/announce
private:
  description: Whether the torrent is marked private.
  returned: success
  type: bool
  sample: true
version:
  description: The metainfo format of the torrent, V(v1), V(v2) or V(hybrid).
  returned: success
  type: str
  sample: hybrid
ssl:
  description: Whether the torrent is an SSL torrent, that is, carries the root certificate of O(ssl_ca_cert).
  returned: success
  type: bool
  sample: false
torrent_content:
  description: >-
    The .torrent file, base64-encoded, to hand to M(p2p.swarm.p2p_fetch) as its
    O(p2p.swarm.p2p_fetch#module:torrent_content) (also in check mode, where
    O(dest) is not written). About 1.4 times the .torrent's size: some tens of
    kB for a file of a few GB.
  returned: success
  type: str
sha256:
  description: >-
    SHA-256 of the file, for a single-file torrent. It is stored in the .torrent
    outside the info dictionary (the info-hash does not depend on it), so that
    M(p2p.swarm.p2p_fetch) can show it with C(--diff).
  returned: success, for a single file
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
'''

import base64
import os
import pwd
import socket

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.p2p.swarm.plugins.module_utils import fileops
from ansible_collections.p2p.swarm.plugins.module_utils import metainfo

ARGUMENT_SPEC = dict(
    path=dict(type='path', required=True),
    dest=dict(type='path', required=True),
    trackers=dict(type='list', elements='str', required=True),
    private=dict(type='bool', default=True),
    piece_size=dict(type='int', default=0),
    version=dict(type='str', default='hybrid', choices=list(metainfo.VERSIONS)),
    comment=dict(type='str'),
    mode=dict(type='raw', default='0644'),
    ssl_ca_cert=dict(type='path'),
)

RETURNED = ('info_hash', 'info_hash_v2', 'name', 'size', 'piece_length', 'num_pieces',
            'files', 'trackers', 'private', 'version', 'ssl', 'sha256')


class TorrentModule(AnsibleModule):
    def add_path_info(self, kwargs):
        # AnsibleModule would stat 'dest' and overwrite 'size' (the content's
        # size here) with the size of the .torrent file; return only what
        # RETURN documents.
        return kwargs


def _user():
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _read(path):
    try:
        with open(path, 'rb') as handle:
            return handle.read()
    except (IOError, OSError):
        return None  # missing or unreadable: write it afresh


def _os_error_message(exc, path, host):
    culprit = getattr(exc, 'filename', None) or path
    if isinstance(exc, FileNotFoundError):
        return '%s does not exist on %s' % (culprit, host)
    if isinstance(exc, PermissionError):
        return 'cannot read %s on %s: permission denied for user %s' % (culprit, host, _user())
    if isinstance(exc, NotADirectoryError):
        return 'path %s does not exist on %s: a part of it is not a directory' % (culprit, host)
    reason = getattr(exc, 'strerror', None) or str(exc)
    return 'cannot make a torrent of %s on %s: %s' % (path, host, reason)


def run_module(module):
    params = module.params
    host = socket.gethostname()
    path = params['path']
    trackers = params['trackers']

    if not trackers:
        module.fail_json(msg='trackers is empty: a private swarm finds its peers only through a '
                             'tracker, give at least one announce URL')
    try:
        for url in trackers:
            metainfo.validate_tracker_url(url)
        metainfo.validate_piece_size(params['piece_size'])
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    try:
        os.stat(path)
    except FileNotFoundError:
        module.fail_json(msg='path %s does not exist on %s' % (path, host))
    except EnvironmentError as exc:
        # e.g. a parent directory this user may not enter: say so rather
        # than "does not exist".
        module.fail_json(msg=_os_error_message(exc, path, host))

    dest = params['dest']
    if os.path.isdir(dest):
        dest = os.path.join(dest, os.path.basename(os.path.normpath(os.path.abspath(path))) + '.torrent')
    dest_dir = os.path.dirname(os.path.abspath(dest))
    top = os.path.realpath(path)
    if os.path.isdir(top) and os.path.realpath(dest).startswith(top + os.sep):
        # The torrent would end up hashing itself and change on every run.
        module.fail_json(msg='dest %s is inside path %s: write the torrent outside the directory it describes'
                             % (dest, path))
    if not os.path.isdir(dest_dir):
        module.fail_json(msg='cannot write %s: directory %s does not exist on %s' % (dest, dest_dir, host))

    initial_mode = fileops.octal_mode(params['mode'])
    if initial_mode is None:
        # Symbolic: check it now rather than after the file is written, and
        # create the file private until set_mode_if_different applies it.
        try:
            module._symbolic_mode_to_octal(os.stat(dest_dir), params['mode'])
        except Exception:
            module.fail_json(msg='mode %r is not valid: use octal such as 0644 or symbolic such as u=rw,go=r'
                                 % (params['mode'],))
        initial_mode = 0o600

    root_cert = None
    if params['ssl_ca_cert']:
        try:
            with open(params['ssl_ca_cert']) as handle:
                root_cert = handle.read()
            metainfo.validate_root_cert(root_cert)
        except (IOError, OSError) as exc:
            module.fail_json(msg='ssl_ca_cert %s cannot be read on %s: %s'
                                 % (params['ssl_ca_cert'], host, getattr(exc, 'strerror', None) or exc))
        except (ValueError, UnicodeDecodeError) as exc:
            module.fail_json(msg='ssl_ca_cert %s: %s' % (params['ssl_ca_cert'], exc))

    try:
        data = metainfo.create_torrent(
            path, trackers, private=params['private'], piece_size=params['piece_size'],
            version=params['version'], comment=params['comment'], root_cert=root_cert)
    except ValueError as exc:
        module.fail_json(msg='%s (on %s)' % (exc, host))
    except EnvironmentError as exc:
        module.fail_json(msg=_os_error_message(exc, path, host))

    result = dict(changed=False, dest=dest)
    desc = metainfo.describe(data)
    result.update((key, desc[key]) for key in RETURNED)
    # The torrent itself, for p2p_fetch's torrent_content: no copy round per
    # host, and it is there in check mode too, where dest is not written.
    result['torrent_content'] = base64.b64encode(data).decode('ascii')

    if _read(dest) != data:
        result['changed'] = True
        if module.check_mode:
            if not os.access(dest_dir, os.W_OK):
                module.fail_json(msg='cannot write %s on %s: permission denied for user %s on directory %s'
                                     % (dest, host, _user(), dest_dir), **result)
        else:
            try:
                fileops.write_atomic(dest, data, mode=initial_mode)
            except PermissionError:
                module.fail_json(msg='cannot write %s on %s: permission denied for user %s'
                                     % (dest, host, _user()), **result)
            except EnvironmentError as exc:
                module.fail_json(msg='cannot write %s on %s: %s'
                                     % (dest, host, getattr(exc, 'strerror', None) or exc), **result)

    result['changed'] = module.set_mode_if_different(dest, params['mode'], result['changed'])
    module.exit_json(**result)


def main():
    module = TorrentModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if not metainfo.HAS_LIBTORRENT:
        module.fail_json(msg=missing_required_lib('libtorrent', url='https://pypi.org/project/libtorrent/'),
                         exception=metainfo.LIBTORRENT_IMPORT_ERROR)
    run_module(module)


if __name__ == '__main__':
    main()

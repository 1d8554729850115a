# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decide whether a file on disk already holds a torrent's content.

A rerun must not move bytes for hosts that are done, so p2p_fetch checks
`dest` before starting an agent: first against the stamp the agent wrote when
it placed the file (same inode, size and mtime: untouched since), else by
hashing it against the torrent's piece hashes (v1) or file merkle root (v2).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os

from ansible_collections.p2p.swarm.plugins.module_utils import fileops

V2_BLOCK = 16 * 1024  # BEP 52 leaf size


def stamp_matches(stamp_path, dest):
    """True if dest is the very file the agent placed and was not touched since."""
    try:
        with open(stamp_path) as handle:
            stamp = json.load(handle)
        st = os.stat(dest)
    except (IOError, OSError, ValueError):
        return False
    return (stamp.get('dest') == dest and stamp.get('size') == st.st_size
            and stamp.get('mtime_ns') == st.st_mtime_ns and stamp.get('ino') == st.st_ino)


def write_stamp(stamp_path, dest):
    """Record dest as verified. Only a cache: a stamp that cannot be written
    (no job directory yet on a host that got the file another way, read-only
    state dir) costs a re-hash next time, never a failure."""
    st = os.stat(dest)
    data = {'dest': dest, 'size': st.st_size, 'mtime_ns': st.st_mtime_ns, 'ino': st.st_ino}
    try:
        if not os.path.isdir(os.path.dirname(stamp_path)):
            os.makedirs(os.path.dirname(stamp_path), 0o700)
        fileops.write_atomic(stamp_path, json.dumps(data), mode=0o644)
    except (IOError, OSError):
        return False
    return True


def _read_chunks(path, size):
    with open(path, 'rb') as handle:
        while True:
            chunk = handle.read(size)
            if not chunk:
                return
            yield chunk


def v1_pieces_match(path, piece_length, piece_hashes):
    """Compare SHA-1 of each piece of a single file with the torrent's list."""
    count = 0
    for index, chunk in enumerate(_read_chunks(path, piece_length)):
        if index >= len(piece_hashes) or hashlib.sha1(chunk).digest() != piece_hashes[index]:
            return False
        count += 1
    return count == len(piece_hashes)


def v2_merkle_root(path):
    """BEP 52 merkle root of a file: SHA-256 of 16 KiB blocks, zero-padded to 2^k leaves."""
    layer = [hashlib.sha256(block).digest() for block in _read_chunks(path, V2_BLOCK)]
    if not layer:
        return None  # empty files have no root in v2
    width = 1
    while width < len(layer):
        width *= 2
    layer.extend([b'\0' * 32] * (width - len(layer)))
    while len(layer) > 1:
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0]


def file_layout(torrent_info):
    """The torrent's file_storage (libtorrent 2.1 renamed files() to layout())."""
    if hasattr(torrent_info, 'layout'):
        return torrent_info.layout()
    return torrent_info.files()


def content_size(torrent_info):
    """Size of the single file; total_size() of v2 torrents counts tail padding."""
    return file_layout(torrent_info).file_size(0)


def file_matches_torrent(path, torrent_info):
    """True if path holds exactly the content of a single-file torrent.

    torrent_info is a libtorrent.torrent_info; the size is checked first so a
    wrong file costs a stat, not a read.
    """
    try:
        if os.path.getsize(path) != content_size(torrent_info):
            return False
    except OSError:
        return False
    if torrent_info.info_hashes().has_v1():
        hashes = [torrent_info.hash_for_piece(i) for i in range(torrent_info.num_pieces())]
        return v1_pieces_match(path, torrent_info.piece_length(), hashes)
    expected = file_layout(torrent_info).root(0)
    return v2_merkle_root(path) == bytes(expected.to_bytes())

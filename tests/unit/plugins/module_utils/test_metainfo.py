# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for metainfo: real libtorrent, small real files under tmp_path."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re
import shutil

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import metainfo

lt = pytest.importorskip('libtorrent')

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TRACKER = 'http://10.0.0.1:6969/announce'
HEX40 = re.compile(r'^[0-9a-f]{40}$')
HEX64 = re.compile(r'^[0-9a-f]{64}$')


def _payload(size, seed=b'p2p'):
    # Deterministic, incompressible-looking bytes without touching os.urandom.
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + str(counter).encode()).digest()
        counter += 1
    return bytes(out[:size])


def _write(path, data):
    parent = os.path.dirname(str(path))
    if parent and not os.path.isdir(parent):
        os.makedirs(parent)
    with open(str(path), 'wb') as handle:
        handle.write(data)
    return str(path)


@pytest.fixture
def big_file(tmp_path):
    return _write(tmp_path / 'src' / 'app.tar.gz', _payload(3 * MIB + 12345))


@pytest.fixture
def tree(tmp_path):
    """A directory whose files are created out of order, with nesting."""
    top = tmp_path / 'bundle'
    _write(top / 'z-last.bin', _payload(700 * KIB, b'z'))
    _write(top / 'b' / 'inner.txt', b'inner\n')
    _write(top / 'a_b', b'und\n')
    _write(top / 'B', b'upper\n')
    _write(top / 'a' / 'b', _payload(300 * KIB, b'ab'))
    _write(top / '.hidden', b'hidden\n')
    _write(top / 'empty', b'')
    return str(top)


def _metainfo(data):
    return lt.bdecode(data)


# ---------------------------------------------------------------- piece size

@pytest.mark.parametrize('total, expected', [
    (0, 256 * KIB),
    (1, 256 * KIB),
    (3 * MIB, 256 * KIB),
    (2000 * 256 * KIB, 256 * KIB),          # exactly 2000 pieces: still fits
    (2000 * 256 * KIB + 1, 512 * KIB),      # one byte more: next power of two
    (1 * GIB, 1 * MIB),                     # 1024 pieces
    (10 * GIB, 8 * MIB),                    # 1280 pieces
    (2000 * 16 * MIB, 16 * MIB),
    (100 * GIB, 16 * MIB),                  # clamped: 6400 pieces
    (4 * 1024 * GIB, 16 * MIB),
])
def test_choose_piece_size_table(total, expected):
    assert metainfo.choose_piece_size(total) == expected


@pytest.mark.parametrize('total', [600 * MIB, 1 * GIB + 1, 3 * GIB, 7 * GIB + 5, 20 * GIB, 31 * GIB])
def test_choose_piece_size_lands_between_1000_and_2000_pieces(total):
    size = metainfo.choose_piece_size(total)
    pieces = -(-total // size)
    assert size & (size - 1) == 0
    assert 1000 <= pieces <= 2000


def test_choose_piece_size_rejects_negative():
    with pytest.raises(ValueError):
        metainfo.choose_piece_size(-1)


@pytest.mark.parametrize('value', [1000, 8 * KIB, 3 * 256 * KIB, -262144])
def test_validate_piece_size_rejects(value):
    with pytest.raises(ValueError, match='power of two'):
        metainfo.validate_piece_size(value)


@pytest.mark.parametrize('value', [0, 16 * KIB, 256 * KIB, 16 * MIB, 64 * MIB])
def test_validate_piece_size_accepts(value):
    metainfo.validate_piece_size(value)


# ------------------------------------------------------------- tracker URLs

@pytest.mark.parametrize('url', [
    'http://10.0.0.1:6969/announce',
    'http://tracker/announce',
    'https://tracker.example.com/a/announce?key=1',
    'udp://10.0.0.1:6969',
    'udp://tracker.example:80/announce',
    'http://[fd00::1]:6969/announce',
])
def test_tracker_url_accepted(url):
    metainfo.validate_tracker_url(url)


@pytest.mark.parametrize('url, why', [
    ('ftp://tracker/announce', 'scheme'),
    ('tracker:6969/announce', 'scheme'),
    ('10.0.0.1:6969', 'scheme'),
    ('http:///announce', 'host'),
    ('http://tracker:6969', 'path'),
    ('udp://tracker', 'port'),
    ('http://tracker:99999/announce', 'port'),
    ('http://tracker/ann ounce', 'spaces'),
    ('', 'non-empty'),
])
def test_tracker_url_rejected(url, why):
    with pytest.raises(ValueError, match=why):
        metainfo.validate_tracker_url(url)


# ------------------------------------------------------------ determinism

def test_same_file_twice_gives_identical_bytes(big_file):
    first = metainfo.create_torrent(big_file, [TRACKER])
    second = metainfo.create_torrent(big_file, [TRACKER])
    assert first == second
    assert metainfo.describe(first)['info_hash'] == metainfo.describe(second)['info_hash']


def test_same_content_elsewhere_gives_same_hash(big_file, tmp_path):
    # Only name and content count: not the directory, the mtime or the owner.
    copy = str(tmp_path / 'elsewhere' / 'app.tar.gz')
    os.makedirs(os.path.dirname(copy))
    shutil.copyfile(big_file, copy)
    os.utime(copy, (1000000, 1000000))
    assert metainfo.create_torrent(copy, [TRACKER]) == metainfo.create_torrent(big_file, [TRACKER])


def test_no_creation_date_and_fixed_creator(big_file):
    meta = _metainfo(metainfo.create_torrent(big_file, [TRACKER], comment='build 7'))
    assert b'creation date' not in meta
    assert meta[b'created by'] == b'p2p.swarm'
    assert meta[b'comment'] == b'build 7'


@pytest.mark.parametrize('version', ['v1', 'v2', 'hybrid'])
def test_one_changed_byte_changes_hash(big_file, version):
    before = metainfo.describe(metainfo.create_torrent(big_file, [TRACKER], version=version))
    with open(big_file, 'r+b') as handle:
        handle.seek(2 * MIB + 7)
        old = handle.read(1)
        handle.seek(2 * MIB + 7)
        handle.write(bytes([old[0] ^ 0x01]))
    after = metainfo.describe(metainfo.create_torrent(big_file, [TRACKER], version=version))
    assert after['size'] == before['size']
    assert (after['info_hash'], after['info_hash_v2']) != (before['info_hash'], before['info_hash_v2'])
    for key in ('info_hash', 'info_hash_v2'):
        if before[key] is not None:
            assert after[key] != before[key]


def test_trackers_comment_and_private_outside_or_inside_hash(big_file):
    base = metainfo.describe(metainfo.create_torrent(big_file, [TRACKER]))
    other_tracker = metainfo.describe(metainfo.create_torrent(big_file, ['udp://10.0.0.2:6969']))
    commented = metainfo.describe(metainfo.create_torrent(big_file, [TRACKER], comment='x'))
    public = metainfo.describe(metainfo.create_torrent(big_file, [TRACKER], private=False))
    # announce URLs and comment sit outside the info dict ...
    assert other_tracker['info_hash'] == base['info_hash']
    assert commented['info_hash'] == base['info_hash']
    # ... the private flag sits inside it (BEP 27).
    assert base['private'] is True
    assert public['private'] is False
    assert public['info_hash'] != base['info_hash']


def test_trackers_kept_in_order_one_tier_each(big_file):
    urls = [TRACKER, 'udp://10.0.0.2:6969', 'https://t3.example/announce']
    data = metainfo.create_torrent(big_file, urls)
    assert metainfo.describe(data)['trackers'] == urls
    tiers = _metainfo(data)[b'announce-list']
    assert tiers == [[u.encode()] for u in urls]


def test_bad_tracker_refused_before_hashing(big_file):
    with pytest.raises(ValueError, match='ftp://x/announce'):
        metainfo.create_torrent(big_file, ['ftp://x/announce'])


# ---------------------------------------------------------------- versions

def test_v1_has_only_v1_hash(big_file):
    data = metainfo.create_torrent(big_file, [TRACKER], version='v1')
    desc = metainfo.describe(data)
    info = _metainfo(data)[b'info']
    assert HEX40.match(desc['info_hash'])
    assert desc['info_hash_v2'] is None
    assert desc['version'] == 'v1'
    assert b'pieces' in info and b'file tree' not in info
    # The v1 info-hash is the SHA-1 of the bencoded info dict.
    assert desc['info_hash'] == hashlib.sha1(lt.bencode(info)).hexdigest()


def test_v2_has_only_v2_hash(big_file):
    data = metainfo.create_torrent(big_file, [TRACKER], version='v2')
    desc = metainfo.describe(data)
    info = _metainfo(data)[b'info']
    assert desc['info_hash'] is None
    assert HEX64.match(desc['info_hash_v2'])
    assert desc['version'] == 'v2'
    assert info[b'meta version'] == 2 and b'pieces' not in info
    assert desc['info_hash_v2'] == hashlib.sha256(lt.bencode(info)).hexdigest()


def test_hybrid_is_default_and_has_both_hashes(big_file):
    data = metainfo.create_torrent(big_file, [TRACKER])
    desc = metainfo.describe(data)
    info = _metainfo(data)[b'info']
    assert desc['version'] == 'hybrid'
    assert HEX40.match(desc['info_hash']) and HEX64.match(desc['info_hash_v2'])
    assert b'pieces' in info and b'file tree' in info
    assert desc['info_hash'] == hashlib.sha1(lt.bencode(info)).hexdigest()
    assert desc['info_hash_v2'] == hashlib.sha256(lt.bencode(info)).hexdigest()


def test_unknown_version_refused(big_file):
    with pytest.raises(ValueError, match='version'):
        metainfo.create_torrent(big_file, [TRACKER], version='v3')


# ---------------------------------------------------------- single file

def test_single_file_description(big_file):
    desc = metainfo.describe(metainfo.create_torrent(big_file, [TRACKER]))
    size = 3 * MIB + 12345
    assert desc['name'] == 'app.tar.gz'
    assert desc['size'] == size
    assert desc['files'] == [{'path': 'app.tar.gz', 'size': size}]
    assert desc['piece_length'] == 256 * KIB
    assert desc['num_pieces'] == -(-size // (256 * KIB))


def test_explicit_piece_size_used(big_file):
    desc = metainfo.describe(metainfo.create_torrent(big_file, [TRACKER], piece_size=64 * KIB))
    assert desc['piece_length'] == 64 * KIB
    assert desc['num_pieces'] == -(-(3 * MIB + 12345) // (64 * KIB))


def test_invalid_piece_size_refused(big_file):
    with pytest.raises(ValueError, match='power of two'):
        metainfo.create_torrent(big_file, [TRACKER], piece_size=100000)


def test_top_level_symlink_is_followed(big_file, tmp_path):
    link = str(tmp_path / 'current.tar.gz')
    os.symlink(big_file, link)
    desc = metainfo.describe(metainfo.create_torrent(link, [TRACKER]))
    assert desc['name'] == 'current.tar.gz'
    assert desc['size'] == 3 * MIB + 12345


def test_missing_path_raises_file_not_found(tmp_path):
    missing = str(tmp_path / 'nope')
    with pytest.raises(FileNotFoundError) as info:
        metainfo.create_torrent(missing, [TRACKER])
    assert info.value.filename == missing


def test_empty_file_refused(tmp_path):
    empty = _write(tmp_path / 'empty.bin', b'')
    with pytest.raises(ValueError, match='no data'):
        metainfo.create_torrent(empty, [TRACKER])


# ------------------------------------------------------------- directories

EXPECTED_TREE = [
    {'path': '.hidden', 'size': 7},
    {'path': 'B', 'size': 6},               # byte order, not locale order
    {'path': 'a/b', 'size': 300 * KIB},
    {'path': 'a_b', 'size': 4},
    {'path': 'b/inner.txt', 'size': 6},
    {'path': 'empty', 'size': 0},
    {'path': 'z-last.bin', 'size': 700 * KIB},
]


@pytest.mark.parametrize('version', ['v1', 'v2', 'hybrid'])
def test_directory_lists_all_files_sorted(tree, version):
    data = metainfo.create_torrent(tree, [TRACKER], version=version)
    desc = metainfo.describe(data)
    assert desc['name'] == 'bundle'
    assert desc['files'] == EXPECTED_TREE
    assert desc['size'] == sum(f['size'] for f in EXPECTED_TREE)
    metainfo.check_paths_safe(desc)


def test_directory_v1_file_list_is_sorted_in_metainfo(tree):
    # v2 sorts its file tree by itself; the v1 list keeps the order it is given.
    info = _metainfo(metainfo.create_torrent(tree, [TRACKER], version='v1'))[b'info']
    paths = ['/'.join(p.decode() for p in f[b'path']) for f in info[b'files']]
    assert paths == [f['path'] for f in EXPECTED_TREE]


@pytest.fixture
def dotted_tree(tmp_path):
    # 'a.b' sorts before 'a/b' as a whole path ('.' < '/') but after the
    # directory 'a' level by level, which is how v2 file trees are ordered.
    top = tmp_path / 'dotted'
    _write(top / 'a.b', b'dot\n')
    _write(top / 'a' / 'b', b'in a\n')
    return str(top)


@pytest.mark.parametrize('version', ['v1', 'v2'])
def test_directory_order_is_level_by_level(dotted_tree, version):
    desc = metainfo.describe(metainfo.create_torrent(dotted_tree, [TRACKER], version=version))
    assert [f['path'] for f in desc['files']] == ['a/b', 'a.b']


def test_hybrid_with_names_libtorrent_misorders_is_refused_clearly(dotted_tree):
    # libtorrent 2.1 writes such a hybrid torrent but cannot load it back;
    # the error must say which names clash and what to do.
    with pytest.raises(ValueError) as info:
        metainfo.create_torrent(dotted_tree, [TRACKER], version='hybrid')
    message = str(info.value)
    assert 'dotted/a.b' in message and 'dotted/a/' in message
    assert 'use version v1 or v2' in message


def test_hybrid_order_conflict_detection():
    find = metainfo._hybrid_order_conflict
    assert find(['t/a.b', 't/a/b']) == ('t/a.b', 't/a/')
    assert find(['t/x/data-1.csv', 't/x/data/part']) == ('t/x/data-1.csv', 't/x/data/')
    assert find(['t/a_b', 't/a/b', 't/B']) is None
    assert find(['single.bin']) is None


def test_directory_is_deterministic(tree, tmp_path):
    first = metainfo.create_torrent(tree, [TRACKER])
    copy = str(tmp_path / 'copy' / 'bundle')
    shutil.copytree(tree, copy)
    assert metainfo.create_torrent(copy, [TRACKER]) == first


def test_symlink_to_file_in_directory_refused(tree):
    link = os.path.join(tree, 'b', 'link.txt')
    os.symlink(os.path.join(tree, 'a_b'), link)
    with pytest.raises(ValueError, match='symbolic link') as info:
        metainfo.create_torrent(tree, [TRACKER])
    assert link in str(info.value)


def test_symlink_to_directory_in_directory_refused(tree):
    link = os.path.join(tree, 'alias')
    os.symlink(os.path.join(tree, 'a'), link)
    with pytest.raises(ValueError, match='symbolic link') as info:
        metainfo.create_torrent(tree, [TRACKER])
    assert link in str(info.value)


def test_dangling_symlink_in_directory_refused(tree):
    link = os.path.join(tree, 'dangling')
    os.symlink('/nonexistent/target', link)
    with pytest.raises(ValueError, match='symbolic link'):
        metainfo.create_torrent(tree, [TRACKER])


def test_fifo_in_directory_refused(tree):
    fifo = os.path.join(tree, 'pipe')
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match='not a regular file') as info:
        metainfo.create_torrent(tree, [TRACKER])
    assert fifo in str(info.value)


def test_empty_directory_refused(tmp_path):
    empty = tmp_path / 'empty'
    (empty / 'sub').mkdir(parents=True)
    with pytest.raises(ValueError, match='holds no files'):
        metainfo.create_torrent(str(empty), [TRACKER])


def test_directory_of_empty_files_refused(tmp_path):
    _write(tmp_path / 'd' / 'one', b'')
    _write(tmp_path / 'd' / 'two', b'')
    with pytest.raises(ValueError, match='no data'):
        metainfo.create_torrent(str(tmp_path / 'd'), [TRACKER])


# ---------------------------------------------------------------- describe

def test_describe_reads_a_path(big_file, tmp_path):
    data = metainfo.create_torrent(big_file, [TRACKER])
    torrent = _write(tmp_path / 'app.torrent', data)
    assert metainfo.describe(torrent) == metainfo.describe(data)


@pytest.mark.parametrize('cut', [
    lambda d: b'',
    lambda d: b'this is not bencode',
    lambda d: d[:-1],
    lambda d: d[:len(d) // 2],
    lambda d: d[:40],
    lambda d: lt.bencode({b'announce': TRACKER.encode()}),  # bencode, but no info dict
], ids=['empty', 'garbage', 'last-byte-cut', 'half', 'header-only', 'no-info'])
def test_describe_rejects_corrupt_input(big_file, cut):
    data = metainfo.create_torrent(big_file, [TRACKER])
    with pytest.raises(ValueError, match='^not a valid torrent: .+'):
        metainfo.describe(cut(data))


def test_describe_rejects_corrupt_pieces_field(big_file):
    # v1 'pieces' must be a multiple of 20 bytes; chop one hash byte out.
    meta = _metainfo(metainfo.create_torrent(big_file, [TRACKER], version='v1'))
    meta[b'info'][b'pieces'] = meta[b'info'][b'pieces'][:-1]
    with pytest.raises(ValueError, match='^not a valid torrent'):
        metainfo.describe(lt.bencode(meta))


# ------------------------------------------------------------- path safety

def _v1_multi(paths, name=b'top'):
    """Hand-built v1 metainfo listing 10-byte files at the given raw paths."""
    info = {
        b'name': name,
        b'piece length': 16 * KIB,
        b'files': [{b'length': 10, b'path': p} for p in paths],
        b'pieces': hashlib.sha1(b'x').digest(),
    }
    return lt.bencode({b'announce': TRACKER.encode(), b'info': info})


def _v2_tree(tree, name=b'top'):
    info = {b'name': name, b'piece length': 16 * KIB, b'meta version': 2, b'file tree': tree}
    return lt.bencode({b'announce': TRACKER.encode(), b'info': info})


V2_LEAF = {b'': {b'length': 10, b'pieces root': hashlib.sha256(b'x').digest()}}


@pytest.mark.parametrize('raw, shown', [
    ([[b'..', b'etc', b'passwd']], '../etc/passwd'),
    ([[b'ok', b'f'], [b'a', b'..', b'..', b'b']], 'a/../../b'),
    ([[b'/etc', b'cron.d', b'evil']], '/etc/cron.d/evil'),
    ([[b'a/../../b']], 'a/../../b'),
    ([[b'.', b'x']], './x'),
    ([[b'']], ''),
])
def test_traversal_in_v1_file_list_refused(raw, shown):
    desc = metainfo.describe(_v1_multi(raw))
    # libtorrent rewrites such paths when loading, so the check must look at
    # the raw metainfo: the sanitised list alone would look harmless.
    assert all('..' not in f['path'].split('/') for f in desc['files'])
    with pytest.raises(ValueError, match='unsafe path') as info:
        metainfo.check_paths_safe(desc)
    assert repr(shown) in str(info.value)


@pytest.mark.parametrize('tree, shown', [
    ({b'..': {b'x': V2_LEAF}}, '../x'),
    ({b'/etc': V2_LEAF}, '/etc'),
])
def test_traversal_in_v2_file_tree_refused(tree, shown):
    desc = metainfo.describe(_v2_tree(tree))
    with pytest.raises(ValueError, match='unsafe path') as info:
        metainfo.check_paths_safe(desc)
    assert repr(shown) in str(info.value)


def test_safe_hand_built_torrents_pass():
    metainfo.check_paths_safe(metainfo.describe(_v1_multi([[b'ok', b'f'], [b'g']])))
    metainfo.check_paths_safe(metainfo.describe(_v2_tree({b'a': V2_LEAF, b'b': {b'c': V2_LEAF}})))


def test_check_also_covers_the_libtorrent_view():
    # Should a libtorrent version stop sanitising, the reported paths alone
    # must still be caught.
    for bad in ('../x', '/abs/x', 'a/../../x'):
        with pytest.raises(ValueError, match='unsafe path'):
            metainfo.check_paths_safe({'name': 'top', 'files': [{'path': bad, 'size': 1}]})
    with pytest.raises(ValueError, match='unsafe path'):
        metainfo.check_paths_safe({'name': '..', 'files': []})

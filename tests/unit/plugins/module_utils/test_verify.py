import hashlib
import os

import libtorrent as lt
import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import verify


def make_torrent(path, flags=0, piece_size=32 * 1024):
    fs = lt.file_storage()
    fs.add_file(os.path.basename(path), os.path.getsize(path))
    ct = lt.create_torrent(fs, piece_size, flags)
    lt.set_piece_hashes(ct, os.path.dirname(path))
    return lt.torrent_info(lt.bdecode(lt.bencode(ct.generate())))


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / 'data.bin'
    path.write_bytes(os.urandom(200 * 1024 + 123))
    return str(path)


@pytest.mark.parametrize('flags', [0, lt.create_torrent.v1_only, lt.create_torrent.v2_only],
                         ids=['hybrid', 'v1', 'v2'])
def test_file_matches_its_torrent_and_not_a_changed_copy(data_file, flags):
    ti = make_torrent(data_file, flags)
    assert verify.file_matches_torrent(data_file, ti)
    with open(data_file, 'r+b') as handle:
        handle.seek(150 * 1024)
        byte = handle.read(1)
        handle.seek(150 * 1024)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert not verify.file_matches_torrent(data_file, ti)


def test_wrong_size_is_rejected_without_reading(data_file, tmp_path):
    ti = make_torrent(data_file)
    other = tmp_path / 'short.bin'
    other.write_bytes(b'x' * 10)
    assert not verify.file_matches_torrent(str(other), ti)
    assert not verify.file_matches_torrent(str(tmp_path / 'missing'), ti)


def test_merkle_root_of_one_block_is_its_hash(tmp_path):
    path = tmp_path / 'one'
    path.write_bytes(b'a' * 100)
    assert verify.v2_merkle_root(str(path)) == hashlib.sha256(b'a' * 100).digest()


def test_merkle_root_pads_leaves_with_zero_hashes(tmp_path):
    path = tmp_path / 'three'
    blocks = [b'a' * verify.V2_BLOCK, b'b' * verify.V2_BLOCK, b'c' * 5]
    path.write_bytes(b''.join(blocks))
    leaves = [hashlib.sha256(b).digest() for b in blocks] + [b'\0' * 32]
    left = hashlib.sha256(leaves[0] + leaves[1]).digest()
    right = hashlib.sha256(leaves[2] + leaves[3]).digest()
    assert verify.v2_merkle_root(str(path)) == hashlib.sha256(left + right).digest()


def test_stamp_matches_only_the_untouched_file(data_file, tmp_path):
    stamp = str(tmp_path / 'placed.json')
    assert not verify.stamp_matches(stamp, data_file)
    verify.write_stamp(stamp, data_file)
    assert verify.stamp_matches(stamp, data_file)
    assert not verify.stamp_matches(stamp, data_file + '.other')
    os.utime(data_file, ns=(1, 1))
    assert not verify.stamp_matches(stamp, data_file)

# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run p2p_torrent the way Ansible does: a Python process reading
{"ANSIBLE_MODULE_ARGS": {...}} on stdin and printing one JSON result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import stat

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import metainfo
from ansible_collections.p2p.swarm.plugins.modules import p2p_torrent

from module_runner import payload, run_module

pytest.importorskip('libtorrent')

TRACKER = 'http://10.0.0.1:6969/announce'
RETURN_KEYS = {'changed', 'dest', 'info_hash', 'info_hash_v2', 'name', 'size', 'piece_length',
               'num_pieces', 'files', 'trackers', 'private', 'version', 'ssl', 'sha256', 'torrent_content'}


def run(tmp_path, check_mode=False, **args):
    return run_module('p2p_torrent', tmp_path, check_mode, **args)


def assert_failed(rc, result, stderr, *fragments):
    assert rc == 1, result
    assert result.get('failed') is True
    assert 'Traceback' not in stderr and 'exception' not in result, (stderr, result)
    msg = result['msg']
    assert '\n' not in msg
    for fragment in fragments:
        assert fragment in msg, msg


@pytest.fixture
def src(tmp_path):
    path = tmp_path / 'src' / 'release.tar.gz'
    path.parent.mkdir()
    path.write_bytes(payload(2 * 1024 * 1024 + 99))
    return str(path)


@pytest.fixture
def out(tmp_path):
    (tmp_path / 'out').mkdir()
    return str(tmp_path / 'out' / 'release.torrent')


# ------------------------------------------------------------ happy path

def test_first_run_writes_and_reports(tmp_path, src, out):
    rc, result, stderr = run(tmp_path, path=src, dest=out, trackers=[TRACKER])
    assert rc == 0, (result, stderr)
    assert result['changed'] is True
    assert RETURN_KEYS <= set(result)
    with open(out, 'rb') as handle:
        written = handle.read()
    desc = metainfo.describe(written)
    for key in ('info_hash', 'info_hash_v2', 'name', 'size', 'piece_length', 'num_pieces',
                'files', 'trackers', 'private', 'version'):
        assert result[key] == desc[key], key
    assert result['dest'] == out
    assert result['name'] == 'release.tar.gz'
    assert result['size'] == 2 * 1024 * 1024 + 99     # the content, not the .torrent
    assert result['version'] == 'hybrid'
    assert result['private'] is True
    assert result['files'] == [{'path': 'release.tar.gz', 'size': 2 * 1024 * 1024 + 99}]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    # Nothing but the torrent is left in dest's directory (no temp files).
    assert os.listdir(os.path.dirname(out)) == ['release.torrent']


def test_second_run_is_unchanged_and_does_not_touch_the_file(tmp_path, src, out):
    rc, first, dummy = run(tmp_path, path=src, dest=out, trackers=[TRACKER])
    assert rc == 0 and first['changed'] is True
    before = os.stat(out)
    rc, second, stderr = run(tmp_path, path=src, dest=out, trackers=[TRACKER])
    assert rc == 0, (second, stderr)
    assert second['changed'] is False
    after = os.stat(out)
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert second['info_hash'] == first['info_hash']


def test_check_mode_computes_but_writes_nothing(tmp_path, src, out):
    rc, result, stderr = run(tmp_path, check_mode=True, path=src, dest=out, trackers=[TRACKER])
    assert rc == 0, (result, stderr)
    assert result['changed'] is True
    assert not os.path.exists(out)
    assert os.listdir(os.path.dirname(out)) == []
    # The hash reported in check mode is the one a real run writes.
    rc, real, dummy = run(tmp_path, path=src, dest=out, trackers=[TRACKER])
    assert real['info_hash'] == result['info_hash']


def test_check_mode_on_up_to_date_dest_reports_no_change(tmp_path, src, out):
    run(tmp_path, path=src, dest=out, trackers=[TRACKER])
    rc, result, dummy = run(tmp_path, check_mode=True, path=src, dest=out, trackers=[TRACKER])
    assert rc == 0 and result['changed'] is False


def test_check_mode_leaves_outdated_dest_alone(tmp_path, src, out):
    run(tmp_path, path=src, dest=out, trackers=[TRACKER])
    with open(out, 'rb') as handle:
        old = handle.read()
    rc, result, dummy = run(tmp_path, check_mode=True, path=src, dest=out, trackers=[TRACKER], version='v1')
    assert rc == 0 and result['changed'] is True and result['info_hash_v2'] is None
    with open(out, 'rb') as handle:
        assert handle.read() == old


def test_changed_content_rewrites(tmp_path, src, out):
    dummy, first, dummy = run(tmp_path, path=src, dest=out, trackers=[TRACKER])
    with open(src, 'r+b') as handle:
        handle.write(b'X')
    rc, second, dummy = run(tmp_path, path=src, dest=out, trackers=[TRACKER])
    assert rc == 0 and second['changed'] is True
    assert second['info_hash'] != first['info_hash']
    with open(out, 'rb') as handle:
        assert metainfo.describe(handle.read())['info_hash'] == second['info_hash']


def test_new_tracker_rewrites_but_keeps_info_hash(tmp_path, src, out):
    dummy, first, dummy = run(tmp_path, path=src, dest=out, trackers=[TRACKER])
    rc, second, dummy = run(tmp_path, path=src, dest=out, trackers=['udp://10.0.0.9:6969'])
    assert rc == 0 and second['changed'] is True
    assert second['info_hash'] == first['info_hash']
    assert second['trackers'] == ['udp://10.0.0.9:6969']


def test_options_reach_the_torrent(tmp_path, src, out):
    rc, result, stderr = run(tmp_path, path=src, dest=out, trackers=[TRACKER], version='v2',
                             piece_size=65536, private=False, comment='nightly', mode='0600')
    assert rc == 0, (result, stderr)
    assert result['version'] == 'v2' and result['info_hash'] is None
    assert result['piece_length'] == 65536
    assert result['num_pieces'] == -(-(2 * 1024 * 1024 + 99) // 65536)
    assert result['private'] is False
    with open(out, 'rb') as handle:
        assert metainfo.describe(handle.read())['comment'] == 'nightly'
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_mode_change_alone_is_a_change(tmp_path, src, out):
    run(tmp_path, path=src, dest=out, trackers=[TRACKER])
    rc, result, dummy = run(tmp_path, path=src, dest=out, trackers=[TRACKER], mode='u=rw,go=')
    assert rc == 0 and result['changed'] is True
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    rc, result, dummy = run(tmp_path, path=src, dest=out, trackers=[TRACKER], mode='u=rw,go=')
    assert rc == 0 and result['changed'] is False


def test_bad_mode_fails_before_writing(tmp_path, src, out):
    rc, result, stderr = run(tmp_path, path=src, dest=out, trackers=[TRACKER], mode='rwx-bogus')
    assert_failed(rc, result, stderr, "mode 'rwx-bogus' is not valid")
    assert not os.path.exists(out)


def test_directory_source_and_directory_dest(tmp_path):
    top = tmp_path / 'bundle'
    (top / 'sub').mkdir(parents=True)
    (top / 'sub' / 'two.bin').write_bytes(payload(300000, b'2'))
    (top / 'one.bin').write_bytes(payload(100000, b'1'))
    outdir = tmp_path / 'torrents'
    outdir.mkdir()
    rc, result, stderr = run(tmp_path, path=str(top), dest=str(outdir), trackers=[TRACKER])
    assert rc == 0, (result, stderr)
    assert result['dest'] == str(outdir / 'bundle.torrent')
    assert os.path.isfile(result['dest'])
    assert result['name'] == 'bundle'
    assert result['files'] == [{'path': 'one.bin', 'size': 100000}, {'path': 'sub/two.bin', 'size': 300000}]
    assert result['size'] == 400000


# ---------------------------------------------------------------- failures

def test_missing_path_fails_clearly(tmp_path, out):
    missing = str(tmp_path / 'no-such-file.tar.gz')
    rc, result, stderr = run(tmp_path, path=missing, dest=out, trackers=[TRACKER])
    assert_failed(rc, result, stderr, missing, 'does not exist', socket.gethostname())
    assert not os.path.exists(out)


@pytest.mark.parametrize('url, fragment', [
    ('ftp://10.0.0.1/announce', 'scheme must be http, https or udp'),
    ('10.0.0.1:6969', 'scheme'),
    ('http://10.0.0.1:6969', 'need a path'),
    ('udp://10.0.0.1', 'need a port'),
])
def test_bad_tracker_url_fails(tmp_path, src, out, url, fragment):
    rc, result, stderr = run(tmp_path, path=src, dest=out, trackers=[TRACKER, url])
    assert_failed(rc, result, stderr, repr(url), fragment)
    assert not os.path.exists(out)


def test_empty_tracker_list_fails(tmp_path, src, out):
    rc, result, stderr = run(tmp_path, path=src, dest=out, trackers=[])
    assert_failed(rc, result, stderr, 'at least one announce URL')


def test_missing_trackers_option_fails(tmp_path, src, out):
    rc, result, stderr = run(tmp_path, path=src, dest=out)
    assert_failed(rc, result, stderr, 'trackers')


def test_bad_piece_size_fails(tmp_path, src, out):
    rc, result, stderr = run(tmp_path, path=src, dest=out, trackers=[TRACKER], piece_size=100000)
    assert_failed(rc, result, stderr, 'piece_size 100000', 'power of two')


def test_missing_dest_directory_fails(tmp_path, src):
    dest = str(tmp_path / 'nowhere' / 'x.torrent')
    rc, result, stderr = run(tmp_path, path=src, dest=dest, trackers=[TRACKER])
    assert_failed(rc, result, stderr, str(tmp_path / 'nowhere'), 'does not exist')


def test_dest_inside_source_directory_fails(tmp_path):
    top = tmp_path / 'bundle'
    top.mkdir()
    (top / 'f').write_bytes(b'data')
    rc, result, stderr = run(tmp_path, path=str(top), dest=str(top / 'bundle.torrent'), trackers=[TRACKER])
    assert_failed(rc, result, stderr, 'inside path')
    assert not (top / 'bundle.torrent').exists()


def test_symlink_in_directory_fails_clearly(tmp_path, out):
    top = tmp_path / 'bundle'
    top.mkdir()
    (top / 'real').write_bytes(b'data')
    os.symlink(str(top / 'real'), str(top / 'alias'))
    rc, result, stderr = run(tmp_path, path=str(top), dest=out, trackers=[TRACKER])
    assert_failed(rc, result, stderr, 'symbolic link', str(top / 'alias'))


def test_empty_file_fails_clearly(tmp_path, out):
    empty = tmp_path / 'empty.bin'
    empty.write_bytes(b'')
    rc, result, stderr = run(tmp_path, path=str(empty), dest=out, trackers=[TRACKER])
    assert_failed(rc, result, stderr, 'no data')


@pytest.mark.parametrize('exc, fragments', [
    (PermissionError(13, 'Permission denied', '/data/secret.bin'),
     ['cannot read /data/secret.bin on h1: permission denied for user']),
    (FileNotFoundError(2, 'No such file or directory', '/data/gone'), ['/data/gone does not exist on h1']),
    (OSError(5, 'Input/output error', '/data/bad'), ['cannot make a torrent of /data on h1: Input/output error']),
])
def test_error_messages_name_the_cause(exc, fragments):
    # Root (which runs these tests) can read anything, so check the wording directly.
    msg = p2p_torrent._os_error_message(exc, '/data', 'h1')
    for fragment in fragments:
        assert fragment in msg


def test_documentation_is_valid_yaml_and_matches_argument_spec():
    yaml = pytest.importorskip('yaml')
    doc = yaml.safe_load(p2p_torrent.DOCUMENTATION)
    returns = yaml.safe_load(p2p_torrent.RETURN)
    yaml.safe_load(p2p_torrent.EXAMPLES)
    spec = p2p_torrent.ARGUMENT_SPEC
    assert set(doc['options']) == set(spec) == {'path', 'dest', 'trackers', 'private', 'piece_size',
                                                'version', 'comment', 'mode', 'ssl_ca_cert'}
    for name, option in spec.items():
        documented = doc['options'][name]
        for key in ('type', 'elements', 'choices', 'default'):
            assert documented.get(key) == option.get(key), (name, key)
        assert bool(documented.get('required')) == bool(option.get('required')), name
    assert set(returns) == RETURN_KEYS

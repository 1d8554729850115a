# -*- coding: utf-8 -*-
"""p2p_archive and p2p_unpack run as subprocesses the way Ansible runs a module."""

import io
import os
import stat
import tarfile

from module_runner import assert_failed, run_module

MTIME = 1600000000


def run(module, tmp_path, check_mode=False, diff=False, **args):
    return run_module(module, tmp_path, check_mode, diff, **args)


def ok(outcome):
    rc, result, stderr = outcome
    assert rc == 0 and not result.get('failed'), (result, stderr)
    return result


def make_tree(root):
    os.makedirs(os.path.join(root, 'bin'))
    os.makedirs(os.path.join(root, 'share', 'doc'))
    for rel, data, mode in (('bin/tool', b'#!/bin/sh\nexit 0\n', 0o755),
                            ('share/doc/notes.txt', b'notes\n' * 1000, 0o644),
                            ('private.key', b'k', 0o600)):
        path = os.path.join(root, rel)
        with open(path, 'wb') as handle:
            handle.write(data)
        os.chmod(path, mode)
        os.utime(path, (MTIME, MTIME))
    os.symlink('share/doc/notes.txt', os.path.join(root, 'NOTES'))


def tree_state(root):
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ('link', os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                with open(path, 'rb') as handle:
                    found[rel] = ('file', stat.S_IMODE(st.st_mode), int(st.st_mtime), handle.read())
            else:
                found[rel] = ('dir', stat.S_IMODE(st.st_mode))
    return found


def packed(tmp_path):
    """(source tree, tar made by p2p_archive)."""
    src = str(tmp_path / 'app')
    make_tree(src)
    result = ok(run('p2p_archive', tmp_path, path=src, cache_dir=str(tmp_path / 'cache')))
    return src, result['archive']


# --- p2p_archive ----------------------------------------------------------

def test_archive_is_written_once_and_then_left_alone(tmp_path):
    src = str(tmp_path / 'app')
    make_tree(src)
    cache = str(tmp_path / 'cache')
    first = ok(run('p2p_archive', tmp_path, check_mode=True, path=src, cache_dir=cache))
    assert first['changed'] is True and not os.path.exists(cache)
    made = ok(run('p2p_archive', tmp_path, path=src, cache_dir=cache))
    assert made['changed'] is True and made['archive'] == os.path.join(cache, 'app.tar')
    assert made['sha256'] == first['sha256'] and made['entries'] == 8
    os.utime(made['archive'], (MTIME, MTIME))
    again = ok(run('p2p_archive', tmp_path, path=src, cache_dir=cache))
    assert again['changed'] is False and again['sha256'] == made['sha256']
    assert os.stat(made['archive']).st_mtime == MTIME
    with open(os.path.join(src, 'bin', 'tool'), 'ab') as handle:
        handle.write(b'# changed\n')
    changed = ok(run('p2p_archive', tmp_path, path=src, cache_dir=cache))
    assert changed['changed'] is True and changed['sha256'] != made['sha256']
    assert os.listdir(cache) == ['app.tar']


def test_archive_refuses_a_file_and_a_link_outside(tmp_path):
    (tmp_path / 'plain').write_text('x')
    assert_failed(run('p2p_archive', tmp_path, path=str(tmp_path / 'plain'), cache_dir=str(tmp_path / 'c')),
                  'is not a directory')
    src = str(tmp_path / 'app')
    make_tree(src)
    os.symlink('/etc/passwd', os.path.join(src, 'bin', 'passwd'))
    assert_failed(run('p2p_archive', tmp_path, path=src, cache_dir=str(tmp_path / 'c')),
                  "symlink 'bin/passwd' -> '/etc/passwd'", 'points outside the directory')
    assert os.listdir(str(tmp_path / 'c')) == []


# --- p2p_unpack -----------------------------------------------------------

def test_unpack_round_trip_rerun_and_force(tmp_path):
    src, tar = packed(tmp_path)
    dest = str(tmp_path / 'opt' / 'app')
    os.makedirs(os.path.dirname(dest))
    state = str(tmp_path / 'state')
    args = dict(src=tar, dest=dest, state_dir=state)
    first = ok(run('p2p_unpack', tmp_path, **args))
    assert first['changed'] is True and first['members'] == 8
    assert tree_state(dest) == tree_state(src)
    assert os.path.isfile(first['stamp']) and first['stamp'].startswith(state)
    inode = os.stat(dest).st_ino
    again = ok(run('p2p_unpack', tmp_path, **args))
    assert again['changed'] is False and again['members'] == 0
    assert os.stat(dest).st_ino == inode                     # not extracted again
    forced = ok(run('p2p_unpack', tmp_path, force=True, **args))
    assert forced['changed'] is True and os.stat(dest).st_ino != inode
    assert os.listdir(os.path.dirname(dest)) == ['app']


def test_unpack_again_when_dest_was_replaced_or_mode_changes(tmp_path):
    src, tar = packed(tmp_path)
    dest = str(tmp_path / 'app-out')
    args = dict(src=tar, dest=dest, state_dir=str(tmp_path / 'state'))
    ok(run('p2p_unpack', tmp_path, **args))
    os.rename(dest, dest + '.moved')
    os.makedirs(dest)
    redo = ok(run('p2p_unpack', tmp_path, **args))
    assert redo['changed'] is True and tree_state(dest) == tree_state(src)
    moded = ok(run('p2p_unpack', tmp_path, mode='0750', **args))
    assert moded['changed'] is True and stat.S_IMODE(os.stat(dest).st_mode) == 0o750
    assert ok(run('p2p_unpack', tmp_path, mode='0750', **args))['changed'] is False


def test_check_mode_and_diff_write_nothing(tmp_path):
    src, tar = packed(tmp_path)
    dest = str(tmp_path / 'app-out')
    state = str(tmp_path / 'state')
    result = ok(run('p2p_unpack', tmp_path, check_mode=True, diff=True, src=tar, dest=dest, state_dir=state))
    assert result['changed'] is True and result['members'] == 8
    assert result['diff']['after']['archive_id'] == result['archive_id']
    assert not os.path.exists(dest) and not os.path.exists(state)
    assert sorted(os.listdir(str(tmp_path))) == ['app', 'cache']
    ok(run('p2p_unpack', tmp_path, src=tar, dest=dest, state_dir=state, archive_id='abc'))
    result = ok(run('p2p_unpack', tmp_path, check_mode=True, src=tar, dest=dest, state_dir=state, archive_id='abc'))
    assert result['changed'] is False
    result = ok(run('p2p_unpack', tmp_path, check_mode=True, diff=True, src=tar, dest=dest, state_dir=state,
                    archive_id='def'))
    assert result['changed'] is True
    assert result['diff']['before']['archive_id'] == 'abc' and result['diff']['after']['archive_id'] == 'def'


def evil_tar(path, name, data=b'evil', kind=tarfile.REGTYPE, linkname=''):
    with tarfile.open(path, 'w:gz') as tar:
        good = tarfile.TarInfo('good.txt')
        good.size = 4
        tar.addfile(good, io.BytesIO(b'good'))
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        if kind == tarfile.REGTYPE:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        else:
            tar.addfile(info)
    return str(path)


def test_unsafe_archives_are_refused_naming_the_member(tmp_path):
    dest = str(tmp_path / 'out')
    os.makedirs(dest)
    (tmp_path / 'out' / 'keep').write_text('old')
    cases = [
        (evil_tar(tmp_path / 'a.tgz', '../x'), "archive member '../x' escapes dest"),
        (evil_tar(tmp_path / 'b.tgz', '/tmp/abs'), "archive member '/tmp/abs' has an absolute path"),
        (evil_tar(tmp_path / 'c.tgz', 'null', kind=tarfile.CHRTYPE), "archive member 'null' is a device or fifo"),
        (evil_tar(tmp_path / 'd.tgz', 'up', kind=tarfile.SYMTYPE, linkname='../..'),
         "archive member 'up' is a symlink to '../..', which escapes dest"),
    ]
    for tar, message in cases:
        for check in (True, False):
            assert_failed(run('p2p_unpack', tmp_path, check_mode=check, src=tar, dest=dest,
                              state_dir=str(tmp_path / 'state')), message)
    assert os.listdir(dest) == ['keep'] and (tmp_path / 'out' / 'keep').read_text() == 'old'
    assert not os.path.exists(str(tmp_path / 'x')) and not os.path.exists('/tmp/abs')
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith('.')] == []


def test_member_that_cannot_be_written_leaves_the_old_dest(tmp_path):
    # 'good.txt' is written, then 'good.txt/inner' cannot be: the run fails mid-way.
    tar = evil_tar(tmp_path / 'e.tgz', 'good.txt/inner')
    dest = str(tmp_path / 'out')
    os.makedirs(dest)
    (tmp_path / 'out' / 'keep').write_text('old')
    assert_failed(run('p2p_unpack', tmp_path, src=tar, dest=dest, state_dir=str(tmp_path / 'state')),
                  "'good.txt/inner' goes through 'good.txt'")
    assert os.listdir(dest) == ['keep']
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith('.')] == []
    assert not os.path.exists(str(tmp_path / 'state' / 'unpacked'))


def test_bad_input_is_named(tmp_path):
    src, tar = packed(tmp_path)
    state = str(tmp_path / 'state')
    assert_failed(run('p2p_unpack', tmp_path, src=str(tmp_path / 'none.tar'), dest=str(tmp_path / 'o'),
                      state_dir=state), 'archive %s does not exist' % (tmp_path / 'none.tar'))
    assert_failed(run('p2p_unpack', tmp_path, src=tar, dest=str(tmp_path / 'no' / 'o'), state_dir=state),
                  'dest parent %s does not exist' % (tmp_path / 'no'))
    assert_failed(run('p2p_unpack', tmp_path, src=tar, dest=tar, state_dir=state), 'exists and is not a directory')
    assert_failed(run('p2p_unpack', tmp_path, src=tar, dest=str(tmp_path / 'o'), state_dir=state, mode='rwx'),
                  "mode 'rwx' is not an octal mode")
    assert_failed(run('p2p_unpack', tmp_path, src=tar, dest=str(tmp_path / 'o'), state_dir=state,
                      owner='no-such-user-p2p'), "owner 'no-such-user-p2p' does not exist")
    assert not os.path.exists(str(tmp_path / 'o'))


def test_owner_and_group_apply_to_the_whole_tree(tmp_path):
    src, tar = packed(tmp_path)
    dest = str(tmp_path / 'out')
    ok(run('p2p_unpack', tmp_path, src=tar, dest=dest, state_dir=str(tmp_path / 'state'),
           owner='65534', group='65534'))
    owners = set()
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames + ['.']:
            st = os.lstat(os.path.join(dirpath, name))
            owners.add((st.st_uid, st.st_gid))
    if os.geteuid() == 0:
        assert owners == {(65534, 65534)}

"""archive.py: deterministic packing and safe, atomic extraction."""
import io
import os
import stat
import tarfile
import zipfile

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import archive, fileops
from ansible_collections.p2p.swarm.plugins.module_utils.archive import ArchiveError

MTIME = 1600000000


def make_tree(root):
    """A small tree: nested dirs, an executable, a private file, a symlink, an empty dir."""
    os.makedirs(os.path.join(root, 'bin'))
    os.makedirs(os.path.join(root, 'lib', 'deep', 'er'))
    os.makedirs(os.path.join(root, 'empty'))
    files = {
        'bin/run.sh': (b'#!/bin/sh\necho hi\n', 0o755),
        'lib/deep/er/data.bin': (os.urandom(70000), 0o644),
        'secret.conf': (b'key=1\n', 0o600),
        'README': (b'hello\n', 0o644),
    }
    for rel, (data, mode) in files.items():
        path = os.path.join(root, rel)
        with open(path, 'wb') as handle:
            handle.write(data)
        os.chmod(path, mode)
        os.utime(path, (MTIME, MTIME + 7))
    os.symlink('../README', os.path.join(root, 'bin', 'readme'))
    os.chmod(os.path.join(root, 'lib'), 0o750)
    return files


def pack_bytes(src):
    out = io.BytesIO()
    archive.pack(src, out)
    return out.getvalue()


def snapshot(root):
    """{relative path: (kind, mode, mtime, content or link target)} of a tree."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ('link', os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ('dir', stat.S_IMODE(st.st_mode), int(st.st_mtime))
            else:
                with open(path, 'rb') as handle:
                    found[rel] = ('file', stat.S_IMODE(st.st_mode), int(st.st_mtime), handle.read())
    return found


def tar_with(path, entries, compression=''):
    """A tar at path from (TarInfo kwargs, data) pairs, written without any checks."""
    with tarfile.open(path, 'w' + (':' + compression if compression else '')) as tar:
        for fields, data in entries:
            info = tarfile.TarInfo(fields.pop('name'))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return str(path)


def leftovers(parent, dest_name):
    return sorted(n for n in os.listdir(parent) if n.startswith('.' + dest_name + '.'))


# --- packing ------------------------------------------------------------

def test_same_tree_gives_the_same_bytes_and_a_change_gives_others(tmp_path):
    src = str(tmp_path / 'tree')
    make_tree(src)
    first = pack_bytes(src)
    assert pack_bytes(src) == first
    # A copy elsewhere, made at another time, packs to the same bytes too.
    copy = str(tmp_path / 'copy' / 'tree')
    os.makedirs(os.path.dirname(copy))
    import shutil
    shutil.copytree(src, copy, symlinks=True, copy_function=shutil.copy2)
    for path in (copy, os.path.join(copy, 'lib'), os.path.join(copy, 'bin')):
        st = os.stat(path.replace(copy, src))
        os.utime(path, (st.st_mtime, st.st_mtime))
    os.utime(copy, (os.stat(src).st_mtime,) * 2)
    assert pack_bytes(copy) == first
    with open(os.path.join(src, 'README'), 'wb') as handle:
        handle.write(b'hellO\n')
    os.utime(os.path.join(src, 'README'), (MTIME, MTIME + 7))
    assert pack_bytes(src) != first


def test_a_mode_change_alone_changes_the_bytes(tmp_path):
    src = str(tmp_path / 'tree')
    make_tree(src)
    first = pack_bytes(src)
    os.chmod(os.path.join(src, 'README'), 0o640)
    assert pack_bytes(src) != first


def test_tar_is_sorted_with_owner_dropped(tmp_path):
    src = str(tmp_path / 'tree')
    make_tree(src)
    with tarfile.open(fileobj=io.BytesIO(pack_bytes(src))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == '.'
    assert names == ['.', 'README', 'bin', 'bin/readme', 'bin/run.sh', 'empty', 'lib', 'lib/deep',
                     'lib/deep/er', 'lib/deep/er/data.bin', 'secret.conf']
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, '', '')}
    run = [m for m in members if m.name == 'bin/run.sh'][0]
    assert run.mode == 0o755 and run.mtime == MTIME + 7


@pytest.mark.parametrize('target', ['/etc/passwd', '../../outside', '../..'])
def test_symlink_pointing_outside_is_refused(tmp_path, target):
    src = str(tmp_path / 'tree')
    make_tree(src)
    os.symlink(target, os.path.join(src, 'bin', 'bad'))
    with pytest.raises(ArchiveError, match="symlink 'bin/bad' -> '%s'.*points outside" % target):
        pack_bytes(src)


def test_fifo_is_refused(tmp_path):
    src = str(tmp_path / 'tree')
    make_tree(src)
    os.mkfifo(os.path.join(src, 'lib', 'pipe'))
    with pytest.raises(ArchiveError, match="'lib/pipe' in .* is a device, fifo or socket"):
        pack_bytes(src)


def test_pack_to_file_is_idempotent_and_atomic(tmp_path):
    src = str(tmp_path / 'tree')
    make_tree(src)
    dest = str(tmp_path / 'cache' / 'tree.tar')
    with pytest.raises(ArchiveError, match='does not exist'):
        archive.pack_to_file(src, dest)
    os.makedirs(os.path.dirname(dest))
    # Check mode: the answer, nothing written.
    result = archive.pack_to_file(src, dest, check_mode=True)
    assert result['changed'] is True and not os.path.exists(dest)
    result = archive.pack_to_file(src, dest)
    assert result['changed'] is True and result['sha256'] == fileops.file_sha256(dest)
    assert result['size'] == os.path.getsize(dest)
    os.utime(dest, (MTIME, MTIME))
    again = archive.pack_to_file(src, dest)
    assert again['changed'] is False and again['sha256'] == result['sha256']
    assert os.stat(dest).st_mtime == MTIME            # left alone
    assert archive.pack_to_file(src, dest, check_mode=True)['changed'] is False
    os.chmod(os.path.join(src, 'secret.conf'), 0o640)
    assert archive.pack_to_file(src, dest, check_mode=True)['changed'] is True
    assert os.stat(dest).st_mtime == MTIME
    assert archive.pack_to_file(src, dest)['changed'] is True
    assert os.listdir(os.path.dirname(dest)) == ['tree.tar']


# --- round trip and extraction ------------------------------------------

def test_round_trip_keeps_contents_modes_mtimes_and_symlinks(tmp_path):
    src = str(tmp_path / 'tree')
    make_tree(src)
    tar = str(tmp_path / 'tree.tar')
    archive.pack_to_file(src, tar)
    dest = str(tmp_path / 'out')
    count = archive.extract_atomically(tar, dest)
    assert count == 11
    assert snapshot(dest) == snapshot(src)
    assert stat.S_IMODE(os.stat(dest).st_mode) == stat.S_IMODE(os.stat(src).st_mode)
    assert os.readlink(os.path.join(dest, 'bin', 'readme')) == '../README'
    assert leftovers(str(tmp_path), 'out') == []


def test_top_mode_and_owner_as_requested(tmp_path):
    src = str(tmp_path / 'tree')
    make_tree(src)
    tar = str(tmp_path / 'tree.tar')
    archive.pack_to_file(src, tar)
    dest = str(tmp_path / 'out')
    archive.extract_atomically(tar, dest, mode=0o750, uid=os.getuid(), gid=os.getgid())
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(os.path.join(dest, 'secret.conf')).st_mode) == 0o600


@pytest.mark.parametrize('compression', ['gz', 'xz'])
def test_compressed_tar_is_read(tmp_path, compression):
    path = tar_with(tmp_path / 'a.tar.x', [
        ({'name': './', 'type': tarfile.DIRTYPE, 'mode': 0o755}, None),
        ({'name': './tool', 'mode': 0o755, 'mtime': MTIME}, b'x' * 10),
    ], compression)
    dest = str(tmp_path / 'out')
    archive.extract_atomically(path, dest)
    st = os.stat(os.path.join(dest, 'tool'))
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_mtime == MTIME and st.st_size == 10


def test_zip_is_read(tmp_path):
    path = str(tmp_path / 'a.zip')
    with zipfile.ZipFile(path, 'w') as zipped:
        info = zipfile.ZipInfo('sub/run', date_time=(2020, 1, 2, 3, 4, 6))
        info.external_attr = (stat.S_IFREG | 0o750) << 16
        zipped.writestr(info, b'zip data')
    dest = str(tmp_path / 'out')
    archive.extract_atomically(path, dest)
    with open(os.path.join(dest, 'sub', 'run'), 'rb') as handle:
        assert handle.read() == b'zip data'
    assert stat.S_IMODE(os.stat(os.path.join(dest, 'sub', 'run')).st_mode) == 0o750


def test_setuid_bit_is_dropped(tmp_path):
    path = tar_with(tmp_path / 'a.tar', [({'name': 'su', 'mode': 0o4755}, b'x')])
    dest = str(tmp_path / 'out')
    archive.extract_atomically(path, dest)
    assert stat.S_IMODE(os.stat(os.path.join(dest, 'su')).st_mode) == 0o755


BAD = [
    ([({'name': '../x'}, b'evil')], "archive member '../x' escapes dest"),
    ([({'name': 'a/../../x'}, b'evil')], "archive member 'a/../../x' escapes dest"),
    ([({'name': '/etc/evil'}, b'evil')], "archive member '/etc/evil' has an absolute path"),
    ([({'name': 'dev', 'type': tarfile.CHRTYPE, 'devmajor': 1, 'devminor': 3}, None)],
     "archive member 'dev' is a device or fifo"),
    ([({'name': 'fifo', 'type': tarfile.FIFOTYPE}, None)], "archive member 'fifo' is a device or fifo"),
    ([({'name': 'l', 'type': tarfile.SYMTYPE, 'linkname': '/etc'}, None)],
     "archive member 'l' is a symlink to '/etc', which escapes dest"),
    ([({'name': 'd/l', 'type': tarfile.SYMTYPE, 'linkname': '../..'}, None)],
     "archive member 'd/l' is a symlink to '../..', which escapes dest"),
    ([({'name': 'h', 'type': tarfile.LNKTYPE, 'linkname': '/etc/passwd'}, None)],
     "archive member 'h' is a hard link to '/etc/passwd'"),
    # Written through a symlink: 'l' points inside, but 'l/x' must not be written through it.
    ([({'name': 'sub', 'type': tarfile.DIRTYPE}, None),
      ({'name': 'l', 'type': tarfile.SYMTYPE, 'linkname': 'sub'}, None),
      ({'name': 'l/x'}, b'through')], "archive member 'l/x' goes through 'l', which is not a directory"),
    # A chain: each link alone stays inside, together they climb out.
    ([({'name': 'b', 'type': tarfile.SYMTYPE, 'linkname': '.'}, None),
      ({'name': 'a', 'type': tarfile.SYMTYPE, 'linkname': 'b/..'}, None)],
     "archive member 'a' is a symlink to 'b/..', which escapes dest"),
    ([({'name': 'x'}, b'1'), ({'name': 'x'}, b'2')], "archive member 'x' appears twice"),
]


@pytest.mark.parametrize('entries,message', BAD, ids=[m.split("'")[1] + ':' + m.split(' ')[-1] for _e, m in BAD])
def test_unsafe_member_is_refused_with_nothing_written(tmp_path, entries, message):
    path = tar_with(tmp_path / 'bad.tar', [(dict(f), d) for f, d in entries])
    dest = str(tmp_path / 'out')
    with pytest.raises(ArchiveError) as caught:
        archive.extract_atomically(path, dest)
    assert message in str(caught.value)
    assert not os.path.lexists(dest)
    assert sorted(os.listdir(str(tmp_path))) == ['bad.tar']
    assert not os.path.exists('/etc/evil')


def test_existing_dest_is_replaced_whole(tmp_path):
    src = str(tmp_path / 'tree')
    make_tree(src)
    tar = str(tmp_path / 'tree.tar')
    archive.pack_to_file(src, tar)
    dest = str(tmp_path / 'out')
    os.makedirs(os.path.join(dest, 'stale'))
    with open(os.path.join(dest, 'stale', 'old.txt'), 'w') as handle:
        handle.write('old')
    archive.extract_atomically(tar, dest)
    assert snapshot(dest) == snapshot(src)             # stale/ is gone
    assert leftovers(str(tmp_path), 'out') == []


def test_failure_midway_leaves_the_old_dest_and_no_temp_dir(tmp_path):
    # The second member cannot be written: a file at 'a', then 'a/b' below it.
    path = tar_with(tmp_path / 'bad.tar', [({'name': 'first', 'mode': 0o644}, b'new'),
                                           ({'name': 'a'}, b'file'),
                                           ({'name': 'a/b'}, b'below a file')])
    dest = str(tmp_path / 'out')
    os.makedirs(dest)
    with open(os.path.join(dest, 'first'), 'w') as handle:
        handle.write('old')
    before = snapshot(dest)
    with pytest.raises(ArchiveError, match="'a/b' goes through 'a'"):
        archive.extract_atomically(path, dest)
    assert snapshot(dest) == before
    assert leftovers(str(tmp_path), 'out') == []


def test_failed_rename_puts_the_old_dest_back(tmp_path, monkeypatch):
    src = str(tmp_path / 'tree')
    make_tree(src)
    tar = str(tmp_path / 'tree.tar')
    archive.pack_to_file(src, tar)
    dest = str(tmp_path / 'out')
    os.makedirs(dest)
    with open(os.path.join(dest, 'old.txt'), 'w') as handle:
        handle.write('old')
    real_rename = os.rename
    calls = []

    def flaky_rename(a, b):
        calls.append((a, b))
        if len(calls) == 2:             # the new tree into place
            raise OSError(28, 'No space left on device')
        return real_rename(a, b)

    monkeypatch.setattr(archive.os, 'rename', flaky_rename)
    with pytest.raises(OSError):
        archive.extract_atomically(tar, dest)
    monkeypatch.undo()
    assert len(calls) == 3 and calls[2][1] == dest     # renamed back
    assert os.listdir(dest) == ['old.txt']
    assert leftovers(str(tmp_path), 'out') == []


def test_dest_that_is_a_file_or_has_no_parent_is_refused(tmp_path):
    src = str(tmp_path / 'tree')
    make_tree(src)
    tar = str(tmp_path / 'tree.tar')
    archive.pack_to_file(src, tar)
    with pytest.raises(ArchiveError, match='dest parent .*/nope does not exist'):
        archive.extract_atomically(tar, str(tmp_path / 'nope' / 'out'))
    (tmp_path / 'plain').write_text('x')
    with pytest.raises(ArchiveError, match='exists and is not a directory'):
        archive.extract_atomically(tar, str(tmp_path / 'plain'))
    assert (tmp_path / 'plain').read_text() == 'x'


def test_not_an_archive_is_named(tmp_path):
    (tmp_path / 'junk.tar').write_bytes(os.urandom(4000))
    with pytest.raises(ArchiveError, match='not a readable tar or zip archive'):
        archive.extract_atomically(str(tmp_path / 'junk.tar'), str(tmp_path / 'out'))
    assert sorted(os.listdir(str(tmp_path))) == ['junk.tar']

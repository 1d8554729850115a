"""The shared file helpers (module_utils/fileops.py)."""
import grp
import hashlib
import os
import pwd
import stat

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import fileops


def mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def test_write_atomic_replaces_the_file_whole_with_the_mode_asked_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'old')
    fileops.write_atomic(str(path), 'new text', mode=0o640)
    assert path.read_bytes() == b'new text' and mode(path) == 0o640
    fileops.write_atomic(str(path), b'\x00bytes', fsync=True)
    assert path.read_bytes() == b'\x00bytes' and mode(path) == 0o600
    assert os.listdir(str(tmp_path)) == ['f']


def test_a_failed_or_discarded_write_leaves_the_old_file(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'old')
    with pytest.raises(RuntimeError):
        with fileops.AtomicFile(str(path)) as handle:
            handle.write(b'half')
            raise RuntimeError('disk trouble')
    with fileops.AtomicFile(str(path)) as handle:
        handle.write(b'same as before')
        handle.discard()
    assert path.read_bytes() == b'old' and os.listdir(str(tmp_path)) == ['f']


def test_octal_mode():
    assert fileops.octal_mode('0644') == 0o644
    assert fileops.octal_mode('755') == 0o755
    assert fileops.octal_mode(0o600) == 0o600
    assert fileops.octal_mode('u=rw,go=r') is None
    assert fileops.octal_mode(None) is None


def test_owner_and_group_by_name_or_number():
    me = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(os.getgid())
    assert fileops.resolve_uid(me.pw_name) == me.pw_uid
    assert fileops.resolve_uid(str(me.pw_uid)) == me.pw_uid
    assert fileops.resolve_gid(group.gr_name) == group.gr_gid
    assert fileops.resolve_gid('4242') == 4242
    assert fileops.resolve_uid(None) is None and fileops.resolve_gid(None) is None
    with pytest.raises(KeyError, match='user no-such-user-p2p does not exist'):
        fileops.resolve_uid('no-such-user-p2p')
    with pytest.raises(KeyError, match='group no-such-group-p2p does not exist'):
        fileops.resolve_gid('no-such-group-p2p')


def test_file_sha256(tmp_path):
    path = tmp_path / 'f'
    data = os.urandom(fileops.CHUNK + 17)
    path.write_bytes(data)
    assert fileops.file_sha256(str(path)) == hashlib.sha256(data).hexdigest()

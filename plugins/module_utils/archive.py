# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Directories as one file, and archives back into directories.

The swarm moves one verified file. A directory is packed into a tar first
(pack), and each host extracts the verified tar into its destination
(extract_atomically).

Packing is deterministic, so the same tree always gives the same bytes, the
same torrent and the same info-hash, and a rerun changes nothing:
- entries in sorted order, depth first, the top directory first as '.';
- each entry keeps its permission bits and its mtime (whole seconds);
- owner and group are dropped: uid and gid 0, no user or group names (the
  owner of the extracted tree is chosen where it is extracted);
- regular files, directories and symbolic links only; devices, fifos,
  sockets and links that point outside the tree (absolute, or climbing out
  with '..') are refused.

Extraction never trusts the archive: every member is checked before anything
is written (no absolute names, no '..', no devices or fifos, no links
pointing outside the destination), nothing is written through a symbolic
link, and the tree is built in a hidden directory beside dest and renamed
into place only when complete. Set-user-ID and set-group-ID bits are
dropped. Hard links are kept when they point to an earlier regular file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile

from ansible_collections.p2p.swarm.plugins.module_utils import fileops

CHUNK = 1024 * 1024
# Extracted modes keep the permission bits and the sticky bit, never
# set-user-ID or set-group-ID.
EXTRACT_MODE_MASK = 0o1777


class ArchiveError(Exception):
    """Bad input or a failed step; the message names the cause."""


# --- packing ------------------------------------------------------------

def _tree_entries(src):
    """(relative name, lstat result) of every entry below src, top first as
    '.', then depth first with the names of each directory sorted."""
    yield '.', os.lstat(src)

    def walk(rel):
        full = os.path.join(src, rel) if rel != '.' else src
        for name in sorted(os.listdir(full)):
            child = name if rel == '.' else rel + '/' + name
            st = os.lstat(os.path.join(src, child))
            yield child, st
            if stat.S_ISDIR(st.st_mode):
                yield from walk(child)

    yield from walk('.')


def link_escapes(member, target):
    """True if a symlink named member (relative, '/'-separated) pointing to
    target would point outside the tree it lives in."""
    if target.startswith('/'):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member), target))
    return resolved == '..' or resolved.startswith('../')


def _tarinfo(src, rel, st):
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ''
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif stat.S_ISLNK(st.st_mode):
        target = os.readlink(os.path.join(src, rel))
        if link_escapes(rel, target):
            raise ArchiveError("symlink '%s' -> '%s' in %s points outside the directory" % (rel, target, src))
        info.type = tarfile.SYMTYPE
        info.linkname = target
    else:
        raise ArchiveError("'%s' in %s is a device, fifo or socket; only regular files, directories "
                           "and symlinks can be packed" % (rel, src))
    return info


def pack(src, fileobj):
    """Write the deterministic tar of directory src to fileobj (which needs
    write() and tell()); returns the number of entries."""
    if not os.path.isdir(src):
        raise ArchiveError('%s is not a directory' % src)
    count = 0
    with tarfile.open(fileobj=fileobj, mode='w', format=tarfile.PAX_FORMAT) as tar:
        for rel, st in _tree_entries(src):
            info = _tarinfo(src, rel, st)
            if info.isreg():
                with open(os.path.join(src, rel), 'rb') as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
            count += 1
    return count


class _HashingWriter(object):
    """A write-only file that hashes what goes through it, and passes it on
    to another file when one is given."""

    def __init__(self, target=None):
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.digest.update(data)
        self.size += len(data)
        if self.target is not None:
            self.target.write(data)
        return len(data)

    def tell(self):
        return self.size


def pack_digest(src):
    """What pack_to_file would write, without writing: dict(sha256, size, entries)."""
    sink = _HashingWriter()
    entries = pack(src, sink)
    return {'sha256': sink.digest.hexdigest(), 'size': sink.size, 'entries': entries}


def pack_to_file(src, dest, check_mode=False):
    """Pack src into the tar dest, atomically (temporary file beside dest,
    then rename). dest is left alone, mtime included, when it already holds
    the same bytes. Returns dict(changed, sha256, size, entries)."""
    parent = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(parent):
        raise ArchiveError('directory %s of the archive does not exist' % parent)
    old = fileops.file_sha256(dest) if os.path.isfile(dest) else None
    if check_mode:
        result = pack_digest(src)
        result['changed'] = result['sha256'] != old
        return result
    with fileops.AtomicFile(dest, mode=0o644, fsync=True) as handle:
        sink = _HashingWriter(handle)
        entries = pack(src, sink)
        new = sink.digest.hexdigest()
        if new == old:
            handle.discard()
    return {'changed': new != old, 'sha256': new, 'size': sink.size, 'entries': entries}


# --- reading archives ---------------------------------------------------

class Member(object):
    """One entry of an archive, whatever its format."""

    def __init__(self, name, kind, mode, mtime, linkname=None, opener=None):
        self.name = name            # normalized: relative, '/'-separated, '.' for the top
        self.kind = kind            # dir, file, symlink or hardlink
        self.mode = mode
        self.mtime = mtime
        self.linkname = linkname
        self.opener = opener        # file: returns a readable file object


def normalize_name(raw):
    """The member name relative to dest, or ArchiveError naming the cause."""
    if '\x00' in raw:
        raise ArchiveError("archive member %r has a NUL byte in its name" % raw)
    if raw.startswith('/'):
        raise ArchiveError("archive member '%s' has an absolute path" % raw)
    parts = [p for p in raw.split('/') if p not in ('', '.')]
    if '..' in parts:
        raise ArchiveError("archive member '%s' escapes dest ('..')" % raw)
    return '/'.join(parts) or '.'


def _tar_members(path):
    try:
        tar = tarfile.open(path, 'r:*')
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError('%s is not a readable tar or zip archive: %s' % (path, exc))
    members = []
    try:
        infos = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        tar.close()
        raise ArchiveError('%s is a damaged archive: %s' % (path, exc))
    for info in infos:
        name = normalize_name(info.name)
        if info.isdir():
            kind = 'dir'
        elif info.isreg():
            kind = 'file'
        elif info.issym():
            kind = 'symlink'
        elif info.islnk():
            kind = 'hardlink'
        else:
            tar.close()
            raise ArchiveError("archive member '%s' is a device or fifo, refused" % info.name)
        linkname = info.linkname if kind in ('symlink', 'hardlink') else None
        opener = (lambda i=info: tar.extractfile(i)) if kind == 'file' else None
        members.append(Member(name, kind, info.mode, int(info.mtime), linkname, opener))
    return tar, members


def _zip_members(path):
    try:
        archive = zipfile.ZipFile(path)
        infos = archive.infolist()
    except (zipfile.BadZipfile, OSError) as exc:
        raise ArchiveError('%s is a damaged zip archive: %s' % (path, exc))
    members = []
    for info in infos:
        name = normalize_name(info.filename)
        unix = info.external_attr >> 16
        mtime = int(time.mktime(info.date_time + (0, 0, -1)))
        if info.filename.endswith('/') or stat.S_ISDIR(unix):
            members.append(Member(name, 'dir', stat.S_IMODE(unix) or 0o755, mtime))
        elif stat.S_ISLNK(unix):
            members.append(Member(name, 'symlink', 0o777, mtime,
                                  linkname=archive.read(info).decode('utf-8', 'surrogateescape')))
        elif unix == 0 or stat.S_ISREG(unix):
            members.append(Member(name, 'file', stat.S_IMODE(unix) or 0o644, mtime,
                                  opener=lambda i=info: archive.open(i)))
        else:
            archive.close()
            raise ArchiveError("archive member '%s' is a device or fifo, refused" % info.filename)
    return archive, members


def open_archive(path):
    """(handle to close, [Member]) for a tar (plain, gzip, bzip2, xz) or zip file."""
    if not os.path.isfile(path):
        raise ArchiveError('archive %s does not exist or is not a regular file' % path)
    if zipfile.is_zipfile(path) and not tarfile.is_tarfile(path):
        return _zip_members(path)
    return _tar_members(path)


def check_members(members):
    """Refuse anything unsafe before a byte is written."""
    seen = {}
    for member in members:
        previous = seen.get(member.name)
        if previous is not None and not (previous == 'dir' and member.kind == 'dir'):
            raise ArchiveError("archive member '%s' appears twice" % member.name)
        if member.name == '.' and member.kind != 'dir':
            raise ArchiveError("archive member '.' is not a directory")
        if member.kind == 'symlink' and link_escapes(member.name, member.linkname):
            raise ArchiveError("archive member '%s' is a symlink to '%s', which escapes dest"
                               % (member.name, member.linkname))
        if member.kind == 'hardlink':
            try:
                target = normalize_name(member.linkname)
            except ArchiveError:
                target = None
            if target is None or seen.get(target) != 'file':
                raise ArchiveError("archive member '%s' is a hard link to '%s', which is not an "
                                   "earlier regular file of the archive" % (member.name, member.linkname))
            member.linkname = target
        seen[member.name] = member.kind


# --- extracting ---------------------------------------------------------

def _parent_dirs(root, name):
    """Create the missing parents of member name below root; refuse to go
    through anything that is not a real directory (a symlink above all)."""
    parts = name.split('/')[:-1]
    current = root
    for index, part in enumerate(parts):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except OSError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ArchiveError("archive member '%s' goes through '%s', which is not a directory"
                               % (name, '/'.join(parts[:index + 1])))


def _write_member(root, member, dir_times):
    path = os.path.join(root, member.name) if member.name != '.' else root
    mode = member.mode & EXTRACT_MODE_MASK
    if member.kind == 'dir':
        if member.name != '.':
            _parent_dirs(root, member.name)
            if not os.path.isdir(path) or os.path.islink(path):
                os.mkdir(path, 0o700)
        dir_times[member.name] = (mode, member.mtime)
        return
    _parent_dirs(root, member.name)
    if member.kind == 'file':
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0)
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, 'wb') as out:
            source = member.opener()
            try:
                shutil.copyfileobj(source, out, CHUNK)
            finally:
                source.close()
        os.chmod(path, mode)
        os.utime(path, (member.mtime, member.mtime))
    elif member.kind == 'symlink':
        os.symlink(member.linkname, path)
        try:
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
        except (NotImplementedError, OSError):
            pass
    else:
        os.link(os.path.join(root, member.linkname), path)


def _check_links_inside(root):
    """After extraction: every symlink resolves inside root (chains of links
    can escape where each link alone looks harmless)."""
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                real = os.path.realpath(path)
                if real != real_root and not real.startswith(real_root + os.sep):
                    rel = os.path.relpath(path, root)
                    raise ArchiveError("archive member '%s' is a symlink to '%s', which escapes dest"
                                       % (rel, os.readlink(path)))


def _chown_tree(root, uid, gid):
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def extract_into(path, root, mode=None, uid=-1, gid=-1):
    """Extract archive path into the existing empty directory root."""
    handle, members = open_archive(path)
    try:
        check_members(members)
        dir_times = {}
        for member in members:
            _write_member(root, member, dir_times)
    finally:
        handle.close()
    _check_links_inside(root)
    # Directories last, deepest first: writing into one changes its mtime.
    for name in sorted(dir_times, key=lambda n: n.count('/'), reverse=True):
        if name == '.':
            continue
        dir_mode, mtime = dir_times[name]
        full = os.path.join(root, name)
        os.chmod(full, dir_mode)
        os.utime(full, (mtime, mtime))
    if uid != -1 or gid != -1:
        _chown_tree(root, uid, gid)
    top_mode, top_mtime = dir_times.get('.', (0o755, None))
    os.chmod(root, mode if mode is not None else top_mode)
    if top_mtime is not None:
        os.utime(root, (top_mtime, top_mtime))
    return len(members)


def replace_directory(new, dest):
    """Put directory new at dest. An existing directory at dest is renamed
    aside, new renamed in, the old one removed; a failure puts the old one
    back. Both renames are in the same directory."""
    if not os.path.lexists(dest):
        os.rename(new, dest)
        return
    if os.path.islink(dest) or not os.path.isdir(dest):
        raise ArchiveError('dest %s exists and is not a directory' % dest)
    old = tempfile.mkdtemp(dir=os.path.dirname(dest), prefix='.%s.p2p-old-' % os.path.basename(dest))
    os.rmdir(old)           # a free name beside dest
    os.rename(dest, old)
    try:
        os.rename(new, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def extract_atomically(path, dest, mode=None, uid=-1, gid=-1, before_rename=None):
    """Extract archive path into dest: built in a hidden directory beside
    dest, then renamed into place. before_rename(tmp_dir) may add to the tree
    (a stamp) just before. On any failure dest is as it was and the hidden
    directory is gone. Returns the number of members."""
    dest = os.path.abspath(dest).rstrip('/') or '/'
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise ArchiveError('dest parent %s does not exist' % parent)
    if os.path.lexists(dest) and (os.path.islink(dest) or not os.path.isdir(dest)):
        raise ArchiveError('dest %s exists and is not a directory' % dest)
    tmp = tempfile.mkdtemp(dir=parent, prefix='.%s.p2p-tmp-' % os.path.basename(dest))
    try:
        count = extract_into(path, tmp, mode=mode, uid=uid, gid=gid)
        if before_rename is not None:
            before_rename(tmp)
        replace_directory(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count

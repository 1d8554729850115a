# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build and inspect .torrent files (metainfo) with libtorrent.

Torrents made here are deterministic: no creation date, a fixed creator
string and a sorted file list, so the same content and options always give
the same bytes and therefore the same info-hash. That is what makes the
p2p_torrent module idempotent and lets every host agree on a torrent without
shipping it around first.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat
import traceback

from urllib.parse import urlsplit

from ansible_collections.p2p.swarm.plugins.module_utils import fileops

try:
    import libtorrent as lt
except ImportError:
    HAS_LIBTORRENT = False
    LIBTORRENT_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_LIBTORRENT = True
    LIBTORRENT_IMPORT_ERROR = None

CREATOR = 'p2p.swarm'
VERSIONS = ('v1', 'v2', 'hybrid')

KIB = 1024
MIB = 1024 * KIB
MIN_AUTO_PIECE = 256 * KIB
MAX_AUTO_PIECE = 16 * MIB
# BEP 52 (v2) requires a power of two of at least 16 KiB; v1 has no real
# minimum, but the same rule keeps the three versions interchangeable.
MIN_PIECE = 16 * KIB
TARGET_MAX_PIECES = 2000


def choose_piece_size(total_size):
    """Return a piece size in bytes for content of total_size bytes.

    The smallest power of two that gives at most 2000 pieces, so big content
    lands between 1000 and 2000 pieces, clamped to [256 KiB, 16 MiB].

    Why not smaller: each piece costs 20 bytes (v1) and 32 bytes (v2 piece
    layer) in the .torrent, a HAVE message to every peer, a bit in every
    bitfield and a hash check, and all of that grows with the piece count.
    Why not larger: a peer can only pass a piece on once it holds all of it
    and has verified it, so small pieces let data spread through the swarm
    sooner and give more units to share out between peers; above 16 MiB
    clients also hold a lot of memory per piece in flight.
    """
    if total_size < 0:
        raise ValueError('total_size must not be negative')
    size = MIN_AUTO_PIECE
    while size < MAX_AUTO_PIECE and -(-total_size // size) > TARGET_MAX_PIECES:
        size *= 2
    return size


def _is_power_of_two(value):
    return value > 0 and value & (value - 1) == 0


def validate_piece_size(piece_size):
    """Raise ValueError unless piece_size is 0 (auto) or a power of two >= 16 KiB."""
    if piece_size == 0:
        return
    if not isinstance(piece_size, int) or not _is_power_of_two(piece_size) or piece_size < MIN_PIECE:
        raise ValueError(
            'piece_size %r is not valid: use 0 (automatic) or a power of two '
            'of at least %d bytes (16 KiB), e.g. 262144 or 1048576' % (piece_size, MIN_PIECE))


def validate_tracker_url(url):
    """Raise ValueError unless url looks like an http(s) or udp announce URL.

    http and https need a host and a path (the announce endpoint, usually
    /announce); udp needs a host and an explicit port (BEP 15 has no
    default port). Anything else libtorrent would only reject later, at
    announce time, where nobody sees the error.
    """
    if not isinstance(url, str) or not url or url != url.strip() or any(c.isspace() for c in url):
        raise ValueError('tracker URL %r is not valid: it must be a non-empty URL without spaces' % (url,))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ValueError('tracker URL %r is not valid: bad port' % url)
    if scheme not in ('http', 'https', 'udp'):
        raise ValueError('tracker URL %r is not valid: the scheme must be http, https or udp '
                         '(e.g. http://tracker.example:6969/announce)' % url)
    if not parts.hostname:
        raise ValueError('tracker URL %r is not valid: it has no host name' % url)
    if scheme == 'udp':
        if port is None:
            raise ValueError('tracker URL %r is not valid: udp trackers need a port '
                             '(udp://host:port)' % url)
    elif not parts.path.startswith('/'):
        raise ValueError('tracker URL %r is not valid: http(s) trackers need a path, '
                         'e.g. %s://%s/announce' % (url, scheme, parts.netloc))


def _require_libtorrent():
    if not HAS_LIBTORRENT:
        raise RuntimeError('the libtorrent python module is not installed: %s' % LIBTORRENT_IMPORT_ERROR)


def _version_flags(version):
    if version not in VERSIONS:
        raise ValueError('version must be one of %s, not %r' % (', '.join(VERSIONS), version))
    has_v2 = hasattr(lt.create_torrent, 'v2_only')  # libtorrent >= 2.0
    if version == 'v1':
        return lt.create_torrent.v1_only if has_v2 else 0
    if not has_v2:
        raise ValueError('version %s needs libtorrent >= 2.0 (this is %s); use version v1'
                         % (version, lt.__version__))
    if version == 'v2':
        return lt.create_torrent.v2_only
    return 0  # libtorrent 2 makes hybrid v1+v2 torrents unless told otherwise


def _check_readable(full):
    # Opening is the only honest test (os.access lies for root and ACLs),
    # and failing here beats a vague error from the middle of hashing.
    with open(full, 'rb'):
        pass


def _raise_walk_error(err):
    raise err


def _scan(path):
    """Return (base_dir, [(relative_name, size, mtime_ns, full_path)]) for path.

    relative_name is relative to base_dir and starts with the torrent name,
    which is how libtorrent expects file entries.
    """
    path = os.path.normpath(os.path.abspath(path))
    base, name = os.path.split(path)
    if not name:
        raise ValueError('cannot make a torrent of %s: it has no name (pick a file or a subdirectory)' % path)
    st = os.stat(path)  # follows a top-level symlink on purpose; FileNotFoundError if missing
    if stat.S_ISREG(st.st_mode):
        _check_readable(path)
        return base, [(name, st.st_size, st.st_mtime_ns, path)]
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError('cannot make a torrent of %s: it is neither a regular file nor a directory' % path)

    found = []
    for dirpath, dirnames, filenames in os.walk(path, onerror=_raise_walk_error):
        for entry in sorted(dirnames + filenames):
            full = os.path.join(dirpath, entry)
            est = os.lstat(full)
            if stat.S_ISLNK(est.st_mode):
                # A link could point outside the tree or at something that
                # differs per host; refuse rather than guess what was meant.
                raise ValueError('cannot make a torrent of %s: %s is a symbolic link '
                                 '(replace it with the file it points to, or remove it)' % (path, full))
            if stat.S_ISDIR(est.st_mode):
                continue
            if not stat.S_ISREG(est.st_mode):
                raise ValueError('cannot make a torrent of %s: %s is not a regular file '
                                 '(device, fifo or socket)' % (path, full))
            _check_readable(full)
            rel = os.path.relpath(full, base)
            found.append((rel, est.st_size, est.st_mtime_ns, full))
    if not found:
        raise ValueError('cannot make a torrent of %s: the directory holds no files' % path)
    # Byte-wise order of path components: stable across hosts and locales.
    found.sort(key=lambda item: [os.fsencode(part) for part in item[0].split(os.sep)])
    return base, found


def _new_create_torrent(entries, piece_size, flags):
    """(create_torrent, what must outlive it)."""
    if hasattr(lt, 'create_file_entry'):  # libtorrent >= 2.1
        files = [lt.create_file_entry(rel.replace(os.sep, '/'), size) for rel, size in entries]
        return lt.create_torrent(files, piece_size, flags), files
    storage = lt.file_storage()  # libtorrent 2.0.x
    for rel, size in entries:
        storage.add_file(rel, size)
    # 2.0.x's create_torrent keeps a reference to the file_storage, not a
    # copy: the caller holds it until hashing is done, or 2.0.8 segfaults.
    return lt.create_torrent(storage, piece_size, flags), storage


SHA256_KEY = b'p2p-sha256'


def validate_root_cert(pem):
    """Raise ValueError unless pem (text) holds one PEM certificate."""
    begin, end = '-----BEGIN CERTIFICATE-----', '-----END CERTIFICATE-----'
    text = pem.strip() if isinstance(pem, str) else ''
    if not (text.startswith(begin) and text.endswith(end)) or text.count(begin) != 1:
        raise ValueError('the root certificate must be one PEM certificate '
                         '(-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)')


def create_torrent(path, trackers, private=True, piece_size=0, version='hybrid', comment=None,
                   root_cert=None):
    """Make a .torrent for the file or directory at path and return its bytes.

    A file gives a single-file torrent named after it; a directory gives a
    multi-file torrent holding every regular file below it, sorted. Symbolic
    links, devices and fifos inside a directory are refused, and so is a
    directory without files (empty subdirectories cannot be expressed in a
    torrent and are left out). trackers is a list of announce URLs, each put
    in its own tier so that clients try them in the given order.
    piece_size 0 picks one with choose_piece_size(). version is 'v1',
    'v2' or 'hybrid'. root_cert, the PEM text of a CA certificate, makes
    an SSL torrent: libtorrent then exchanges its data only over TLS with
    peers whose certificate that CA signed. The certificate is part of the
    info dictionary, so it changes the info-hash.

    Raises ValueError for bad options or content that cannot be shared, and
    OSError (FileNotFoundError, PermissionError, ...) for file system errors.
    """
    _require_libtorrent()
    flags = _version_flags(version)
    validate_piece_size(piece_size)
    trackers = list(trackers or [])
    for url in trackers:
        validate_tracker_url(url)
    if root_cert is not None:
        validate_root_cert(root_cert)

    base, found = _scan(path)
    total = sum(item[1] for item in found)
    if total == 0:
        raise ValueError('cannot make a torrent of %s: it holds no data (0 bytes)' % os.path.abspath(path))
    if not piece_size:
        piece_size = choose_piece_size(total)

    ct, _keep_alive = _new_create_torrent([(rel, size) for rel, size, _mtime, _full in found], piece_size, flags)
    # A fixed creator and no creation date keep the bytes identical from run
    # to run and across libtorrent versions (2.0.x has no set_creation_date,
    # so the date is dropped from the generated dictionary below).
    ct.set_creator(CREATOR)
    ct.set_priv(bool(private))
    if comment:
        ct.set_comment(comment)
    for tier, url in enumerate(trackers):
        ct.add_tracker(url, tier)
    if root_cert is not None:
        # Stored as given (a PEM file's text), so the bytes stay deterministic.
        ct.set_root_cert(root_cert)

    try:
        lt.set_piece_hashes(ct, base)
    except RuntimeError as exc:
        raise OSError('hashing %s failed: %s' % (os.path.normpath(os.path.abspath(path)), exc))

    # A file that changed while it was read would give a torrent nobody can
    # complete; compare size and mtime with what was listed.
    for rel, size, mtime, full in found:
        st = os.stat(full)
        if st.st_size != size or st.st_mtime_ns != mtime:
            raise ValueError('%s changed while it was being hashed; run again once it is complete' % full)

    metainfo = ct.generate()
    metainfo.pop(b'creation date', None)
    if len(found) == 1 and os.path.isfile(path):
        # Outside the info dictionary, so the info-hash stays the same: the
        # whole file's sha256, for --diff and for people who compare checksums.
        metainfo[SHA256_KEY] = fileops.file_sha256(found[0][3]).encode('ascii')
    data = lt.bencode(metainfo)
    try:
        lt.torrent_info(data)  # never hand out a torrent libtorrent itself rejects
    except RuntimeError as exc:
        conflict = _hybrid_order_conflict([item[0] for item in found]) if version == 'hybrid' else None
        if conflict:
            raise ValueError(
                'cannot make a hybrid torrent of %s: libtorrent orders %s and the directory %s differently '
                'in the v1 and v2 file lists (%s); rename one of them or use version v1 or v2'
                % (os.path.normpath(os.path.abspath(path)), conflict[0], conflict[1], exc))
        raise ValueError('libtorrent made a torrent of %s that it cannot load: %s'
                         % (os.path.normpath(os.path.abspath(path)), exc))
    return data


def _hybrid_order_conflict(relative_paths):
    """Find a name that libtorrent's hybrid writer puts out of v2 order.

    libtorrent 2.x sorts the v1 file list of a hybrid torrent by whole path,
    so 'a.b' comes before 'a/b' ('.' < '/'), while the v2 file tree is sorted
    per directory level ('a' before 'a.b'). The two lists then disagree and
    libtorrent refuses to load its own torrent. Returns (file, directory) or
    None.
    """
    names = {}
    dirs = set()
    for rel in relative_paths:
        parts = rel.split(os.sep)
        for depth in range(1, len(parts)):
            dirs.add(tuple(parts[:depth]))
        for depth in range(1, len(parts) + 1):
            names.setdefault(tuple(parts[:depth - 1]), set()).add(parts[depth - 1])
    for directory in sorted(dirs):
        parent, dname = directory[:-1], directory[-1]
        for other in sorted(names.get(parent, ())):
            if other != dname and other.startswith(dname) and other[len(dname)] < '/':
                return ('/'.join(parent + (other,)), '/'.join(directory) + '/')
    return None


def _text(value):
    if isinstance(value, bytes):
        return value.decode('utf-8', 'replace')
    return value


def _raw_paths(info):
    """Path component lists exactly as the info dict states them.

    libtorrent quietly rewrites '..', absolute and empty components when it
    loads a torrent, so only the raw dict shows what a torrent tried to do.
    Both the v1 'files' list and the v2 'file tree' are read.
    """
    paths = []
    for entry in info.get(b'files') or []:
        if isinstance(entry, dict):
            paths.append([_text(part) for part in entry.get(b'path') or []])

    def walk(node, prefix):
        if not isinstance(node, dict):
            return
        for key, child in node.items():
            if key == b'':
                paths.append(prefix)
            else:
                walk(child, prefix + [_text(key)])

    walk(info.get(b'file tree'), [])
    # A hybrid torrent lists every file twice (v1 list and v2 tree).
    unique, seen = [], set()
    for parts in paths:
        if tuple(parts) not in seen:
            seen.add(tuple(parts))
            unique.append(parts)
    return unique


def _trackers(metainfo):
    # announce-list (BEP 12) supersedes announce when present, as in libtorrent.
    urls = []
    for tier in metainfo.get(b'announce-list') or []:
        for url in tier if isinstance(tier, list) else []:
            urls.append(_text(url))
    if not urls and metainfo.get(b'announce'):
        urls.append(_text(metainfo[b'announce']))
    seen = set()
    return [u for u in urls if not (u in seen or seen.add(u))]


def describe(torrent):
    """Return a dict describing a torrent given as bytes or as a file path.

    Keys: info_hash (v1, 40 hex, None for v2-only), info_hash_v2 (64 hex,
    None for v1-only), version, name, size (bytes of real content, padding
    left out), piece_length, num_pieces, files (list of {path, size}, path
    relative to the torrent's top: the file name for a single-file torrent,
    'dir/file' below the top directory for a multi-file one, padding files
    left out), trackers, private, comment, ssl (whether it is an SSL torrent,
    i.e. carries a root certificate), sha256 (the single file's, when the
    torrent was made here; None otherwise), raw_paths (path components as the
    metainfo states them, for check_paths_safe).

    Raises ValueError('not a valid torrent: ...') for anything libtorrent
    cannot load.
    """
    _require_libtorrent()
    if isinstance(torrent, (bytes, bytearray)):
        data = bytes(torrent)
    else:
        with open(torrent, 'rb') as handle:
            data = handle.read()
    if not data:
        raise ValueError('not a valid torrent: it is empty')
    try:
        ti = lt.torrent_info(data)
        metainfo = lt.bdecode(data)
        info = lt.bdecode(ti.info_section())
    except RuntimeError as exc:
        raise ValueError('not a valid torrent: %s' % exc)
    if not isinstance(metainfo, dict) or not isinstance(info, dict):
        raise ValueError('not a valid torrent: the top level is not a dictionary')

    hashes = ti.info_hashes()
    has_v1, has_v2 = hashes.has_v1(), hashes.has_v2()
    storage = ti.layout() if hasattr(ti, 'layout') else ti.files()
    pad_flag = storage.flag_pad_file
    top = ti.name() + '/'
    files = []
    for index in range(storage.num_files()):
        if storage.file_flags(index) & pad_flag:
            continue
        # libtorrent prefixes multi-file paths with the torrent name; a
        # single-file torrent's only path is the bare name.
        path = storage.file_path(index).replace(os.sep, '/')
        if path.startswith(top):
            path = path[len(top):]
        files.append({'path': path, 'size': storage.file_size(index)})

    return {
        'info_hash': str(hashes.v1) if has_v1 else None,
        'info_hash_v2': str(hashes.v2) if has_v2 else None,
        'version': 'hybrid' if has_v1 and has_v2 else ('v2' if has_v2 else 'v1'),
        'name': ti.name(),
        'size': sum(f['size'] for f in files),
        'piece_length': ti.piece_length(),
        'num_pieces': ti.num_pieces(),
        'files': files,
        'trackers': _trackers(metainfo),
        'private': bool(ti.priv()),
        'comment': ti.comment() or None,
        'ssl': bool(ti.ssl_cert()),
        'sha256': _text(metainfo.get(SHA256_KEY)) or None,
        'raw_name': _text(info.get(b'name')),
        'raw_paths': _raw_paths(info),
    }


def _bad_component(part):
    return part in ('', '.', '..') or '/' in part or '\0' in part


def check_paths_safe(desc):
    """Raise ValueError if the torrent described by desc could write outside its directory.

    Looks at the raw paths from the metainfo (absolute paths, '..', '.',
    empty components, a '/' inside a component) and, in case a
    libtorrent version ever stops sanitising, at the paths libtorrent
    reports too. A torrent that tries this is hostile or broken; refusing it
    beats trusting libtorrent's silent rewrite.
    """
    candidates = []
    raw_name = desc.get('raw_name', desc.get('name'))
    if raw_name is not None:
        candidates.append([raw_name])
    for parts in desc.get('raw_paths') or []:
        candidates.append(list(parts))
    for entry in desc.get('files') or []:
        path = entry['path']
        if path.startswith('/'):
            candidates.append(['/' + path.lstrip('/')])
        else:
            candidates.append(path.split('/'))
    for parts in candidates:
        if not parts or any(_bad_component(part) for part in parts):
            shown = '/'.join(parts) if parts else '(empty path)'
            raise ValueError('unsafe path in torrent: %r (absolute paths, "..", "." and empty '
                             'components are not allowed)' % shown)

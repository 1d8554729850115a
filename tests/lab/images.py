"""Debian root filesystems for lab hosts: built once with mmdebstrap, cached,
then shared read-only as the lower layer of every image host's overlayfs.

    <cache>/<release>/root/        the image (python3 + openssh-server on --variant=apt)
    <cache>/<release>/repo/        the .debs the image lacks for python3-libtorrent,
                                   python3-venv and python3-apt, indexed (see repos.py)
    <cache>/<release>/image.json   what was built, from where, and how long it took

A bare host, like a fresh cloud image: no pip, no ensurepip/venv, no
libtorrent, no apt lists, no Debian mirror in its sources.

    python tests/lab/images.py build bookworm trixie [--cache DIR] [--rebuild]

Standard library only.
"""
import argparse
import fcntl
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import repos

DEFAULT_CACHE = '/var/cache/p2p-lab'
IMAGE_PACKAGES = ('python3', 'openssh-server')
REPO_PACKAGES = ('python3-libtorrent', 'python3-venv', 'python3-apt')
BUILD_TIMEOUT = 1800
FORMAT = 1          # bump when the layout or the image's tweaks change: old caches are rebuilt


class ImageError(RuntimeError):
    pass


def _codename():
    try:
        with open('/etc/os-release') as f:
            return dict(line.rstrip('\n').split('=', 1) for line in f if '=' in line).get(
                'VERSION_CODENAME', '').strip('"')
    except OSError:
        return ''


def _apt_entries(etc='/etc/apt'):
    """(uris, suites, components) of every enabled `deb` source apt reads."""
    entries = []
    files = [os.path.join(etc, 'sources.list')] + sorted(glob.glob(os.path.join(etc, 'sources.list.d', '*.list')))
    for path in files:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = re.sub(r'\[[^\]]*\]', '', line.split('#', 1)[0]).split()
            if len(line) >= 3 and line[0] == 'deb':
                entries.append(([line[1]], [line[2]], line[3:]))
    for path in sorted(glob.glob(os.path.join(etc, 'sources.list.d', '*.sources'))):
        with open(path) as f:
            text = f.read()
        for stanza in re.split(r'\n\s*\n', text):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith('#') or ':' not in line or line[0].isspace():
                    continue
                key, value = line.split(':', 1)
                fields[key.strip().lower()] = value.split()
            if 'deb' in fields.get('types', []) and fields.get('enabled', ['yes'])[0].lower() != 'no':
                entries.append((fields.get('uris', []), fields.get('suites', []), fields.get('components', [])))
    return entries


def mirrors(etc='/etc/apt'):
    """(debian_uri, security_uri or None): where this machine's apt gets Debian
    from, found by the suites named after its own release (bookworm,
    bookworm-security), so an image comes from the same mirror."""
    own = _codename()
    debian = security = None
    for uris, suites, _ in _apt_entries(etc):
        for suite in suites:
            if not uris:
                continue
            if suite == own or (not own and re.fullmatch(r'[a-z]+', suite)):
                debian = debian or uris[0]
            elif suite == own + '-security' or suite.endswith('-security'):
                security = security or uris[0]
    if not debian:
        raise ImageError('no Debian mirror found in %s/sources.list(.d) (looked for suite %r)'
                         % (etc, own or '<release>'))
    return debian.rstrip('/'), security.rstrip('/') if security else None


def source_lines(release, etc='/etc/apt'):
    debian, security = mirrors(etc)
    lines = ['deb %s %s main' % (debian, release)]
    if release not in ('sid', 'unstable'):       # sid has no updates or security suite
        lines.append('deb %s %s-updates main' % (debian, release))
        if security:
            lines.append('deb %s %s-security main' % (security, release))
    return lines


class Image:
    """A cached image of one release (it may not be built yet)."""

    def __init__(self, release, cache_dir=DEFAULT_CACHE):
        if not re.fullmatch(r'[a-z][a-z0-9-]*', release or ''):
            raise ImageError('bad release name %r (use a Debian codename like bookworm)' % release)
        self.release = release
        self.cache_dir = os.path.abspath(cache_dir)
        self.path = os.path.join(self.cache_dir, release)

    @property
    def root(self):
        return os.path.join(self.path, 'root')

    @property
    def repo(self):
        return os.path.join(self.path, 'repo')

    @property
    def meta_file(self):
        return os.path.join(self.path, 'image.json')

    def meta(self):
        try:
            with open(self.meta_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def ready(self):
        meta = self.meta()
        return bool(meta) and meta.get('format') == FORMAT and os.path.isdir(self.root)

    def in_use(self):
        """True while an overlayfs (an image host) has this image as its lower layer."""
        with open('/proc/self/mountinfo') as f:
            return any('lowerdir=%s,' % self.root in line or 'lowerdir=%s ' % self.root in line
                       for line in f)

    def ensure(self, rebuild=False, log=None):
        """Build the image unless a complete one is cached; returns its meta.
        One builder at a time per release (a lock file), and the build goes
        into a temporary directory renamed into place at the end, so a killed
        build never leaves a half image where the cache expects a whole one."""
        os.makedirs(self.cache_dir, mode=0o755, exist_ok=True)
        with open(os.path.join(self.cache_dir, '.%s.lock' % self.release), 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.ready() and not rebuild:
                return self.meta()
            if self.in_use():
                raise ImageError('image %s is the lower layer of a running lab host; take that lab '
                                 'down before rebuilding it' % self.root)
            for stale in glob.glob(os.path.join(self.cache_dir, '.%s.build-*' % self.release)):
                shutil.rmtree(stale, ignore_errors=True)     # a build killed half-way
            tmp = tempfile.mkdtemp(prefix='.%s.build-' % self.release, dir=self.cache_dir)
            try:
                meta = self._build(tmp, log or (lambda msg: None))
                os.chmod(tmp, 0o755)
                old = None
                if os.path.exists(self.path):
                    old = tempfile.mkdtemp(prefix='.%s.old-' % self.release, dir=self.cache_dir)
                    os.rename(self.path, os.path.join(old, 'x'))
                os.rename(tmp, self.path)
                if old:
                    shutil.rmtree(old, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return meta

    def _build(self, tmp, log):
        if not shutil.which('mmdebstrap'):
            raise ImageError('mmdebstrap is not installed (apt-get install mmdebstrap, or bash scripts/setup.sh)')
        root, repo = os.path.join(tmp, 'root'), os.path.join(tmp, 'repo')
        os.makedirs(repo)
        sources = source_lines(self.release)
        q = shlex.quote
        hooks = [
            # The repo holds what the image lacks, resolved by the image's own
            # apt while it still has its lists (mmdebstrap cleans them after
            # the hooks); what mmdebstrap itself downloaded is dropped first.
            'rm -f "$1"/var/cache/apt/archives/*.deb',
            'date +%%s.%%N > %s' % q(os.path.join(tmp, 'repo.t0')),
            'chroot "$1" apt-get install --download-only --no-install-recommends -y -q %s'
            % ' '.join(REPO_PACKAGES),
            'cp "$1"/var/cache/apt/archives/*.deb %s/' % q(repo),
            'date +%%s.%%N > %s' % q(os.path.join(tmp, 'repo.t1')),
            # A bare host: no Debian mirror (the lab adds its own repo per host),
            # no shared host keys (the lab writes one per host), no DNS.
            ': > "$1"/etc/apt/sources.list',
            'rm -f "$1"/etc/ssh/ssh_host_*',
            ': > "$1"/etc/resolv.conf',
        ]
        argv = ['mmdebstrap', '--mode=root', '--format=directory', '--variant=apt',
                '--include=%s' % ','.join(IMAGE_PACKAGES),
                '--aptopt=Acquire::Retries "3"']
        argv += ['--customize-hook=%s' % h for h in hooks]
        argv += [self.release, root] + sources
        log('building image %s with mmdebstrap from %s' % (self.release, sources[0].split()[1]))
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
        with open(os.path.join(tmp, 'mmdebstrap.log'), 'w') as f:
            f.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise ImageError('mmdebstrap %s failed (rc=%d): %s' % (
                self.release, proc.returncode, ' | '.join(proc.stderr.strip().splitlines()[-8:])))
        image_seconds = time.monotonic() - t0
        t1 = time.monotonic()
        count = repos.index_apt_repo(repo, label='p2p-lab-%s' % self.release)
        repo_seconds = time.monotonic() - t1
        try:        # the download inside mmdebstrap's run, from the hooks' time stamps
            stamps = [float(open(os.path.join(tmp, 'repo.t%d' % i)).read()) for i in (0, 1)]
            download_seconds = stamps[1] - stamps[0]
        except (OSError, ValueError):
            download_seconds = None
        python = subprocess.run(['chroot', root, '/usr/bin/python3', '--version'], capture_output=True,
                                text=True, timeout=60, check=False).stdout.split()[-1:]
        meta = {
            'format': FORMAT, 'release': self.release, 'built_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
            'sources': sources, 'image_packages': list(IMAGE_PACKAGES), 'repo_packages': list(REPO_PACKAGES),
            'python': python[0] if python else '', 'repo_debs': count,
            'repo_files': sorted(f for f in os.listdir(repo) if f.endswith('.deb')),
            'sshd_penalties': _sshd_has_penalties(root),
            'build_seconds': round(image_seconds, 1), 'index_seconds': round(repo_seconds, 2),
            'repo_download_seconds': round(download_seconds, 1) if download_seconds is not None else None,
            'root_bytes': _du(root), 'repo_bytes': _du(repo),
        }
        with open(os.path.join(tmp, 'image.json'), 'w') as f:
            json.dump(meta, f, indent=1)
        log('image %s: python %s, %d .debs in its repo, %.0fs' % (
            self.release, meta['python'], count, image_seconds + repo_seconds))
        return meta


def _sshd_has_penalties(root):
    """OpenSSH >= 9.8 (trixie) blocks a source after a burst of connections
    that do not log in, as the lab's readiness probe does; older sshd rejects
    the option that turns it off, so the lab needs to know which it has."""
    try:
        with open(os.path.join(root, 'usr/sbin/sshd'), 'rb') as f:
            return b'persourcepenalties' in f.read().lower()
    except OSError:
        return False


def _du(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += st.st_blocks * 512
    return total


def main(argv=None):
    p = argparse.ArgumentParser(description='p2p lab host images')
    sub = p.add_subparsers(dest='cmd', required=True)
    b = sub.add_parser('build', help='build (or check) cached images')
    b.add_argument('releases', nargs='+')
    b.add_argument('--cache', default=DEFAULT_CACHE)
    b.add_argument('--rebuild', action='store_true')
    args = p.parse_args(argv)
    for release in args.releases:
        meta = Image(release, args.cache).ensure(rebuild=args.rebuild, log=print)
        print(json.dumps(meta, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())

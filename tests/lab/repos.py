"""Package sources inside the lab: a PEP 503 index of libtorrent wheels and a
small apt repository per image release, served over HTTP from the controller.

Lab hosts reach nothing but the lab, so whatever a role installs on them has
to come from here: `lab.py up` starts one server process on the bridge
address(es) and `down` stops it.

    http://<controller>:<port>/simple/                  PEP 503 index (links carry #sha256=)
    http://<controller>:<port>/simple/libtorrent/
    http://<controller>:<port>/wheels/<file>.whl
    http://<controller>:<port>/debian/<release>/        flat apt repo: deb [trusted=yes] URL ./

    python tests/lab/repos.py serve --bind 10.231.0.1 [--bind fd00:10:231:0::1] --port 8080 \\
        --wheels .lab/wheels --apt bookworm=/var/cache/p2p-lab/bookworm/repo --lab-dir /var/lib/p2p-lab
    python tests/lab/repos.py index DIR       # (re)write Packages, Packages.gz, Release of a .deb dir

Standard library only (plus apt-ftparchive or dpkg-scanpackages for indexing).
"""
import argparse
import gzip
import hashlib
import html
import http.server
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse

SERVER_MARK = 'repos.py'        # how `down` recognises a lab's server among processes
_WHEEL_RE = re.compile(r'^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(?:-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$')


class RepoError(RuntimeError):
    pass


def normalize(name):
    """PEP 503 project name normalisation."""
    return re.sub(r'[-_.]+', '-', name).lower()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def scan_wheels(wheel_dir):
    """{normalized project: [(filename, sha256), ...]} for the wheels in wheel_dir."""
    projects = {}
    if not wheel_dir or not os.path.isdir(wheel_dir):
        return projects
    for name in sorted(os.listdir(wheel_dir)):
        m = _WHEEL_RE.match(name)
        if m and os.path.isfile(os.path.join(wheel_dir, name)):
            projects.setdefault(normalize(m.group('name')), []).append(
                (name, sha256_file(os.path.join(wheel_dir, name))))
    return projects


def _page(title, links):
    body = ''.join('<a href="%s">%s</a><br>\n' % (html.escape(href, quote=True), html.escape(text))
                   for href, text in links)
    return ('<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
            '<title>%s</title></head><body>\n%s</body></html>\n' % (html.escape(title), body)).encode()


# --- apt repositories -------------------------------------------------------

def index_apt_repo(repo_dir, label='p2p-lab'):
    """Write Packages, Packages.gz and Release for the .debs in repo_dir (a
    flat repository: `deb [trusted=yes] URL ./`). apt-ftparchive when there
    is one (it also writes the Release file), else dpkg-scanpackages."""
    debs = [f for f in os.listdir(repo_dir) if f.endswith('.deb')]
    if not debs:
        raise RepoError('no .deb files in %s' % repo_dir)
    if shutil.which('apt-ftparchive'):
        packages = _check_output(['apt-ftparchive', 'packages', '.'], repo_dir)
    elif shutil.which('dpkg-scanpackages'):
        packages = _check_output(['dpkg-scanpackages', '--multiversion', '.', '/dev/null'], repo_dir)
    else:
        raise RepoError('neither apt-ftparchive (apt-utils) nor dpkg-scanpackages (dpkg-dev) is installed')
    with open(os.path.join(repo_dir, 'Packages'), 'wb') as f:
        f.write(packages)
    # mtime 0: the same .debs give the same bytes
    with gzip.GzipFile(os.path.join(repo_dir, 'Packages.gz'), 'wb', mtime=0) as f:
        f.write(packages)
    release = os.path.join(repo_dir, 'Release')
    if os.path.exists(release):
        os.unlink(release)      # never hash an old Release into the new one
    if shutil.which('apt-ftparchive'):
        text = _check_output(['apt-ftparchive', '-o', 'APT::FTPArchive::Release::Origin=%s' % label,
                              '-o', 'APT::FTPArchive::Release::Label=%s' % label, 'release', '.'], repo_dir)
    else:
        text = _release_text(repo_dir, label).encode()
    with open(release + '.tmp', 'wb') as f:
        f.write(text)
    os.replace(release + '.tmp', release)
    return len(debs)


def _release_text(repo_dir, label):
    lines = ['Origin: %s' % label, 'Label: %s' % label, 'SHA256:']
    for name in ('Packages', 'Packages.gz'):
        path = os.path.join(repo_dir, name)
        lines.append(' %s %d %s' % (sha256_file(path), os.path.getsize(path), name))
    return '\n'.join(lines) + '\n'


def _check_output(argv, cwd):
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RepoError('%s failed: %s' % (' '.join(argv), proc.stderr.decode(errors='replace').strip()))
    return proc.stdout


# --- the server -------------------------------------------------------------

class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files under /wheels/ and /debian/<release>/, generated /simple/ pages."""
    protocol_version = 'HTTP/1.1'      # keep-alive: apt fetches many files
    server_version = 'p2p-lab-packages'
    config = None                      # set by serve(): {'wheels': dir, 'apt': {release: dir}, 'projects': {...}}

    def log_message(self, fmt, *args):
        sys.stderr.write('%s %s\n' % (self.address_string(), fmt % args))

    def _send_bytes(self, data, ctype='text/html; charset=utf-8'):
        self.send_response(200)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def _simple(self, parts):
        projects = self.config['projects']
        if not parts:
            return self._send_bytes(_page('Simple index', [(p + '/', p) for p in sorted(projects)]))
        if len(parts) == 1 and normalize(parts[0]) in projects:
            if parts[0] != normalize(parts[0]):     # PEP 503: redirect to the normalized name
                self.send_response(301)
                self.send_header('Location', '/simple/%s/' % normalize(parts[0]))
                self.send_header('Content-Length', '0')
                self.end_headers()
                return None
            links = [('../../wheels/%s#sha256=%s' % (urllib.parse.quote(f), digest), f)
                     for f, digest in projects[parts[0]]]
            return self._send_bytes(_page('Links for %s' % parts[0], links))
        return self.send_error(404, 'no such project')

    def translate_path(self, path):
        """URL path -> file, only inside the served directories ('' = 404)."""
        # apt asks for '<repo>/./Packages' (flat repo): '.' parts are skipped
        parts = [p for p in urllib.parse.unquote(urllib.parse.urlsplit(path).path).split('/') if p not in ('', '.')]
        if any(p == '..' or '\0' in p for p in parts):
            return ''
        if parts[:1] == ['wheels'] and self.config['wheels']:
            return os.path.join(self.config['wheels'], *parts[1:])
        if parts[:1] == ['debian'] and len(parts) >= 2 and parts[1] in self.config['apt']:
            return os.path.join(self.config['apt'][parts[1]], *parts[2:])
        return ''

    def _route(self):
        parts = [p for p in urllib.parse.urlsplit(self.path).path.split('/') if p not in ('', '.')]
        if parts[:1] == ['simple']:
            if not self.path.split('?')[0].endswith('/'):
                self.send_response(301)
                self.send_header('Location', self.path.split('?')[0] + '/')
                self.send_header('Content-Length', '0')
                self.end_headers()
                return None
            return self._simple(parts[1:])
        if not parts:
            links = [('simple/', 'simple/')] + [('debian/%s/' % r, 'debian/%s/' % r)
                                                 for r in sorted(self.config['apt'])]
            return self._send_bytes(_page('p2p lab packages', links))
        if not self.translate_path(self.path):
            return self.send_error(404)
        return super().do_GET() if self.command == 'GET' else super().do_HEAD()

    def do_GET(self):
        self._route()

    def do_HEAD(self):
        self._route()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve(binds, port, wheel_dir, apt_dirs):
    """Serve forever on every address in binds (IPv4 and/or IPv6)."""
    Handler.config = {'wheels': wheel_dir, 'apt': dict(apt_dirs), 'projects': scan_wheels(wheel_dir)}
    servers = []
    for addr in binds:
        cls = _Server6 if ipaddress.ip_address(addr).version == 6 else _Server
        servers.append(cls((addr, port), Handler))
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print('serving %s on port %d: %d wheels, apt %s' % (
        ' '.join(binds), port, sum(len(v) for v in Handler.config['projects'].values()),
        ' '.join(sorted(apt_dirs)) or '-'), file=sys.stderr, flush=True)
    servers[0].serve_forever()


def main(argv=None):
    p = argparse.ArgumentParser(description='p2p lab package sources')
    sub = p.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('serve')
    s.add_argument('--bind', action='append', required=True)
    s.add_argument('--port', type=int, required=True)
    s.add_argument('--wheels', default='')
    s.add_argument('--apt', action='append', default=[], metavar='RELEASE=DIR')
    # Not used by the server: it names the lab in the process list, so `down`
    # finds this process even when the lab's state file is gone.
    s.add_argument('--lab-dir', default='')
    i = sub.add_parser('index')
    i.add_argument('dir')
    args = p.parse_args(argv)
    if args.cmd == 'index':
        print('%d packages' % index_apt_repo(args.dir))
        return 0
    apt = dict(a.split('=', 1) for a in args.apt)
    serve(args.bind, args.port, args.wheels, apt)
    return 0


if __name__ == '__main__':
    sys.exit(main())

# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Install libtorrent from a wheel on a host that has only Python 3.

A bare Debian or Ubuntu host has no pip, no ensurepip and no venv module
(they are in python3-pip and python3-venv). None of them is needed: a wheel
is a zip archive meant to be unpacked into site-packages (PEP 427), and a
directory with a pyvenv.cfg and a bin/python link to the system interpreter
is a virtual environment (PEP 405). This file does exactly that, picks the
wheel that matches the host's interpreter and machine, and reads a PEP 503
package index with the standard library.

It runs on the managed host before anything is installed: the standard
library and Ansible's module_utils only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin

from ansible.module_utils.urls import open_url

from ansible_collections.p2p.swarm.plugins.module_utils.versions import version_tuple

PROJECT = 'libtorrent'
INDEX_TIMEOUT = 30          # seconds per index request
MAX_WHEEL_BYTES = 256 << 20

# The probe each candidate interpreter runs: prints libtorrent's version.
PROBE = 'import libtorrent; print(libtorrent.__version__)'

_WHEEL_RE = re.compile(
    r'^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?'
    r'-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$')


class WheelError(Exception):
    """A one-line reason why libtorrent cannot be installed this way."""


def host_python():
    """What a wheel must match on this host: 'cp311', the machine, glibc."""
    libc = os.confstr('CS_GNU_LIBC_VERSION') if hasattr(os, 'confstr') else None
    glibc = version_tuple(libc.split()[-1]) if libc and libc.startswith('glibc') else None
    return {
        'tag': 'cp%d%d' % sys.version_info[:2],
        'version': '%d.%d.%d' % sys.version_info[:3],
        'machine': platform.machine(),
        'glibc': '.'.join(str(x) for x in glibc) if glibc else None,
    }


def describe_host(host):
    libc = ' (glibc %s)' % host['glibc'] if host['glibc'] else ''
    return 'CPython %s on %s%s' % (host['version'].rsplit('.', 1)[0], host['machine'], libc)


def _platform_ok(plat, host):
    """manylinux_X_Y_<arch>, manylinux2014_<arch> (= 2.17), manylinux1/2010, linux_<arch>."""
    for tag in plat.split('.'):
        legacy = {'manylinux1': (2, 5), 'manylinux2010': (2, 12), 'manylinux2014': (2, 17)}
        m = re.match(r'^manylinux_(\d+)_(\d+)_(.+)$', tag)
        if m:
            need, arch = (int(m.group(1)), int(m.group(2))), m.group(3)
        else:
            name, _sep, arch = tag.partition('_')
            if name in legacy:
                need = legacy[name]
            elif name == 'linux':
                need = (0, 0)
            else:
                continue
        if arch != host['machine']:
            continue
        if need == (0, 0) or (host['glibc'] and version_tuple(host['glibc'])[:2] >= need):
            return True
    return False


def wheel_fits(filename, host):
    """True when the wheel file name says it runs on this interpreter and machine."""
    m = _WHEEL_RE.match(filename)
    if not m or m.group('name').lower().replace('_', '-') != PROJECT:
        return False
    pys, abis = m.group('py').split('.'), m.group('abi').split('.')
    if host['tag'] in pys and host['tag'] in abis:
        pass
    elif 'abi3' in abis and any(p.startswith('cp3') and version_tuple(p[3:] or '0') <= version_tuple(host['tag'][3:])
                                for p in pys):
        pass
    else:
        return False
    return _platform_ok(m.group('plat'), host)


def pick_wheel(filenames, host):
    """The newest libtorrent wheel among filenames that fits host, or None."""
    fitting = [f for f in filenames if wheel_fits(os.path.basename(f), host)]
    if not fitting:
        return None
    return max(fitting, key=lambda f: version_tuple(_WHEEL_RE.match(os.path.basename(f)).group('version')))


# --- a PEP 503 index -------------------------------------------------------

class _Links(HTMLParser):
    def __init__(self):
        HTMLParser.__init__(self)
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag == 'a':
            href = dict(attrs).get('href')
            if href:
                self.links.append(href)


def _fetch(url, limit):
    response = open_url(url, headers={'Accept': 'text/html'}, http_agent='p2p.swarm', timeout=INDEX_TIMEOUT)
    try:
        data = response.read(limit + 1)
    finally:
        response.close()
    if len(data) > limit:
        raise WheelError('%s is larger than %d bytes' % (url, limit))
    return data


def index_wheel(index_url, host):
    """(url, sha256 or None) of the newest fitting wheel on a PEP 503 index."""
    page = index_url.rstrip('/') + '/' + PROJECT + '/'
    try:
        html = _fetch(page, 16 << 20).decode('utf-8', 'replace')
    except WheelError:
        raise
    except Exception as exc:  # URLError, HTTPError, timeouts, bad URLs
        raise WheelError('cannot read the package index %s: %s' % (page, getattr(exc, 'reason', None) or exc))
    parser = _Links()
    parser.feed(html)
    links = {}
    for href in parser.links:
        url, fragment = urldefrag(urljoin(page, href))
        links[url.rsplit('/', 1)[-1]] = (url, fragment[len('sha256='):] if fragment.startswith('sha256=') else None)
    chosen = pick_wheel(list(links), host)
    if chosen is None:
        raise WheelError('the package index %s has no libtorrent wheel for %s' % (page, describe_host(host)))
    return links[chosen]


def download(url, sha256, directory):
    """Download url into directory, check its sha256; return the file path."""
    path = os.path.join(directory, url.rsplit('/', 1)[-1])
    try:
        data = _fetch(url, MAX_WHEEL_BYTES)
    except WheelError:
        raise
    except Exception as exc:
        raise WheelError('cannot download %s: %s' % (url, getattr(exc, 'reason', None) or exc))
    if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise WheelError('%s does not match the sha256 the index gives for it' % url)
    with open(path, 'wb') as handle:
        handle.write(data)
    return path


# --- the environment --------------------------------------------------------

def venv_python(venv):
    return os.path.join(venv, 'bin', 'python')


def site_packages(venv, host):
    return os.path.join(venv, 'lib', 'python%s' % host['version'].rsplit('.', 1)[0], 'site-packages')


def make_venv(venv, base_python, host, system_site_packages=False):
    """A PEP 405 environment without the venv module: pyvenv.cfg, a link to
    the base interpreter and an empty site-packages. For a wheel it does not
    see the system's packages, so an older libtorrent there never shadows
    ours; on top of a system libtorrent it does (system_site_packages)."""
    real = os.path.realpath(base_python)
    for sub in ('bin', site_packages(venv, host)):
        os.makedirs(os.path.join(venv, sub), 0o755, exist_ok=True)
    cfg = 'home = %s\ninclude-system-site-packages = %s\nversion = %s\n' % (
        os.path.dirname(real), 'true' if system_site_packages else 'false', host['version'])
    with open(os.path.join(venv, 'pyvenv.cfg'), 'w') as handle:
        handle.write(cfg)
    for name in ('python', 'python3'):
        link = os.path.join(venv, 'bin', name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(real, link)


def install_wheel(wheel, venv, base_python, host):
    """Unpack wheel into venv's site-packages (made when missing). Each
    top-level entry is unpacked beside its place and renamed in, so an
    interrupted install never leaves a half-written package."""
    if not wheel_fits(os.path.basename(wheel), host):
        raise WheelError('%s does not fit %s' % (os.path.basename(wheel), describe_host(host)))
    make_venv(venv, base_python, host)
    target = site_packages(venv, host)
    staging = tempfile.mkdtemp(prefix='.p2p-wheel-', dir=target)
    try:
        try:
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    if member.startswith('/') or '..' in member.split('/'):
                        raise WheelError('%s holds an unsafe path: %s' % (os.path.basename(wheel), member))
                archive.extractall(staging)
                for info in archive.infolist():
                    mode = info.external_attr >> 16
                    if mode & 0o111:
                        os.chmod(os.path.join(staging, info.filename), mode & 0o777)
        except zipfile.BadZipFile as exc:
            raise WheelError('%s is not a wheel (zip): %s' % (os.path.basename(wheel), exc))
        for name in os.listdir(staging):
            final = os.path.join(target, name)
            if os.path.isdir(final) and not os.path.islink(final):
                shutil.rmtree(final)
            elif os.path.lexists(final):
                os.unlink(final)
            os.rename(os.path.join(staging, name), final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def probe(python):
    """libtorrent's version under the interpreter python, or None when that
    interpreter is missing or cannot import it. PYTHONPATH is dropped so
    what is found is what the agent will find."""
    env = dict((k, v) for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME'))
    try:
        proc = subprocess.run([python, '-c', PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    lines = proc.stdout.decode('utf-8', 'replace').split()
    return lines[-1] if lines else None

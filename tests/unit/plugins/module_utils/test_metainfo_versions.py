"""The same content gives the same torrent bytes, and so the same info-hash,
whichever libtorrent makes it: the controller venv's 2.1 wheel here, and
Debian 12's python3-libtorrent 2.0.8 under /usr/bin/python3 (installed by
scripts/setup.sh). A seeder on a distribution's 2.0.x and peers on 2.1 must
agree on the swarm."""
import base64
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import metainfo


SYSTEM_PYTHON = '/usr/bin/python3'
# The directory that holds ansible_collections/p2p/swarm (tests/conftest.py makes it).
COLLECTIONS = metainfo.__file__.rsplit(os.sep + 'ansible_collections' + os.sep, 1)[0]

MAKE = r'''
import base64, json, sys
from ansible_collections.p2p.swarm.plugins.module_utils import metainfo
import libtorrent
cases = json.loads(sys.argv[1])
out = {'version': libtorrent.__version__, 'torrents': {}}
for name, case in cases.items():
    data = metainfo.create_torrent(case['path'], ['http://[fd00::2]:6969/announce'], version=case['version'],
                                   root_cert=case.get('root_cert'))
    out['torrents'][name] = base64.b64encode(data).decode()
print(json.dumps(out))
'''


def make_all(python, cases):
    proc = subprocess.run([python, '-c', MAKE, json.dumps(cases)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=COLLECTIONS), check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope='module')
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp('content')
    (root / 'file.bin').write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    tree = root / 'tree'
    (tree / 'sub').mkdir(parents=True)
    (tree / 'a.txt').write_bytes(os.urandom(1000))
    (tree / 'sub' / 'b.bin').write_bytes(os.urandom(700000))
    found = {}
    for version in metainfo.VERSIONS:
        found['file-' + version] = {'path': str(root / 'file.bin'), 'version': version}
        found['tree-' + version] = {'path': str(tree), 'version': version}
    pem = subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
                          '-nodes', '-keyout', '/dev/null', '-subj', '/CN=p2p test CA', '-days', '1'],
                         capture_output=True, text=True, check=False).stdout
    if pem:
        found['ssl-hybrid'] = {'path': str(root / 'file.bin'), 'version': 'hybrid', 'root_cert': pem}
    return found


def test_distribution_libtorrent_2_0_and_the_wheel_make_identical_torrents(cases):
    system = make_all(SYSTEM_PYTHON, cases)
    ours = make_all(sys.executable, cases)
    assert system['version'].startswith('2.0.'), 'need Debian python3-libtorrent 2.0.x under %s' % SYSTEM_PYTHON
    assert ours['version'].startswith('2.1.'), ours['version']
    assert 'ssl-hybrid' in cases
    for name in cases:
        assert system['torrents'][name] == ours['torrents'][name], name
        # Made in the same second, dated torrents would match too: no date at all.
        data = base64.b64decode(ours['torrents'][name])
        assert b'13:creation date' not in data and b'10:created by9:p2p.swarm' in data, name

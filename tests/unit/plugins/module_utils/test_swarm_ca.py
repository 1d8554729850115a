# -*- coding: utf-8 -*-
"""The per-run CA of an authenticated swarm (module_utils/swarm_ca.py)."""

import os
import stat

from cryptography import x509

from ansible_collections.p2p.swarm.plugins.module_utils import fileops, swarm_ca


def mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def make_ca(directory, name='ca'):
    key, cert = str(directory / ('%s.key' % name)), str(directory / ('%s.pem' % name))
    swarm_ca.make_ca(key, cert)
    return key, cert


def test_ca_is_a_ca_with_a_private_key(tmp_path):
    key, cert = make_ca(tmp_path)
    assert mode(key) == 0o600 and mode(cert) == 0o644
    loaded = swarm_ca.load_cert(cert)
    assert loaded.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert loaded.issuer == loaded.subject
    assert swarm_ca.signed_by(cert, cert)            # self-signed
    assert swarm_ca.key_matches(cert, key)
    # Nothing left over from the atomic writes.
    assert sorted(os.listdir(str(tmp_path))) == ['ca.key', 'ca.pem']


def test_host_cert_is_signed_by_its_ca_and_valid_for_any_torrent(tmp_path):
    ca_key, ca_cert = make_ca(tmp_path)
    other_key, other_cert = make_ca(tmp_path, 'other')
    swarm_ca.make_host_cert(ca_key, ca_cert, str(tmp_path / 'h.key'), str(tmp_path / 'h.pem'), 'web-01')
    host = swarm_ca.load_cert(str(tmp_path / 'h.pem'))
    assert mode(tmp_path / 'h.key') == 0o600 and mode(tmp_path / 'h.pem') == 0o644
    assert swarm_ca.dns_names(str(tmp_path / 'h.pem')) == ['*']
    assert host.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert swarm_ca.signed_by(str(tmp_path / 'h.pem'), ca_cert)
    assert not swarm_ca.signed_by(str(tmp_path / 'h.pem'), other_cert)
    assert swarm_ca.key_matches(str(tmp_path / 'h.pem'), str(tmp_path / 'h.key'))
    assert not swarm_ca.key_matches(str(tmp_path / 'h.pem'), other_key)


def test_host_cert_for_one_torrent_name(tmp_path):
    ca_key, ca_cert = make_ca(tmp_path)
    swarm_ca.make_host_cert(ca_key, ca_cert, str(tmp_path / 'h.key'), str(tmp_path / 'h.pem'), 'h',
                            dns_names=['pkg.bin', 'other.bin'])
    assert swarm_ca.dns_names(str(tmp_path / 'h.pem')) == ['pkg.bin', 'other.bin']


def test_a_key_is_never_readable_by_others_even_over_an_old_file(tmp_path):
    path = tmp_path / 'k'
    path.write_bytes(b'old')
    os.chmod(str(path), 0o644)
    fileops.write_atomic(str(path), b'secret', 0o600, fsync=True)
    assert path.read_bytes() == b'secret' and mode(path) == 0o600

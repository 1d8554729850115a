# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A certificate authority for one distribution run, for libtorrent SSL torrents.

An SSL torrent carries the PEM of a root certificate in its info dictionary.
libtorrent then talks to the torrent's peers over TLS only, and both ends
must show a certificate signed by that root whose subjectAltName holds a DNS
entry equal to the torrent's name, or "*" (any torrent of that root). A host
without such a certificate can neither fetch data nor offer any.

Here the root is a fresh CA made for one run: its key stays on the
controller, each host gets its own key and a certificate signed by the CA.
Keys are EC P-256 (small, fast to make and to handshake with). Uses the
`cryptography` package, which ansible-core itself depends on.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import traceback

from ansible_collections.p2p.swarm.plugins.module_utils import fileops

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

# A run lasts hours; a month leaves room for kept seeds and skewed clocks.
DEFAULT_DAYS = 30
# Hosts whose clock runs a little behind the controller's must accept the cert too.
BACKDATE = datetime.timedelta(hours=1)
# Any torrent signed by the CA; a per-run CA signs only this run's torrents anyway.
ANY_TORRENT = '*'


def _new_key():
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, u'p2p.swarm'),
                      x509.NameAttribute(NameOID.COMMON_NAME, u'%s' % common_name)])


def _validity(days):
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - BACKDATE, now + datetime.timedelta(days=days)


def load_cert(path):
    with open(path, 'rb') as handle:
        return x509.load_pem_x509_certificate(handle.read())


def load_key(path):
    with open(path, 'rb') as handle:
        return serialization.load_pem_private_key(handle.read(), password=None)


def make_ca(key_path, cert_path, common_name='p2p.swarm run CA', days=DEFAULT_DAYS):
    """Create a CA key (0600) and its self-signed certificate (0644)."""
    key = _new_key()
    not_before, not_after = _validity(days)
    subject = _name(common_name)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    # The key first: a cert without its key would look like a usable CA.
    fileops.write_atomic(key_path, _key_pem(key), 0o600, fsync=True)
    fileops.write_atomic(cert_path, _cert_pem(cert), 0o644, fsync=True)


def make_host_cert(ca_key_path, ca_cert_path, key_path, cert_path, common_name,
                   dns_names=(ANY_TORRENT,), days=DEFAULT_DAYS):
    """Create a host key (0600) and a certificate for it signed by the CA (0644).

    dns_names go into subjectAltName; libtorrent accepts the certificate for
    a torrent whose name is one of them, or for any torrent with "*".
    """
    ca_key, ca_cert = load_key(ca_key_path), load_cert(ca_cert_path)
    key = _new_key()
    not_before, not_after = _validity(days)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(u'%s' % n) for n in dns_names]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    fileops.write_atomic(key_path, _key_pem(key), 0o600, fsync=True)
    fileops.write_atomic(cert_path, _cert_pem(cert), 0o644, fsync=True)


def signed_by(cert_path, ca_cert_path):
    """Whether the certificate at cert_path was signed by the CA at ca_cert_path."""
    cert, ca_cert = load_cert(cert_path), load_cert(ca_cert_path)
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def dns_names(cert_path):
    """The DNS entries of a certificate's subjectAltName."""
    try:
        ext = load_cert(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.DNSName)


def key_matches(cert_path, key_path):
    """Whether the private key at key_path belongs to the certificate at cert_path."""
    public = load_cert(cert_path).public_key()
    mine = load_key(key_path).public_key()
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return public.public_bytes(*fmt) == mine.public_bytes(*fmt)

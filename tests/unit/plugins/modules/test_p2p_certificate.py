# -*- coding: utf-8 -*-
"""The p2p_certificate module, run as a subprocess the way Ansible runs it."""

import os
import stat

import yaml

from ansible_collections.p2p.swarm.plugins.module_utils import swarm_ca
from ansible_collections.p2p.swarm.plugins.modules import p2p_certificate

from module_runner import run_module


def mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def make_ca(directory, name='ca'):
    key, cert = str(directory / ('%s.key' % name)), str(directory / ('%s.pem' % name))
    swarm_ca.make_ca(key, cert)
    return key, cert


def test_documentation_is_valid_yaml():
    doc = yaml.safe_load(p2p_certificate.DOCUMENTATION)
    yaml.safe_load(p2p_certificate.EXAMPLES)
    returns = yaml.safe_load(p2p_certificate.RETURN)
    assert set(doc['options']) == {'ca_key', 'ca_cert', 'ca_name', 'cert', 'key', 'common_name', 'dns_names', 'days'}
    assert {'ca_created', 'cert_created', 'ca_cert', 'cert', 'dns_names'} == set(returns)


def run(tmp_path, check_mode=False, **args):
    rc, result, dummy = run_module('p2p_certificate', tmp_path, check_mode, timeout=60, **args)
    return rc, result


def test_module_makes_the_ca_once_and_a_cert_per_host(tmp_path):
    ca = dict(ca_key=str(tmp_path / 'ca.key'), ca_cert=str(tmp_path / 'ca.pem'))
    web = dict(ca, cert=str(tmp_path / 'web.pem'), key=str(tmp_path / 'web.key'), common_name='web')
    rc, result = run(tmp_path, check_mode=True, **web)
    assert rc == 0 and result['changed'] and result['ca_created'] and result['cert_created'], result
    assert os.listdir(str(tmp_path)) == []            # check mode writes nothing
    rc, result = run(tmp_path, **web)
    assert rc == 0 and result['changed'] and result['ca_created'] and result['dns_names'] == ['*'], result
    ca_pem = (tmp_path / 'ca.pem').read_bytes()
    web_pem = (tmp_path / 'web.pem').read_bytes()
    # Another host: same CA, a new certificate signed by it.
    rc, result = run(tmp_path, **dict(ca, cert=str(tmp_path / 'db.pem'), key=str(tmp_path / 'db.key')))
    assert rc == 0 and result['changed'] and not result['ca_created'] and result['cert_created'], result
    assert (tmp_path / 'ca.pem').read_bytes() == ca_pem
    assert swarm_ca.signed_by(str(tmp_path / 'db.pem'), str(tmp_path / 'ca.pem'))
    assert mode(tmp_path / 'db.key') == 0o600 and mode(tmp_path / 'ca.key') == 0o600
    # Again: nothing to do, nothing rewritten.
    rc, result = run(tmp_path, **web)
    assert rc == 0 and not result['changed'], result
    assert (tmp_path / 'web.pem').read_bytes() == web_pem


def test_module_replaces_a_cert_of_another_ca_or_a_wrong_key(tmp_path):
    ca = dict(ca_key=str(tmp_path / 'ca.key'), ca_cert=str(tmp_path / 'ca.pem'))
    web = dict(ca, cert=str(tmp_path / 'web.pem'), key=str(tmp_path / 'web.key'))
    other_key, other_cert = make_ca(tmp_path, 'other')
    swarm_ca.make_host_cert(other_key, other_cert, web['key'], web['cert'], 'web')
    rc, result = run(tmp_path, **web)
    assert rc == 0 and result['cert_created'], result
    assert swarm_ca.signed_by(web['cert'], web['ca_cert'])
    (tmp_path / 'web.key').write_bytes((tmp_path / 'other.key').read_bytes())
    rc, result = run(tmp_path, **web)
    assert rc == 0 and result['cert_created'], result
    assert swarm_ca.key_matches(web['cert'], web['key'])


def test_module_refuses_half_a_ca_and_half_a_host(tmp_path):
    (tmp_path / 'ca.pem').write_text('x')
    rc, result = run(tmp_path, ca_key=str(tmp_path / 'ca.key'), ca_cert=str(tmp_path / 'ca.pem'))
    assert rc == 1 and 'half there' in result['msg'], result
    rc, result = run(tmp_path, ca_key=str(tmp_path / 'n.key'), ca_cert=str(tmp_path / 'n.pem'),
                     cert=str(tmp_path / 'h.pem'))
    assert rc == 1 and 'key' in result['msg'], result
    rc, result = run(tmp_path, ca_key=str(tmp_path / 'no' / 'ca.key'), ca_cert=str(tmp_path / 'no' / 'ca.pem'))
    assert rc == 1 and 'does not exist' in result['msg'], result
    assert not (tmp_path / 'n.key').exists()

# -*- coding: utf-8 -*-
from ansible_collections.p2p.swarm.plugins.filter.peer_endpoints import peer_endpoints


def test_address_or_name_with_the_given_port():
    hosts = [{'inventory_hostname': 'web1', 'ansible_host': '10.0.0.1'},
             {'inventory_hostname': 'web2'},
             {'inventory_hostname': 'web3', 'ansible_host': 'fd00::3'}]
    assert peer_endpoints(hosts, port=6881) == ['10.0.0.1:6881', 'web2:6881', '[fd00::3]:6881']


def test_port_from_each_hosts_start_result():
    hosts = [{'inventory_hostname': 'web1', 'p2p_start': {'listen_port': 20001}},
             {'inventory_hostname': 'web2', 'p2p_start': {'changed': False}},     # started nothing
             {'inventory_hostname': 'web3'}]
    assert peer_endpoints(hosts, port_from='p2p_start') == ['web1:20001']
    assert peer_endpoints([], port=1) == [] and peer_endpoints(None, port=1) == []

import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import libtorrent as lt

from ansible_collections.p2p.swarm.plugins.module_utils import agent, agent_session, daemon


def test_settings_never_call_out_and_fit_a_private_swarm():
    settings = agent_session.session_settings({'listen_port': 7001})
    for key in ('enable_dht', 'enable_lsd', 'enable_upnp', 'enable_natpmp',
                'enable_outgoing_utp', 'enable_incoming_utp'):
        assert settings[key] is False, key
    assert settings['dht_bootstrap_nodes'] == ''
    assert settings['allow_multiple_connections_per_ip'] is True
    assert settings['min_announce_interval'] <= 2
    assert settings['unchoke_slots_limit'] >= 32
    # Both families on one port: the tracker learns one port per peer.
    assert settings['listen_interfaces'] == '0.0.0.0:7001,[::]:7001'


def test_listen_interfaces_bracket_ipv6_and_mark_ssl():
    assert agent_session.listen_interfaces('fd00::5', 7001) == '[fd00::5]:7001'
    assert agent_session.listen_interfaces('10.0.0.5', 7001) == '10.0.0.5:7001'
    settings = agent_session.session_settings({'listen_port': 7001, 'ssl': True})
    assert settings['listen_interfaces'] == '0.0.0.0:7001s,[::]:7001s'


def test_free_port_is_free_on_both_families():
    import socket
    port = agent_session.free_port()
    assert 20000 <= port <= 60000
    for family, address in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, port))


def test_libtorrent_accepts_every_setting():
    settings = agent_session.session_settings({'upload_rate': 1000, 'listen_address': '127.0.0.1'})
    session = lt.session(dict(settings, listen_interfaces='127.0.0.1:0'))
    applied = session.get_settings()
    for key, value in settings.items():
        if key in ('listen_interfaces', 'user_agent'):
            continue
        assert applied[key] == value, key
    assert applied['upload_rate_limit'] == 1000


def test_tracker_url_gets_the_host_name():
    url = agent_session.tracker_url_for('http://10.0.0.2:6969/announce', 'web-01')
    assert parse_qs(urlsplit(url).query) == {'p2p_host': ['web-01']}
    url = agent_session.tracker_url_for('http://t/announce?key=1', 'h')
    assert parse_qs(urlsplit(url).query) == {'key': ['1'], 'p2p_host': ['h']}
    assert agent_session.tracker_url_for('udp://t:80', 'h') == 'udp://t:80'


def test_part_file_is_hidden_beside_dest():
    assert agent.part_name('/srv/app/pkg.tar.gz') == '.pkg.tar.gz.p2p-part'


def test_preferred_port_is_taken_when_free_else_another():
    import socket
    port = agent_session.free_port()
    assert agent_session.free_port(preferred=port) == port
    with socket.socket() as busy:
        busy.bind(('0.0.0.0', port))
        busy.listen(1)
        other = agent_session.free_port(preferred=port)
    assert other and other != port
    assert agent_session.listen_interfaces('0.0.0.0', 0, preferred=port) == '0.0.0.0:%d,[::]:%d' % (port, port)
    # An explicit listen_port is never traded for another.
    assert agent_session.listen_interfaces('0.0.0.0', 7001, preferred=port) == '0.0.0.0:7001,[::]:7001'


def test_listed_peers_parse_and_resolve():
    found = agent_session.peer_endpoints(['10.0.0.5:6881', '[fd00::5]:6881', 'localhost:7000', '10.0.0.5:6881',
                                          'no-port', 'bad:port:x'])
    assert found[:2] == [('10.0.0.5', 6881), ('fd00::5', 6881)]
    assert found[2][1] == 7000 and found[2][0] in ('127.0.0.1', '::1')
    assert len(found) == 3     # duplicates and unparsable entries left out


def test_the_outcome_rides_on_the_announce_url():
    url = agent_session.with_outcome('http://t:6969/announce?p2p_host=web1', 'failed', 'disk full ' + 'x' * 400)
    query = parse_qs(urlsplit(url).query)
    assert query['p2p_host'] == ['web1'] and query['p2p_outcome'] == ['failed']
    assert query['p2p_error'][0].startswith('disk full') and len(query['p2p_error'][0]) == 300
    assert parse_qs(urlsplit(agent_session.with_outcome('http://t/announce', 'placed')).query) == {'p2p_outcome': ['placed']}
    assert agent_session.with_outcome('udp://t:6969', 'placed') == 'udp://t:6969'


def test_the_agent_runs_as_a_script_from_the_files_it_ships_with(tmp_path):
    """On a host the agent has only what script_files() names, side by side."""
    names = [name for name, _module in agent.script_files()]
    assert names[-1] == 'agent.py' and 'fileops.py' in names
    for name, module in agent.script_files():
        daemon.install_script(module, str(tmp_path / name))
    # -S: no site-packages, so nothing but these files and the standard library;
    # without arguments the agent stops at its usage line, after every import.
    proc = subprocess.run([sys.executable, '-S', str(tmp_path / 'agent.py')], cwd='/',
                          capture_output=True, text=True, env={'PATH': os.environ.get('PATH', '')}, check=False)
    assert proc.returncode == 2 and proc.stderr == 'usage: agent.py JOB.json\n', proc.stderr
    assert sorted(os.listdir(str(tmp_path))) == sorted(names)   # no __pycache__ left

# -*- coding: utf-8 -*-
"""p2p_outcome: a host's result from its start and the swarm wait, no SSH."""

from ansible_collections.p2p.swarm.plugins.action.p2p_outcome import judge

STARTED = {'changed': True, 'pid': 4242, 'status': 'downloading', 'dest': '/srv/a', 'info_hash': 'ab' * 20}


def swarm(**per_host):
    return {'per_host': per_host}


def test_placed_through_the_tracker_is_changed_and_confirmed():
    result = judge(STARTED, swarm(web1={'state': 'complete', 'outcome': 'placed'}), 'web1')
    assert result['changed'] is True and result['confirmed'] is True and not result.get('failed')
    assert result['status'] == 'placed' and result['dest'] == '/srv/a'


def test_reported_failure_fails_the_host_with_its_reason():
    result = judge(STARTED, swarm(web1={'state': 'failed', 'outcome': 'failed', 'error': 'No space left'}), 'web1')
    assert result['failed'] is True and result['confirmed'] is True
    assert result['msg'] == 'web1: No space left'


def test_no_outcome_asks_the_host():
    for view in ({'state': 'never announced', 'outcome': None}, {'state': 'lost', 'outcome': None}):
        result = judge(STARTED, swarm(web1=view), 'web1')
        assert result['confirmed'] is False and not result.get('failed') and result['changed'] is False
        assert result['swarm_state'] == view['state']
    # No wait ran at all (no progress, or an outside tracker).
    assert judge(STARTED, {}, 'web1')['confirmed'] is False


def test_nothing_started_echoes_the_start():
    complete = {'changed': False, 'status': 'complete', 'msg': 'dest already holds the content'}
    result = judge(complete, {}, 'web1')
    assert result == {'changed': False, 'confirmed': True, 'status': 'complete',
                      'msg': 'dest already holds the content'}
    attributes_fixed = dict(complete, changed=True)
    assert judge(attributes_fixed, {}, 'web1')['changed'] is True
    check_mode = {'changed': True, 'status': 'absent', 'msg': 'would download /srv/a'}
    assert judge(check_mode, {}, 'web1')['confirmed'] is True


def test_a_failed_or_skipped_start_is_not_judged_again():
    failed = {'failed': True, 'msg': 'no space'}
    assert judge(failed, swarm(web1={'outcome': 'placed'}), 'web1')['confirmed'] is True
    assert not judge(failed, {}, 'web1').get('failed')

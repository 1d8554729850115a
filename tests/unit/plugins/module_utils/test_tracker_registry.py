# -*- coding: utf-8 -*-
"""torrents.json: claims of runs, releases, leases and allow lists."""

from ansible_collections.p2p.swarm.plugins.module_utils import tracker_registry as registry

HASH_A = 'aa' * 20
HASH_B = 'bb' * 20
HASH_V2 = 'cc' * 32


def test_normalize_and_permanent_merge():
    wanted = registry.normalize([HASH_A.upper(), {'info_hash': HASH_B, 'size': '10'}])
    assert wanted == {HASH_A: {'name': '', 'size': None, '_bare': True}, HASH_B: {'name': '', 'size': 10}}
    current = {HASH_A: {'name': 'kept', 'size': 5}, 'ee' * 20: {'name': 'other', 'size': None}}
    assert registry.claim(current, wanted) == {
        HASH_A: {'name': 'kept', 'size': 5}, HASH_B: {'name': '', 'size': 10},
        'ee' * 20: {'name': 'other', 'size': None}}
    assert registry.claim(current, registry.normalize([HASH_B]), exclusive=True) == {HASH_B: {'name': '', 'size': None}}
    assert registry.hashes({HASH_A: {'aliases': [HASH_V2]}, 'junk': {}}) == [HASH_A, HASH_V2]


def test_claims_merge_and_release_one_by_one():
    wanted = registry.normalize([{'info_hash': HASH_A, 'name': 'a', 'size': 3}])
    doc = registry.claim({}, wanted, user='r1', expires=100, allowed=['10.0.0.1/32'])
    doc = registry.claim(doc, wanted, user='r2', expires=200, allowed=['10.0.0.2/32'])
    assert registry.allowed_networks(doc[HASH_A]) == ['10.0.0.1/32', '10.0.0.2/32']
    assert registry.effective(doc, 50) == [([HASH_A], 'a', 3, ['10.0.0.1/32', '10.0.0.2/32'])]
    # r1's lease ran out: only r2's hosts are let in.
    assert registry.effective(doc, 150) == [([HASH_A], 'a', 3, ['10.0.0.2/32'])]
    assert registry.next_expiry(doc) == 100
    one = registry.release(doc, 'r1')
    assert list(one[HASH_A]['users']) == ['r2']
    assert registry.release(one, 'r2') == {}
    assert registry.effective(doc, 250) == []


def test_a_claim_without_allow_list_lets_anyone_in_and_permanent_entries_stay():
    wanted = registry.normalize([HASH_A])
    doc = registry.claim({}, wanted, user='r1', expires=100, allowed=['10.0.0.1/32'])
    doc = registry.claim(doc, wanted, user='r2', expires=100, allowed=[])
    assert registry.allowed_networks(doc[HASH_A]) is None
    permanent = registry.claim({}, wanted, allowed=['10.0.0.0/24'])
    claimed = registry.claim(permanent, wanted, user='r1', expires=1)
    assert 'users' not in claimed[HASH_A]
    assert registry.release(claimed, 'r1') == claimed
    assert registry.effective(claimed, 10**10) == [([HASH_A], '', None, ['10.0.0.0/24'])]


def test_release_of_some_hashes_only():
    doc = registry.claim({}, registry.normalize([HASH_A, HASH_B]), user='r1', expires=100)
    assert list(registry.release(doc, 'r1', {HASH_A})) == [HASH_B]

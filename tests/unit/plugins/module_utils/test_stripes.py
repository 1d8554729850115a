"""The stripe picker's decisions (agent_stripes.StripePicker), without libtorrent."""
from ansible_collections.p2p.swarm.plugins.module_utils import agent_session
from ansible_collections.p2p.swarm.plugins.module_utils.agent_stripes import StripePicker

OWN, RELEASED, HELD_BACK = StripePicker.OWN, StripePicker.RELEASED, StripePicker.HELD_BACK


def nothing(n):
    return [False] * n


def test_own_stripe_first_everything_else_held_back():
    picker = StripePicker(10, 1, 3)
    assert picker.own == [1, 4, 7]
    priorities, shut_out = picker.update(nothing(10), nothing(10), now=0.0)
    assert priorities == [HELD_BACK, OWN, HELD_BACK, HELD_BACK, OWN, HELD_BACK, HELD_BACK, OWN, HELD_BACK, HELD_BACK]
    assert shut_out is False


def test_stripes_of_all_peers_cover_every_piece_once():
    count, pieces = 4, 23
    owners = {}
    for index in range(count):
        for piece in StripePicker(pieces, index, count).own:
            owners.setdefault(piece, []).append(index)
    assert sorted(owners) == list(range(pieces))
    assert all(len(o) == 1 for o in owners.values())


def test_a_piece_held_by_another_peer_is_released_and_stays_released():
    picker = StripePicker(6, 0, 2)
    picker.update(nothing(6), nothing(6), now=0.0)
    held = [False, True, False, False, False, False]          # peer 1 has piece 1
    priorities, dummy = picker.update(nothing(6), held, now=0.2)
    assert priorities == [OWN, RELEASED, OWN, HELD_BACK, OWN, HELD_BACK]
    # That peer disconnects: piece 1 stays wanted, and nothing changed.
    priorities, dummy = picker.update(nothing(6), nothing(6), now=0.4)
    assert priorities is None


def test_unchanged_state_returns_no_new_priorities():
    picker = StripePicker(4, 0, 2)
    assert picker.update(nothing(4), nothing(4), now=0.0)[0] is not None
    assert picker.update(nothing(4), nothing(4), now=0.2)[0] is None


def test_seeder_is_shut_out_once_own_stripe_is_complete():
    picker = StripePicker(6, 1, 2)                              # own: 1, 3, 5
    have = [False, True, False, True, False, False]
    assert picker.update(have, nothing(6), now=0.0)[1] is False
    have[5] = True
    assert picker.update(have, [True] * 6, now=0.2)[1] is True
    # Complete: nothing left to protect.
    assert picker.update([True] * 6, [True] * 6, now=0.4)[1] is False


def test_stall_with_seeder_shut_out_falls_back_to_a_plain_swarm():
    picker = StripePicker(4, 0, 2, stall=3.0)                   # own: 0, 2
    have = [True, False, True, False]
    assert picker.update(have, nothing(4), now=10.0)[1] is True
    assert picker.update(have, nothing(4), now=12.9)[1] is True
    priorities, shut_out = picker.update(have, nothing(4), now=13.0)
    assert priorities == [StripePicker.NORMAL] * 4
    assert shut_out is False
    assert picker.active is False
    assert picker.update(have, nothing(4), now=20.0) == (None, False)


def test_progress_resets_the_stall_clock():
    picker = StripePicker(6, 0, 2, stall=3.0)                   # own: 0, 2, 4
    have = [True, False, True, False, True, False]
    picker.update(have, [True] * 6, now=0.0)
    have[1] = True
    assert picker.update(have, [True] * 6, now=2.5)[1] is True
    assert picker.update(have, [True] * 6, now=5.0)[1] is True   # 2.5 s since the last piece
    assert picker.active is True


def test_more_stripes_than_pieces_leaves_no_peer_without_a_stripe():
    pieces = 3
    for index in range(8):
        picker = StripePicker(pieces, index, 8)
        assert picker.count == pieces
        assert picker.own == [index % pieces]


def test_download_agents_and_the_seeder_identify_themselves():
    assert agent_session.session_settings({'seed': True})['peer_fingerprint'] == agent_session.SEED_FINGERPRINT
    assert agent_session.session_settings({})['peer_fingerprint'] != agent_session.SEED_FINGERPRINT
    # Striping holds pieces back: the session must keep its seed connections then.
    assert agent_session.session_settings({'stripe_count': 4})['close_redundant_connections'] is False


def test_no_fallback_while_the_tracker_counts_fewer_downloaders_than_stripes():
    """The start round sweeps over the hosts: an early host whose stripe is
    done waits for the owners still starting instead of giving up."""
    picker = StripePicker(4, 0, 4, stall=3.0, join_quiet=10.0)     # own: 0
    have = [True, False, False, False]
    assert picker.update(have, nothing(4), now=0.0, joined=2)[1] is True
    assert picker.update(have, nothing(4), now=5.0, joined=3)[1] is True   # one more joined at 5 s
    assert picker.update(have, nothing(4), now=14.9, joined=3)[1] is True  # 3 s stalled, but 9.9 s since a join
    assert picker.active is True
    # No one new for join_quiet: the missing owner is not coming, fall back.
    priorities, shut_out = picker.update(have, nothing(4), now=15.0, joined=3)
    assert priorities == [StripePicker.NORMAL] * 4 and shut_out is False and picker.active is False


def test_every_owner_joined_means_the_plain_stall_rule():
    picker = StripePicker(4, 0, 4, stall=3.0, join_quiet=10.0)
    have = [True, False, False, False]
    assert picker.update(have, nothing(4), now=0.0, joined=4)[1] is True
    assert picker.update(have, nothing(4), now=3.0, joined=4)[0] == [StripePicker.NORMAL] * 4


def test_hosts_leaving_do_not_count_as_joining():
    picker = StripePicker(4, 0, 4, stall=3.0, join_quiet=10.0)
    have = [True, False, False, False]
    picker.update(have, nothing(4), now=0.0, joined=3)
    # The count drops (a host left) and comes back: no new joiner after 0 s.
    picker.update(have, nothing(4), now=8.0, joined=2)
    assert picker.update(have, nothing(4), now=9.0, joined=3)[1] is True
    assert picker.update(have, nothing(4), now=10.0, joined=3)[0] == [StripePicker.NORMAL] * 4

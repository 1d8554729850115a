# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Striped piece priorities for the agent (agent.py): which pieces to want
from whom, so the seeder sends each piece out about once. Pure logic, no
libtorrent; shipped to the host beside agent.py (agent.script_files())."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

STRIPE_STALL = 3.0  # seconds with the seeder shut out and no new piece before striping gives up
# ...unless the tracker still counts fewer downloaders than stripes: their owners
# are still being started (the start round sweeps over the hosts). Striping
# waits for them until no new one has joined for this long.
STRIPE_JOIN_QUIET = 10.0


class StripePicker(object):
    """Piece priorities that get each piece out of the seeder about once.

    In a naive swarm every peer asks the seeder for the same rare pieces, so
    the seeder uploads about twice the file and its uplink sets the pace.
    Here download peer `index` of `count` owns a stripe, the pieces p with
    p % count == index:

    - it fetches its own stripe first (top priority); only the seeder has
      those pieces at the start, so the seeder sends each piece to one peer;
    - every other piece stays at priority 0 (not wanted) until some peer
      other than the seeder holds it, then becomes normal priority and comes
      from that peer (rarest first); a released piece stays released;
    - once its own stripe is complete the peer takes no more data from the
      seeder (update() says block_seeder; the agent shuts the seeder out),
      since everything else is, or soon will be, at other peers.

    Safety net: if the seeder is shut out and no new piece has arrived for
    `stall` seconds (the owner of some stripe died or never started),
    striping is given up for good: every piece gets normal priority and the
    seeder is let back in, i.e. a plain swarm. While the tracker counts
    fewer downloaders than stripes and the last one joined less than
    `join_quiet` seconds ago, the owners are still starting: the peer keeps
    waiting for them rather than pull their stripes from the seeder too.
    Pure logic, no libtorrent.
    """

    OWN, RELEASED, HELD_BACK, NORMAL = 7, 1, 0, 4

    def __init__(self, num_pieces, index, count, stall=STRIPE_STALL, join_quiet=STRIPE_JOIN_QUIET):
        self.hosts = int(count)
        # More stripes than pieces would leave some peers an empty stripe.
        count = max(1, min(int(count), int(num_pieces)))
        self.num_pieces = int(num_pieces)
        self.index = int(index) % count
        self.count = count
        self.stall = stall
        self.own = [p for p in range(self.num_pieces) if p % count == self.index]
        self.released = [p % count == self.index for p in range(self.num_pieces)]
        self.active = True
        self.applied = False          # the first update always returns priorities
        self.have_count = -1
        self.last_progress = None
        self.join_quiet = join_quiet
        self.joined = None
        self.last_join = None

    def priorities(self):
        if not self.active:
            return [self.NORMAL] * self.num_pieces
        own = set(self.own)
        return [self.OWN if p in own else self.RELEASED if self.released[p] else self.HELD_BACK
                for p in range(self.num_pieces)]

    def owners_still_joining(self, joined, now):
        """joined: downloaders the tracker counts (None when it has not said).
        Only a rise is a join; hosts leaving at the end must not look like one."""
        if joined is not None and (self.joined is None or joined > self.joined):
            self.joined, self.last_join = joined, now
        return (self.joined is not None and self.joined < self.hosts
                and now - self.last_join < self.join_quiet)

    def update(self, have, held_elsewhere, now, joined=None):
        """One decision from what we have and what peers other than the seeder hold.

        have, held_elsewhere: one bool per piece; joined: how many downloaders
        the tracker counts, if known. Returns (priorities, block_seeder):
        the new priority list, or None when nothing changed since the last call,
        and whether the seeder must be shut out now.
        """
        if not self.active:
            return None, False
        changed = not self.applied
        for piece, held in enumerate(held_elsewhere):
            if held and not self.released[piece]:
                self.released[piece] = True
                changed = True
        count = sum(1 for h in have if h)
        if count != self.have_count:
            self.have_count, self.last_progress = count, now
        block = count < self.num_pieces and all(have[p] for p in self.own)
        joining = self.owners_still_joining(joined, now)
        if block and now - self.last_progress >= self.stall and not joining:
            self.active = False
            return self.priorities(), False
        self.applied = True
        return (self.priorities() if changed else None), block

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: p2p_fetch
short_description: Make a file hold a torrent's content, fetched over a private swarm
version_added: 0.1.0
description:
  - Ensures that O(dest) on the managed host holds the content described by a
    .torrent file, downloading it from the other hosts of a private BitTorrent
    swarm with libtorrent.
  - The transfer runs in a detached agent process, so the module can return at
    once (O(wait=false)) and many hosts download at the same time whatever the
    number of Ansible forks. A later call with O(wait=true), or M(p2p.swarm.p2p_wait)
    on the controller, waits for the outcome.
  - Data is written to a hidden file beside O(dest), every piece is checked
    against the torrent's hashes, and only a complete file is renamed to O(dest).
    An interrupted download resumes from the data already there.
  - The agent keeps seeding after it finishes, until the tracker reports that no
    peer still downloads, O(linger) seconds pass, or it is stopped with
    O(state=stopped).
  - With O(state=seeding) the module seeds an existing complete copy instead;
    this is how the seeder role serves the original file.
  - If O(dest) already holds the content nothing is downloaded and the result
    is C(changed=false).
author:
  - p2p.swarm contributors (@p2p-swarm)
requirements:
  - libtorrent (python bindings, 2.0 or later) for the interpreter running the module
extends_documentation_fragment:
  - ansible.builtin.files
  - p2p.swarm.state_dir
attributes:
  check_mode:
    support: full
    description: Reports whether O(dest) would be downloaded; starts no agent.
  diff_mode:
    support: partial
    description: >-
      When the module would download or starts a download, shows path, size and
      SHA-256 of the file at O(dest) before, and of the torrent's content after
      (the SHA-256 that M(p2p.swarm.p2p_torrent) records in the .torrent; the
      info-hash too). Changes of owner, group or mode alone show no diff.
options:
  torrent:
    description:
      - Path of the .torrent file on the managed host.
      - Required, with O(dest), unless O(state=stopped).
    type: path
  torrent_content:
    description:
      - The .torrent file itself, base64-encoded (as M(ansible.builtin.slurp)
        returns it). It is written to O(torrent) when that file is missing or
        differs (its directory is created), so a play needs no separate copy
        step, which costs several SSH round trips per host.
      - In check mode nothing is written; the content is read from a temporary copy.
    type: str
  dest:
    description:
      - Path of the file to create or check. Its directory must exist (it is
        not created), unless it lies inside O(state_dir), where the peer role keeps
        archives to unpack there.
      - With O(state=seeding), the complete file to seed.
      - Required, with O(torrent), unless O(state=stopped).
    type: path
  state:
    description:
      - V(present) makes O(dest) hold the content, downloading it if needed.
      - V(seeding) seeds an existing complete O(dest) (the original copy).
      - V(stopped) stops the agent of this torrent and reports its last status.
        Partial data is kept so a later V(present) resumes.
      - V(stopped) without O(torrent) and O(dest) stops every agent under
        O(state_dir), downloads and seeds alike; this is the clean-up after an
        interrupted play (see the C(p2p.swarm.cleanup) playbook).
    type: str
    choices: [present, seeding, stopped]
    default: present
  wait:
    description:
      - Wait until the download is complete (or failed) before returning.
      - With V(false) the module returns once the agent is running.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait with O(wait=true). On timeout the agent is stopped and
        the task fails; the partial data stays for a rerun.
    type: int
    default: 1800
  stop_when_done:
    description:
      - With O(wait=true), stop this host's agent as soon as its outcome is
        known instead of letting it seed for O(linger) seconds more.
      - Use it once every host is known to be complete; the peer role sets it
        after M(p2p.swarm.p2p_wait), so that the report and the clean-up take
        one round per host instead of two. Stopping early while other hosts
        still download takes this host's pieces away from them.
    type: bool
    default: false
  lifetime:
    description: Upper bound, in seconds, on how long an agent may run at all.
    type: int
    default: 7200
  linger:
    description:
      - Seconds to keep seeding after this host is complete, unless the tracker
        reports earlier that no peer is still downloading.
    type: int
    default: 300
  tracker_grace:
    description:
      - Seconds without any tracker answer and without any peer after which
        the agent gives up and reports the tracker as unreachable.
    type: int
    default: 60
  peer_name:
    description:
      - Name this host announces to the tracker, so progress can be shown per
        inventory host. The roles pass C(inventory_hostname).
      - Defaults to the host name.
    type: str
  run_id:
    description:
      - Identifier of one distribution run. A later call with the same
        O(run_id) reports the outcome of the agent that run started even when
        that agent has already exited, instead of starting a new one.
    type: str
  upload_rate_limit:
    description: Upload limit of the agent in bytes per second, V(0) for none.
    type: int
    default: 0
  download_rate_limit:
    description: Download limit of the agent in bytes per second, V(0) for none.
    type: int
    default: 0
  listen_port:
    description: TCP port the agent accepts peers on; V(0) picks one (O(preferred_port) if it is free).
    type: int
    default: 0
  preferred_port:
    description:
      - With O(listen_port=0), the port to listen on when it is free, else a free one.
        Other hosts are told to try it (O(peers)), so their agents can reach this
        one without the tracker. V(0) for none.
    type: int
    default: 0
  peers:
    description:
      - Peers the agent connects to by itself, as C(address:port) (C([v6]:port) for
        IPv6; names are resolved on the managed host), besides those the tracker
        names. The swarm then forms, and completes, even where the tracker is slow
        or unreachable from this host. Addresses that refuse are tried again every
        few seconds while data is missing.
      - The peer role passes the seeder and a random subset of the other hosts.
    type: list
    elements: str
    default: []
  listen_address:
    description: Address the agent listens on. V(0.0.0.0) and V(::) listen on every address of both families.
    type: str
    default: 0.0.0.0
  python:
    description: Interpreter that runs the agent; it must import libtorrent.
    type: path
  allowed_peers:
    description:
      - Addresses, networks (CIDR) or host names the agent exchanges data
        with. Every other address is refused, for incoming and outgoing
        connections alike (a libtorrent ip filter). Names are resolved on the
        managed host; a name that does not resolve is left out with a warning.
      - The trackers named in the torrent stay reachable whatever this says.
      - Empty (the default) sets no filter. The peer role passes the
        addresses of the play's hosts and of the seeder.
    type: list
    elements: str
    default: []
  stripe_index:
    description:
      - This host's position, from V(0), among the O(stripe_count) hosts that
        download the torrent in this run. The peer role passes the host's
        index in its list of hosts that need the file.
      - Used only with O(stripe_count) of 2 or more.
    type: int
    default: 0
  stripe_count:
    description:
      - Number of hosts downloading together. With 2 or more the agent uses
        striped piece priorities, so the seeder sends each piece out about
        once instead of about twice; host O(stripe_index) fetches the
        pieces p with p % O(stripe_count) == O(stripe_index) from the seeder
        first, takes the other pieces only from peers that already hold
        them, and stops taking data from the seeder once its own stripe is
        complete. If that stalls for a few seconds (a host died with its
        stripe half-fetched) the agent falls back to a plain swarm.
      - V(0) or V(1) turns striping off (libtorrent's rarest-first picker).
      - Ignored with O(state=seeding).
    type: int
    default: 0
  hold_peers:
    description:
      - With O(state=seeding), how many download agents the seed waits for
        before it sends any data; every peer stays choked until then. The
        seed serves as soon as that many have connected, or once none has
        joined for 5 seconds (hosts that hold the file already never come),
        or 120 seconds after its start if none came at all.
      - For a seed started before the hosts that download (a seeder play
        before their play), so that their downloads start together and
        striping sees every host. The seeder role passes its C(p2p_seed_hold).
      - V(0) serves at once. Ignored with O(state=present). A seed that runs
        already is left as it is.
    type: int
    default: 0
  ssl_cert:
    description:
      - Path on the managed host of this host's certificate (PEM), signed by
        the CA whose root certificate the torrent carries (an SSL torrent, see
        O(p2p.swarm.p2p_torrent#module:ssl_ca_cert)). Its subjectAltName must
        hold a DNS entry equal to the torrent's name, or V(*).
      - Required, with O(ssl_key), for an SSL torrent; ignored, with a warning,
        for any other torrent.
      - With an SSL torrent the agent listens on O(listen_port) for TLS
        connections only and exchanges data only with peers that show a
        certificate of the same CA; M(p2p.swarm.p2p_certificate) makes them.
    type: path
  ssl_key:
    description:
      - Path on the managed host of the private key (PEM, unencrypted) of
        O(ssl_cert). Keep it C(0600).
    type: path
  ssl_cert_content:
    description:
      - The certificate itself (PEM text), written to O(ssl_cert) (mode C(0644)) when that differs,
        so the certificate needs no copy task of its own.
    type: str
  ssl_key_content:
    description:
      - The private key itself (PEM text), written to O(ssl_key) with mode C(0600) when that differs.
      - Never logged.
    type: str
notes:
  - O(mode) is applied before the file gets its final name when it is an octal
    number; a symbolic mode is applied right after.
seealso:
  - module: p2p.swarm.p2p_torrent
  - module: p2p.swarm.p2p_wait
  - module: p2p.swarm.p2p_tracker
  - module: p2p.swarm.p2p_certificate
'''

EXAMPLES = r'''
- name: Download a release over the swarm and wait for it
  p2p.swarm.p2p_fetch:
    torrent: /var/lib/p2p-swarm/app-1.2.tar.gz.torrent
    dest: /opt/app/app-1.2.tar.gz
    owner: app
    mode: '0640'
    peer_name: "{{ inventory_hostname }}"

- name: Start the download on every host, return at once
  p2p.swarm.p2p_fetch:
    torrent: /var/lib/p2p-swarm/app.torrent
    dest: /opt/app/app.tar.gz
    wait: false
    run_id: "{{ run_id }}"
  register: started

- name: Collect each host's outcome later in the play
  p2p.swarm.p2p_fetch:
    torrent: /var/lib/p2p-swarm/app.torrent
    dest: /opt/app/app.tar.gz
    run_id: "{{ run_id }}"
    timeout: 60

- name: Seed the original copy
  p2p.swarm.p2p_fetch:
    torrent: /build/app.torrent
    dest: /build/app.tar.gz
    state: seeding

- name: Download an SSL torrent (authenticated swarm) with this host's certificate
  p2p.swarm.p2p_fetch:
    torrent: /var/lib/p2p-swarm/app.torrent
    dest: /opt/app/app.tar.gz
    ssl_cert: /var/lib/p2p-swarm/ssl/host.pem
    ssl_key: /var/lib/p2p-swarm/ssl/host.key

- name: After an interrupted play, stop every agent on the host
  p2p.swarm.p2p_fetch:
    state: stopped
'''

RETURN = r'''
dest:
  description: Path of the file.
  returned: when O(dest) is given
  type: str
agents:
  description: >-
    With O(state=stopped) and no O(torrent): the agents that were running
    and are now stopped, each with C(pid), C(dest), C(seed) and C(progress).
  returned: when O(state=stopped) without O(torrent)
  type: list
  elements: dict
agent_stopped:
  description: True when O(stop_when_done) ended this host's agent (or none was left running).
  returned: with O(stop_when_done=true), once the outcome is known
  type: bool
libtorrent_missing:
  description: >-
    True when the interpreter running the module cannot import libtorrent
    (the task fails); the peer role then looks for, or installs, one that can.
  returned: on that failure
  type: bool
info_hash:
  description: Info-hash of the torrent (v1 hex, or v2 hex for v2-only torrents).
  returned: success
  type: str
  sample: 5a8ce26e8a19a877d8ccc927fcc18e34e1f5ff67
status:
  description: >-
    State of the agent: V(complete) (nothing to do), V(downloading), V(checking),
    V(seeding), V(done), V(stopped), V(failed) or V(absent).
  returned: always
  type: str
progress:
  description: Fraction of the content this host has, 0.0 to 1.0.
  returned: success
  type: float
pid:
  description: Process id of the agent, when one runs.
  returned: when an agent runs
  type: int
listen_port:
  description: TCP port the agent accepts peers on (both address families).
  returned: when an agent ran
  type: int
  sample: 6881
downloaded:
  description: Payload bytes the agent downloaded.
  returned: when an agent ran
  type: int
uploaded:
  description: Payload bytes the agent uploaded to other peers.
  returned: when an agent ran
  type: int
size:
  description: Size of the content in bytes.
  returned: success
  type: int
ssl:
  description: Whether the torrent is an SSL torrent (data only over TLS between holders of the CA's certificates).
  returned: when O(torrent) is given
  type: bool
hash_failures:
  description: >-
    Pieces that failed the hash check and were fetched again. Corrupt data never
    reaches O(dest); a non-zero count means a peer sent bad data (a failing disk or
    memory on that peer, or an attacker).
  returned: when a piece failed its check
  type: int
banned_peers:
  description: Addresses of peers banned for sending data that failed the hash check.
  returned: when a peer was banned
  type: list
  elements: str
  sample: [10.0.0.7]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.p2p.swarm.plugins.module_utils import fetch


def main():
    module = AnsibleModule(
        argument_spec=dict(
            torrent=dict(type='path'),
            dest=dict(type='path'),
            state=dict(type='str', default='present', choices=['present', 'seeding', 'stopped']),
            wait=dict(type='bool', default=True),
            stop_when_done=dict(type='bool', default=False),
            timeout=dict(type='int', default=1800),
            lifetime=dict(type='int', default=7200),
            linger=dict(type='int', default=300),
            tracker_grace=dict(type='int', default=60),
            peer_name=dict(type='str'),
            run_id=dict(type='str'),
            upload_rate_limit=dict(type='int', default=0),
            download_rate_limit=dict(type='int', default=0),
            listen_port=dict(type='int', default=0),
            preferred_port=dict(type='int', default=0),
            peers=dict(type='list', elements='str', default=[]),
            listen_address=dict(type='str', default='0.0.0.0'),
            state_dir=dict(type='path', default='/var/lib/p2p-swarm'),
            python=dict(type='path'),
            allowed_peers=dict(type='list', elements='str', default=[]),
            stripe_index=dict(type='int', default=0),
            stripe_count=dict(type='int', default=0),
            hold_peers=dict(type='int', default=0),
            ssl_cert=dict(type='path'),
            ssl_key=dict(type='path'),
            torrent_content=dict(type='str'),
            ssl_cert_content=dict(type='str'),
            ssl_key_content=dict(type='str', no_log=True),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
        required_if=[('state', 'present', ('torrent', 'dest')), ('state', 'seeding', ('torrent', 'dest'))],
        required_together=[('torrent', 'dest')],
        required_by={'ssl_cert_content': 'ssl_cert', 'ssl_key_content': 'ssl_key'},
    )
    fetch.run(module)


if __name__ == '__main__':
    main()

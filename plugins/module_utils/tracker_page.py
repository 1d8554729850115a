# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracker's live page (served at /): HTML and a script that polls
status.json every second and draws each swarm's hosts and progress.

Part of the tracker script (see tracker.py); standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

_PAGE_BYTES = []


def page_bytes():
    """PAGE as UTF-8, encoded once."""
    if not _PAGE_BYTES:
        _PAGE_BYTES.append(PAGE.encode('utf-8'))
    return _PAGE_BYTES[0]


PAGE = r'''<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>p2p swarm</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h2 { margin-bottom: .2em; }
.summary { color: #555; margin-bottom: .6em; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e4e4e4; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bar { width: 220px; height: 10px; background: #eee; }
.bar div { height: 100%; background: #3a8; }
tr.stopped .bar div { background: #c33; }
tr.expired .bar div { background: #ca3; }
tr.stopped td, tr.expired td { color: #777; }
#error { color: #b00; }
</style>
</head>
<body>
<h1>p2p swarm</h1>
<div id="error"></div>
<div id="swarms">loading...</div>
<script>
"use strict";
// Rates come from successive samples of each peer's progress, per host.
var samples = {};

function bytes(n) {
  var units = ["B", "kB", "MB", "GB", "TB"], i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function cell(row, text, cls) {
  var td = document.createElement("td");
  td.textContent = text;
  if (cls) { td.className = cls; }
  row.appendChild(td);
  return td;
}

function done(peer, size) {
  if (size) { return Math.max(0, size - peer.left); }
  return peer.downloaded;
}

function percent(peer, size) {
  if (peer.left === 0) { return 100; }
  var total = size || (peer.downloaded + peer.left);
  return total ? Math.max(0, Math.min(100, 100 * done(peer, size) / total)) : 0;
}

function rate(key, peer, size) {
  var d = done(peer, size), s = samples[key];
  if (!s) { samples[key] = {t: peer.last_seen, d: d, r: 0}; return 0; }
  if (peer.last_seen > s.t) {
    s.r = Math.max(0, (d - s.d) / (peer.last_seen - s.t));
    s.t = peer.last_seen; s.d = d;
  }
  return peer.state === "downloading" ? s.r : 0;
}

function render(status) {
  var root = document.getElementById("swarms");
  var hashes = Object.keys(status.torrents).sort();
  root.textContent = hashes.length ? "" : "no torrents registered";
  hashes.forEach(function (hash) {
    var t = status.torrents[hash], total = 0, finished = 0, pct = 0;
    var h2 = document.createElement("h2");
    h2.textContent = t.name;
    root.appendChild(h2);
    var summary = document.createElement("div");
    summary.className = "summary";
    root.appendChild(summary);
    var table = document.createElement("table");
    var head = table.insertRow();
    ["host", "ip", "state", "progress", "%", "rate", "uploaded", "downloaded", "last seen"].forEach(function (h) {
      var th = document.createElement("th"); th.textContent = h; head.appendChild(th);
    });
    t.peers.forEach(function (p) {
      var name = p.host || (p.ip + ":" + p.port);
      var r = rate(hash + "/" + name, p, t.size), pc = percent(p, t.size);
      total += r; pct += pc;
      if (p.left === 0) { finished++; }
      var row = table.insertRow();
      row.className = p.state;
      cell(row, name);
      cell(row, p.ip + ":" + p.port);
      cell(row, p.state);
      var bar = document.createElement("div"), fill = document.createElement("div");
      bar.className = "bar"; fill.style.width = pc.toFixed(1) + "%"; bar.appendChild(fill);
      cell(row, "").appendChild(bar);
      cell(row, pc.toFixed(1), "n");
      cell(row, bytes(r) + "/s", "n");
      cell(row, bytes(p.uploaded), "n");
      cell(row, bytes(p.downloaded), "n");
      cell(row, Math.max(0, status.time - p.last_seen).toFixed(0) + " s ago", "n");
    });
    summary.textContent = finished + "/" + t.peers.length + " hosts done, " +
      (t.peers.length ? (pct / t.peers.length).toFixed(1) : "0.0") + "%, " +
      bytes(total) + "/s aggregate, " + t.complete + " seeding, " + t.incomplete + " downloading" +
      (t.size ? ", size " + bytes(t.size) : "");
    root.appendChild(table);
  });
}

function tick() {
  fetch("status.json", {cache: "no-store"})
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(function (s) { document.getElementById("error").textContent = ""; render(s); })
    .catch(function (e) { document.getElementById("error").textContent = "tracker unreachable: " + e; })
    .then(function () { setTimeout(tick, 1000); });
}
tick();
</script>
</body>
</html>
'''

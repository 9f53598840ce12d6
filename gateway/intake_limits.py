"""The intake's limits and budgets: every figure in one place (explained in docs/limits.md).

Sizes per message kind are checked before anything is parsed; each terminal has a budget of
refused or repeated events per second and of heartbeats, so one stolen terminal cannot saturate
the intake with junk signatures.
"""

from __future__ import annotations

from siteclock.protocol import MAX_EVENT_BODY_BYTES

GROUP_MAX = 256  # messages per group commit
HANDOFF_MAX = 4 * GROUP_MAX
"""Most received, not yet stored messages held in memory. When full, paho's network thread
waits: TCP pushes back and the broker keeps the rest queued. Without a bound, a gateway coming
back to a large backlog reads it all into memory, and Python's garbage collector then spends
a quarter of the time walking those objects (measured in the intake benchmark)."""
VERIFY_SPLIT_MIN = 8
"""With fewer signatures than this in a group, the worker checks them all itself: waking the
helper thread costs tens of microseconds, and at such low rates nothing needs the speed."""
REGISTRY_TTL_S = 5.0
KNOWN_TERMINAL_TTL_S = 120.0
"""How long a heartbeat *without* a clock proof trusts a cached registry entry: it needs only
to know the terminal is registered (nothing in it is checked with a key), so a terminal
heartbeating every 30 s does not reread its registry record every time (with a 5 s period
it did, each heartbeat). A heartbeat with a proof, and every event, keep :data:`REGISTRY_TTL_S`:
a revoked key stops dating taps within that time. A terminal not found is never cached this
long (a terminal registered a moment ago is heard at once)."""
KEY_REFRESH_S = 1.0
"""A key id the cached entry does not know makes the intake reread the registry at once when
the terminal's key count changed since the entry was read (a key added by a rotation is accepted
on its first event), and otherwise at most this often per terminal: a terminal sending made-up
key ids cannot turn every message into a registry read (it costs one key count each)."""
LOG_FIRST_PER_REASON = 20  # then one line per 1000, so a flood cannot fill the disk
REFUSED_PER_S = 20.0
REFUSED_BURST = 100.0
"""A terminal's budget of refused or unreadable events: this many per second after a burst.
Only refusals are charged (and a duplicate a tenth, :data:`DUPLICATE_COST`): an honest
terminal's good events cost nothing, so its backlog drain (4,500 events/s measured) is never
slowed, and a resend of a whole in-flight window (4 x 200 duplicates) costs 80. Signatures are
checked last, after the cheap checks, and a terminal's failed checks in one group stop at its
remaining budget, so junk signatures cost at most this many checks per second per terminal."""
DUPLICATE_COST = 0.1
ADMIT_PER_GROUP = 4 * 500
"""Most events of one terminal in good standing (a full budget) looked at in one group: an
honest in-flight window, 4 batches of up to 500. A terminal that has spent part of its budget
gets only as many events looked at as it has tokens left; its further messages in that group
are dropped as ``rate_limited``, unread when their size alone shows they would not fit."""
MAX_ENVELOPE_BYTES = MAX_EVENT_BODY_BYTES + 256
"""The most bytes one event can take in a batch: a message of N bytes holds at least
N / MAX_ENVELOPE_BYTES events, which is known before it is decoded."""
RATE_LIMITED = "rate_limited"
HEARTBEAT_HOLD_MAX = 50
HEARTBEAT_HOLD_S = 0.25
"""Heartbeats are written together: the worker holds checked heartbeats (and their PUBACKs)
until this many wait, this long has passed since the first, or a group of events is stored
anyway (they join its transaction). One commit for dozens of heartbeats instead of one each:
at 20,000 terminals (667 heartbeats/s) the commits were the gateway's largest CPU cost
(docs/scaling.md). Nothing is PUBACKed before it is written, so a gateway killed meanwhile
loses nothing: the broker delivers the held heartbeats again. The held PUBACKs use the
broker's in-flight window for the gateway (200 in the shipped configuration): keep it well
above this figure."""
HEARTBEAT_IDLE_S = 0.02
"""Heartbeats held are also written when no message has come for this long: a quiet intake
does not sit on them, and a broker whose in-flight window for the gateway is smaller than
:data:`HEARTBEAT_HOLD_MAX` (it stops sending until PUBACKs come) stalls the intake for this
long, not for :data:`HEARTBEAT_HOLD_S`. Under steady load (hundreds of messages a second) such
a pause does not happen and the heartbeats go in groups."""
HEARTBEATS_PER_S = 0.5
HEARTBEAT_BURST = 5.0
"""A terminal heartbeats every 30 s; more than this is a flood (each one is a write)."""
RATE_ALERT_EVERY_S = 60.0
"""At most one ``rate_limited`` security alert per terminal per this many seconds."""
GAP_GRACE_S = 300.0
"""A missing seq is reported as a security alert when still missing this long after a later
one arrived: a terminal resends what is not acked within seconds, so a gap that lasts means
events that will never come (a wiped outbox, a terminal swapped or tampered with)."""
GAP_CHECK_S = 1.0

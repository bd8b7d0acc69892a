"""`max_tps` for all sender replicas together: each replica's share of a provider's rate.

Each replica reports its demand (messages per second it could send to the provider: its
backlog for it, or its recent rate when it keeps up) with a heartbeat; every replica computes
the same shares from the same live heartbeats. Water-filling: a replica never gets more than
it asks, what it leaves goes to the others, and the shares never add up to more than
`max_tps`. A replica that asks for nothing keeps a small floor (`idle_floor` of an even split)
so that it can start at once when a backlog arrives, before its next heartbeat; the floors
come out of `max_tps` too. A replica whose heartbeat stopped is left out: its share goes to
the others at their next computation (after at most the heartbeat TTL the cap holds again
with one replica fewer, and until then the dead one sends nothing anyway).
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_IDLE_FLOOR = 0.05


def shares(
    max_tps: float, demands: Mapping[str, float], *, idle_floor: float = DEFAULT_IDLE_FLOOR
) -> dict[str, float]:
    """Each replica's messages per second; their sum is at most `max_tps`."""
    if max_tps <= 0:
        raise ValueError("max_tps must be above 0")
    if not demands:
        return {}
    even = max_tps / len(demands)
    floor = even * idle_floor
    wants = {name: max(floor, demand) for name, demand in demands.items()}
    result = dict.fromkeys(wants, 0.0)
    left = max_tps
    open_names = sorted(wants, key=lambda name: wants[name])
    while open_names:
        fair = left / len(open_names)
        name = open_names[0]
        if wants[name] <= fair:
            result[name] = wants[name]
            left -= wants[name]
            open_names.pop(0)
            continue
        for name in open_names:
            result[name] = fair
        break
    return result

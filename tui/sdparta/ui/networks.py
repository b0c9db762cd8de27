"""The networks that carry the room (Skynet portals, Nostr relays) as the UI tells them.

One place decides what "up" and "down" mean for a network's state string, so the status bar, the
ICE panel, the lobby and the toasts never disagree. Pure functions of a snapshot, plus one small
stateful filter (:class:`NetworkNews`) that turns state changes into a toast each, never a stream.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich.text import Text

from sdparta.engine.state import CallSnapshot, PeerSnapshot
from sdparta.room.rendezvous import NetworkState
from sdparta.ui.sanitize import safe

UP_STATES = frozenset({"open", "push", "polling"})
DOWN_STATES = frozenset({"refused", "dead", "backing-off", "backing off", "closed", "unreachable"})
VIA = " received via "  # how the engine's peer timeline names the network of a message (engine/membership.py)
HOST_CELLS = 28  # a network's name in the status bar is cut to this
REPLACE_HINT = "relays = [...] in the config or --relay URL"  # how a relay is replaced (portals likewise)


def state_word(state: str) -> str:
    """``refused: blocked: …`` → ``refused``."""
    return state.partition(":")[0].strip()


def state_reason(state: str) -> str:
    """``refused: blocked: kind 30078`` → ``blocked: kind 30078`` (empty when there is none)."""
    return state.partition(":")[2].strip()


def is_up(network: NetworkState) -> bool:
    return state_word(network.state) in UP_STATES


def is_down(network: NetworkState) -> bool:
    """Down: refused, dead, backing off or closed (``connecting`` and an unknown state are neither)."""
    return state_word(network.state) in DOWN_STATES


def is_refused(network: NetworkState) -> bool:
    return state_word(network.state) == "refused"


def host(url: str) -> str:
    """``wss://nos.lol/`` → ``nos.lol``; ``http://127.0.0.1:8787`` → ``127.0.0.1:8787``."""
    return safe(re.sub(r"^[a-zA-Z]+://", "", url).rstrip("/"))


def short_host(url: str, cells: int = HOST_CELLS) -> str:
    """The host for the status bar, at most ``cells`` cells (an ellipsis marks the cut)."""
    shown = Text(host(url))
    shown.truncate(cells, overflow="ellipsis")
    return shown.plain


def room_networks(snap: CallSnapshot) -> tuple[NetworkState, ...]:
    """Every portal and relay of the room; before the engine reports their states (or in an older
    snapshot), the configured ones with an unknown state."""
    if snap.networks:
        return snap.networks
    return (*(NetworkState("portal", url, "") for url in snap.portals),
            *(NetworkState("relay", url, "") for url in snap.relays))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def network_summary(snap: CallSnapshot) -> tuple[str, str, str]:
    """(long, short, style) of the status bar's network part: ``127.0.0.1:8787 push``,
    ``nos.lol +2 public relays``, ``portal 127.0.0.1:8787 push + 2 relays``; when some relay is down
    the count says how many are up (``2/3 relays, 1 refused``) in yellow, in red when none is."""
    networks = room_networks(snap)
    portals = [n for n in networks if n.kind == "portal"]
    relays = [n for n in networks if n.kind == "relay"]
    if not networks:
        return "no network", "no network", "yellow"
    push = "push" if snap.push else "polling"
    portal_long = ""
    if portals:
        portal_long = short_host(portals[0].url) + (f" +{len(portals) - 1}" if len(portals) > 1 else "") + f" {push}"
    if not relays:
        return portal_long, push, ""
    public = " public" if snap.public_relays else ""
    total, up = len(relays), sum(is_up(r) for r in relays)
    down, refused = sum(is_down(r) for r in relays), sum(is_refused(r) for r in relays)
    style = ("bold red" if up == 0 else "yellow") if down else ""
    if down and total == 1:
        word = state_word(relays[0].state)
        relay_long, relay_short = f"relay {short_host(relays[0].url)} {word}", f"relay {word}"
    elif down:
        counted = f"{up}/{total}{public} relays"
        details = ([f"{refused} refused"] if refused else []) + ([f"{down - refused} down"] if down > refused else [])
        relay_long, relay_short = f"{counted}, {', '.join(details)}", f"{up}/{total} relays"
    elif portals:
        relay_long = relay_short = _plural(total, f"{public.strip()} relay".strip())
    else:
        first = next((r for r in relays if is_up(r)), relays[0])
        relay_long = (f"{short_host(first.url)} +{total - 1}{public} relays" if total > 1
                      else f"{public.strip()} relay {short_host(first.url)}".strip())
        relay_short = "public relays" if public else _plural(total, "relay")
    if not portals:
        return relay_long, relay_short, style
    return f"portal {portal_long} + {relay_long}", f"{push} + {relay_short}", style


def last_delivery(peer: PeerSnapshot) -> tuple[float, str, str] | None:
    """(t, what, network URL) of the last signalling message from ``peer`` that a network carried,
    from its timeline; None before the first (data-channel messages name no network)."""
    for change in reversed(peer.timeline):
        if change.kind == "peer" and VIA in change.state:
            what, _, via = change.state.partition(VIA)
            return change.t, what, via
    return None


def _counters(network: NetworkState) -> str:
    """The counters with their units: relays count events, portals registry writes and reads."""
    if network.kind == "portal":
        text = f"registry writes {network.sent} · reads {network.received}"
    else:
        text = f"events sent {network.sent} · received {network.received} · rejected {network.rejected}"
    if network.reasons:
        text += " (" + ", ".join(f"{safe(reason)} ×{count}" for reason, count in network.reasons) + ")"
    return text


def _state_style(network: NetworkState) -> str:
    if is_refused(network):
        return "bold red"
    if is_down(network):
        return "red"
    return "green" if is_up(network) else "yellow"


def networks_text(snap: CallSnapshot, peer: PeerSnapshot | None) -> Text:
    """The ICE panel's "networks" section: every portal and relay with its state (a refusal with the
    relay's reason) and counters, whether the relays are the public defaults, and which network
    delivered the focused participant's last signalling message."""
    networks = room_networks(snap)
    text = Text()
    text.append("networks (signalling: written to all, read from all)\n", style="underline")
    if not networks:
        text.append(" none yet\n", style="grey50")
    for network in networks:
        text.append(f" {network.kind:<6} ", style="bold")
        text.append(safe(network.url))
        text.append(f"  {safe(network.state) or 'state not known yet'}\n", style=_state_style(network))
        text.append(f"        {_counters(network)}\n", style="grey62")
    if snap.public_relays:
        text.append(" public relays, chosen for this room (everyone in it picks the same); replace them with "
                    f"{REPLACE_HINT}\n", style="grey62")
    if peer is not None:
        delivered = last_delivery(peer)
        text.append(f" last signalling from {safe(peer.name)}: ", style="bold")
        if delivered is None:
            text.append("none carried by a network yet\n", style="grey50")
        else:
            t, what, via = delivered
            text.append(f"{safe(what)} via {safe(via)} at {t:.3f} s\n")
    text.rstrip()
    return text


def _listed(networks: Sequence[NetworkState]) -> str:
    return ", ".join(safe(n.url) + (f" ({safe(n.state)})" if is_down(n) else "") for n in networks)


class NetworkNews:
    """Turns network state changes into toasts, each once: a relay that starts refusing us (again
    only if its state changes and comes back), and the room losing every network after one had
    answered (joining that fails is already the engine's notice), then getting one back."""

    def __init__(self) -> None:
        self._refused: dict[str, str] = {}
        self._was_up = False
        self._outage = False  # every network down after one had answered: told, not yet back

    def news(self, snap: CallSnapshot) -> list[tuple[str, str]]:
        """(severity, text) of what changed since the last snapshot seen."""
        out: list[tuple[str, str]] = []
        networks = snap.networks
        for network in networks:
            if not is_refused(network):
                self._refused.pop(network.url, None)
            elif self._refused.get(network.url) != network.state:
                self._refused[network.url] = network.state
                others = any(is_up(n) for n in networks if n is not network)
                how = REPLACE_HINT if network.kind == "relay" else "portals = [...] in the config or --portal URL"
                out.append(("warning", f"{network.kind} {safe(network.url)} refuses us "
                                       f"({safe(state_reason(network.state)) or 'no reason given'}): not used for "
                                       f"this call{'; the others carry it' if others else ''}. Replace it with "
                                       f"{how}."))
        any_up = any(is_up(n) for n in networks)
        if networks and all(is_down(n) for n in networks) and self._was_up and not self._outage:
            self._outage = True
            out.append(("error", f"no network carries the room now ({_listed(networks)}): the calls in progress go "
                                 "on, but nobody can join or reconnect until one answers — retrying"))
        elif self._outage and any_up:
            self._outage = False
            back = ", ".join(safe(n.url) for n in networks if is_up(n))
            out.append(("information", f"the room is reachable again via {back}"))
        self._was_up = self._was_up or any_up
        return out

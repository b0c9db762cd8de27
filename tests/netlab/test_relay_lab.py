"""Bots behind the lab's NATs signal through a Nostr relay on the lab's public side (issue 12).

A real relay (PyPI nostr-relay) runs in the lab's public namespace on an address of its own; two
real `sdparta bot` processes, each behind its own NAT box, are given only that relay (no portal):
the offer and the answer travel through it, and the pair connects across the NATs — through STUN
for endpoint-independent NATs, through coturn for two symmetric ones — and each hears the other's
tone at its pitch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netlab.lab import PUBLIC_NET, Lab
from netlab.test_nat_calls import Pair, stun_flags, turn_flags
from sdparta.media.analysis import read_wav, tone_power
from support.nostr_relay import RelayProcess, start_relay
from support.procs import free_port, start_bot, wait_for

pytestmark = pytest.mark.netlab

RELAY_IP = f"{PUBLIC_NET}.4"  # the relay's own address on the public bridge (portal .1, coturn .2/.3)
CONNECT_TIMEOUT = 20.0  # the bots' connect timeout in the lab (seconds)
TONES = {"a": 440.0, "b": 660.0}

def start_lab_relay(lab: Lab, workdir: Path) -> RelayProcess:
    """A relay on RELAY_IP in the lab's public namespace, stopped (by PID) when the lab closes."""
    lab.sh(lab.public_ns, f"ip addr add {RELAY_IP}/24 dev br0")
    # any port is free in the fresh namespace; this one is just not a privileged one
    relay = start_relay(workdir / "lab-relay", port=free_port(), host=RELAY_IP,
                        argv_prefix=("ip", "netns", "exec", lab.public_ns))
    lab.stoppers.append(relay)
    return relay


def start_relay_pair(lab: Lab, tmp_path: Path, hosts: tuple[Any, Any], relay: RelayProcess,
                     flags: tuple[list[str], list[str]]) -> Pair:
    bots = []
    for name, host, extra in zip(("a", "b"), hosts, flags, strict=True):
        bots.append(start_bot(tmp_path, "lab-relay-room", [], name, tone=TONES[name], video="none",
                              extra=["--relay", relay.url, "--connect-timeout", str(CONNECT_TIMEOUT), *extra],
                              argv_prefix=host.exec_prefix()))
    return Pair(*bots)


def _assert_hears(pair: Pair) -> None:
    """Each WAV holds the other's tone at its pitch, clearly above its own (silent) band."""
    for bot, other in ((pair.a, "b"), (pair.b, "a")):
        samples, rate = read_wav(bot.wav_path)  # type: ignore[arg-type]
        assert len(samples) > rate * 2, f"{bot.name} recorded only {len(samples) / rate:.1f} s"
        heard, own = tone_power(samples, rate, TONES[other]), tone_power(samples, rate, TONES[bot.name])
        assert heard > 0.003, f"{bot.name}'s WAV lacks {other}'s {TONES[other]} Hz tone ({heard:.4f})"
        assert heard > 20 * own, f"{bot.name} hears {other} no louder than silence at its own tone"


@pytest.mark.parametrize(("nats", "path"), [(("eim", "eim"), "stun"), (("symmetric", "symmetric"), "turn")])
def test_bots_behind_nats_signal_through_a_relay_on_the_public_side(  # type: ignore[no-untyped-def]
        lab, tmp_path: Path, nats: tuple[str, str], path: str) -> None:
    relay, coturn = start_lab_relay(lab, tmp_path), lab.start_coturn(tmp_path)
    hosts = lab.add_private("a", nats[0]), lab.add_private("b", nats[1])
    flags = [*stun_flags(coturn), *(turn_flags(coturn) if path == "turn" else [])]
    pair = start_relay_pair(lab, tmp_path, hosts, relay, (flags, flags))
    try:
        wait_for(lambda: all(peer.get("status") == "connected" and peer.get("audio_seconds", 0) > 3
                             for _, peer in pair.both()), 90, "a and b connected through the relay, hearing "
                 "each other", interval=0.5, diagnostics=lambda: f"{pair.describe()}\nrelay: {relay.log()[-1500:]}")
        for bot, peer in pair.both():
            assert peer["path"] == path, pair.describe()
            local, remote = peer["selected_pair"]["local"], peer["selected_pair"]["remote"]
            if path == "stun":  # across both NATs by their mappings, not by host addresses
                assert {local["type"], remote["type"]} & {"srflx", "prflx"}, pair.describe()
            else:
                assert "relay" in (local["type"], remote["type"]), pair.describe()
            # the offer or the answer came through the lab's relay, and nothing else carried the room
            assert any(f"received via {relay.url}" in s["state"] for s in peer["states"]), pair.describe()
            [network] = (bot.report() or {})["networks"]
            assert network["kind"] == "relay" and network["url"] == relay.url, network
            assert network["sent"] > 0 and network["received"] > 0, network
    finally:
        pair.a.stop()
        pair.b.stop()
    _assert_hears(pair)
    stored = relay.stored_events()  # the relay in the public namespace really held the room
    assert len({e["pubkey"] for e in stored}) >= 2, stored

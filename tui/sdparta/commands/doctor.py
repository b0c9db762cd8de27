"""`sdparta doctor`: will calls from this machine connect, and if not, what is the fix?

Checks each portal (latency, Skynet API, push), each Nostr relay (NIP-11 limits, a probe event
published and read back, round trip, refusals), each STUN server (answer, mapped address), the NAT
mapping behaviour they reveal, each TURN server (an allocation with the given credentials), and
gathers ICE candidates like a call does; then prints one verdict with the fix. A room needs one
signalling network that works: portals or relays, either is enough. With no portal and no relay
configured it checks what a call would then use: the built-in public relays (a room takes 3 of them)
and the public STUN server. Exit code 0 = pass, 1 = fail (2 = bad options).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from sdparta import netchecks
from sdparta.commands.options import network_flags
from sdparta.config import ConfigError, load_settings
from sdparta.engine import defaults
from sdparta.netchecks import Check
from sdparta.netchecks.relay import REFUSAL_PROBLEMS, relay_fix

TURN_FLAGS = "--turn URL --turn-user U --turn-password P"
#: The fix for a built-in public relay that fails: it is not in the user's config to remove.
PUBLIC_RELAY_FIX = ("a built-in public relay (a room uses 3 of them, chosen by its keys): name relays that work "
                    "from here in `relays = [...]` in the config, or give --relay wss://…")


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    verdict: str = "pass"  # pass | fail
    summary: str = ""
    fix: str = ""
    public_defaults: bool = False  # nothing configured: the built-in public relays and STUN were checked

    def as_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "summary": self.summary, "fix": self.fix,
                "public_defaults": self.public_defaults, "checks": [check.as_json() for check in self.checks]}


@dataclass(frozen=True)
class TurnCredential:
    url: str
    username: str | None
    password: str | None


async def examine(portals: list[str], stun: list[str], turn: list[TurnCredential], *, relays: list[str] | None = None,
                  public_defaults: bool = False, relay_only: bool = False, timeout: float = 5.0,
                  progress: TextIO | None = None) -> DoctorReport:
    """Run every check (servers side by side, then candidate gathering) and judge them."""
    def say(check: Check) -> Check:
        if progress is not None:
            print(format_check(check), file=progress, flush=True)
        return check

    async def shown(coro: Any) -> Check:
        return say(await coro)

    async def relay(url: str) -> Check:
        check = await netchecks.check_relay(url, timeout=timeout)
        if public_defaults and not check.ok:
            check = replace(check, facts={**check.facts, "fix": PUBLIC_RELAY_FIX})
        return say(check)

    relays = relays or []
    if progress is not None and public_defaults:
        print("no portal and no relay configured: checking what a call would use, the built-in public relays "
              "and STUN server", file=progress, flush=True)
    if progress is not None:
        print(f"checking {len(portals)} portal(s), {len(relays)} relay(s), {len(stun)} STUN and {len(turn)} TURN "
              "server(s)…", file=progress, flush=True)
    jobs = [shown(netchecks.check_portal(url, timeout=timeout)) for url in portals]
    jobs += [relay(url) for url in relays]
    jobs += [shown(netchecks.check_stun(url, timeout=timeout)) for url in stun]
    jobs += [shown(netchecks.check_turn(t.url, t.username, t.password, timeout=timeout)) for t in turn]
    if stun and not relay_only:
        jobs.append(shown(netchecks.nat_mapping(stun, timeout=timeout)))
    checks = list(await asyncio.gather(*jobs))
    first_turn = (turn[0].url, turn[0].username, turn[0].password) if turn else None
    checks.append(say(await netchecks.gather_candidates(stun[0] if stun else None, first_turn,
                                                       relay_only=relay_only, timeout=timeout + 3)))
    report = DoctorReport(checks, public_defaults=public_defaults)
    judge(report, relay_only=relay_only)
    return report


def judge(report: DoctorReport, *, relay_only: bool) -> None:
    """The first blocking problem decides the verdict; otherwise say which paths will work."""
    def of(kind: str) -> list[Check]:
        return [c for c in report.checks if c.kind == kind]

    def fail(summary: str, fix: str) -> None:
        report.verdict, report.summary, report.fix = "fail", summary, fix

    portals, relays, stuns, turns = of("portal"), of("relay"), of("stun"), of("turn")
    nat = next(iter(of("nat")), None)
    gathering = next(iter(of("gathering")), None)
    working_turn = [c for c in turns if c.ok]
    if not portals and not relays:
        return fail("no portal and no relay configured: nobody can find you",
                    "add --relay wss://… or --portal URL (or `relays = [...]` / `portals = [...]` in the config)")
    if not any(c.ok for c in portals + relays):
        summary, fix = _no_signalling(portals, relays)
        return fail(summary, PUBLIC_RELAY_FIX if report.public_defaults else fix)
    for check in turns:
        if check.problem == "auth-failed":
            return fail(f"TURN authentication failed ({check.url})",
                        "check --turn-user and --turn-password against the TURN server's user")
    if relay_only and not working_turn:
        reason = "; ".join(c.detail for c in turns) or "no TURN server is configured"
        return fail(f"--relay-only needs a working TURN relay: {reason}", f"add {TURN_FLAGS}")
    if gathering is not None and not gathering.ok:  # no candidate at all: with host candidates it is ok
        if relay_only:
            return fail(f"no relay candidate could be gathered ({gathering.detail})",
                        "the TURN server answered its own check but not the gathering: retry with a longer --timeout")
        return fail("no ICE candidates could be gathered: no usable network interface",
                    "check that a network interface is up (`ip addr`); loopback alone is not enough")
    if nat is not None and nat.problem == "symmetric" and not working_turn:
        why = f" ({turns[0].detail})" if turns else ""
        return fail("symmetric NAT: the public address changes per destination, so a TURN relay is needed" + why,
                    f"add {TURN_FLAGS}, or join rooms where someone shares a relay (--share-turn)")
    if stuns and not any(c.ok for c in stuns) and not working_turn:
        return fail("no STUN server answers: only peers on this same network can connect",
                    "check the --stun URL and that outgoing UDP is allowed; or add a TURN relay over TCP "
                    f"({TURN_FLAGS} with ?transport=tcp)")
    failed_turn = [c for c in turns if not c.ok]
    notes = [f"TURN {c.url}: {c.detail}" for c in failed_turn]
    notes += [f"portal {c.url}: {c.detail}" for c in portals if not c.ok]
    notes += [f"relay {c.url}: {_finding(c)}" for c in relays if not c.ok]
    if working_turn:
        report.summary = f"calls can connect, through the TURN relay {working_turn[0].url} when direct paths fail"
    elif nat is not None and nat.facts.get("behaviour") in ("endpoint-independent", "none"):
        report.summary = ("calls can connect directly or via STUN; peers behind a symmetric NAT will need a "
                          "TURN relay")
    elif not stuns:
        report.summary = "calls can connect on this local network only (no STUN or TURN server configured)"
        report.fix = "add --stun URL (and a TURN relay) to reach peers behind other NATs"
    else:
        report.summary = "calls can connect via STUN where the NATs allow it (NAT behaviour unknown)"
        report.fix = f"add a second --stun server to learn the NAT behaviour, or a TURN relay ({TURN_FLAGS})"
    if notes:
        report.summary += " — but " + "; ".join(notes)
    failed_relays = [c for c in relays if not c.ok]
    if failed_relays:  # the call works without them; say how to stop asking them
        fix = failed_relays[0].facts.get("fix") or relay_fix(failed_relays[0].url)
        report.fix = f"{report.fix}; {fix}" if report.fix else fix


def _finding(check: Check) -> str:
    """A relay's finding without its description (name, limits), for the verdict line."""
    return str(check.facts.get("finding") or check.detail)


def _no_signalling(portals: list[Check], relays: list[Check]) -> tuple[str, str]:
    """(summary, fix) when no portal and no relay can carry the room: name the likeliest cause."""
    portal_fix = "check the --portal URL, or run your own with `sdparta portal --host 0.0.0.0`"
    if not relays:
        return "no portal answers: rooms cannot be joined", portal_fix
    reasons = "; ".join(f"{c.url}: {_finding(c)}" for c in relays)
    if all(c.problem in REFUSAL_PROBLEMS for c in relays):
        what = f"every relay refuses us ({reasons})"
        fix = "use other relays (`--relay wss://…`), or remove these from `relays = [...]` in the config"
    elif all(c.problem == "too-small" for c in relays):
        what = f"no relay can carry a call's offer ({reasons})"
        fix = "use relays with larger limits (`--relay wss://…`), or remove these from `relays = [...]` in the config"
    else:
        what, fix = f"no relay works ({reasons})", relays[0].facts.get("fix") or relay_fix(relays[0].url)
    if not portals:
        return f"{what}: rooms cannot be joined", fix
    return f"no portal and no relay answers: rooms cannot be joined; {what}", f"{portal_fix}; or {fix}"


def format_check(check: Check) -> str:
    mark = "ok  " if check.ok else ("??  " if check.problem == "unknown" else "FAIL")
    where = f"{check.url}  " if check.url else ""
    line = f"{mark} {check.kind:<9} {where}{check.detail}"
    if check.kind == "relay" and not check.ok and check.facts.get("fix"):
        line += f"\n            fix: {check.facts['fix']}"
    if check.kind == "gathering" and check.facts.get("candidates"):
        line += "".join(f"\n            {candidate}" for candidate in check.facts["candidates"])
    return line


def run_doctor(portals: list[str], stun: list[str], turn: list[TurnCredential], *, relays: list[str] | None = None,
               public_defaults: bool = False, relay_only: bool = False, as_json: bool = False,
               timeout: float = 5.0) -> int:
    # the relay client logs refusals as warnings: here they are findings, printed once as such
    logging.getLogger("sdparta.nostr").setLevel(logging.ERROR)
    report = asyncio.run(examine(portals, stun, turn, relays=relays, public_defaults=public_defaults,
                                 relay_only=relay_only, timeout=timeout, progress=None if as_json else sys.stdout))
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(f"\nverdict: {report.verdict.upper()} — {report.summary}")
        if report.fix:
            print(f"fix: {report.fix}")
    return 0 if report.verdict == "pass" else 1


def run(args: argparse.Namespace) -> int:
    """``sdparta doctor``: portals, relays and STUN/TURN from the settings (config file < flags); with
    neither a portal nor a relay, the public defaults a call would use (config.call_config's rule)."""
    try:
        settings = load_settings(network_flags(args).network_overrides())
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    portals, relays, stun = list(settings["portals"]), list(settings["relays"]), list(settings["stun"])
    public = not portals and not relays
    if public:
        relays, stun = list(defaults.PUBLIC_RELAYS), stun or list(defaults.PUBLIC_STUN)
    turn = [TurnCredential(t.url, t.username or None, t.password or None) for t in settings.typed.turn]
    return run_doctor(portals, stun, turn, relays=relays, public_defaults=public, relay_only=settings["relay_only"],
                      as_json=args.json, timeout=args.timeout)

"""Which member records a writer puts into the presence list when it cannot keep them all."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sdparta.room.wire import MAX_MEMBERS, Member

#: Sessions of one identity kept in the list a writer writes (a flood from one key cannot fill it).
MAX_SESSIONS_PER_IDENTITY = 4


def fair_list(own_key: tuple[bytes, str], own: Member | None, records: Iterable[Member],
              alive: Callable[[Member], bool], fresh: Callable[[Member], bool]) -> list[Member]:
    """The list to write, fair under flooding: our own record first (``own``; None when leaving, and
    any other record of ``own_key`` is dropped), then the members heard on live connections, then the
    freshest others; one record per session (the newest), at most MAX_SESSIONS_PER_IDENTITY sessions
    per identity and MAX_MEMBERS records in all."""
    newest: dict[tuple[bytes, str], Member] = {}
    for member in records:
        known = newest.get(member.key)
        if member.key != own_key and fresh(member) and (known is None or member.ts_ms > known.ts_ms):
            newest[member.key] = member
    live = {key for key, member in newest.items() if alive(member)}
    result = [own] if own is not None else []
    per_identity: dict[bytes, int] = {own_key[0]: 1}
    for member in sorted(newest.values(), key=lambda m: (m.key not in live, -m.ts_ms)):
        if len(result) >= MAX_MEMBERS:
            break
        count = per_identity.get(member.public_key, 0)
        if count < MAX_SESSIONS_PER_IDENTITY:
            per_identity[member.public_key] = count + 1
            result.append(member)
    return result

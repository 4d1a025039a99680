"""Hostile load, one attack after another, against one real ``pttd server run`` process.

The attacks are ``pttd bench hostile``'s own (:mod:`pttd.bench.attacks`), run the same way (by
:class:`pttd.bench.hostile.Arena`): from a separate process, each from its own loopback
addresses, each bounded in count and time. Pings never read, members that never read while 2 KB
texts and 8 KiB packets go to them, one user's sessions, connections that never log on, forged
audio, junk text frames. Beside them, for the whole run, an honest pair (users, room alpha)
streams a 20 ms packet at a time with sequence numbers.

Checked after each phase: the honest listener got every packet, in order, and nothing forged;
the server's RSS stayed within :data:`RSS_MARGIN_MB` of its RSS after the phase without attack;
it logged at most :data:`LOG_LINES` lines; and what the server answered each attack with (the
session limit, sheds, kicks). Latencies are printed, never checked.

The RSS bound means something: the deaf attack alone asks the server to queue several times
:data:`RSS_MARGIN_MB` for members that read nothing (the kernel's socket buffers take ~3 MB of
each member's share; a server without a bound would hold the rest, over 100 MB), while a bounded
server holds at most 512 KiB per member (20 MB for 40) beyond its baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pttd.bench import attacks, hostile
from pttd.bench.attacks import AttackResult
from pttd.bench.hostile import PhaseResult
from pttd.server.app import ServerSettings

SECONDS = 3.0  # per phase: 7 phases, about 25 s in all
RSS_MARGIN_MB = hostile.TARGET_RSS_GROWTH_MB  # 60 MB
LOG_LINES = hostile.TARGET_LOG_LINES  # 200 a phase
DEFAULTS = ServerSettings()


def show(phase: PhaseResult, baseline: float | None) -> None:
    h, s = phase.honest, phase.server
    print(
        f"\n{phase.attack:<9} honest p50 {h.p50_ms} ms p99 {h.p99_ms} ms max {h.max_ms} ms, "
        f"sent {h.sent} lost {h.lost}; server RSS {s.rss_mb} MB (baseline {baseline}, peak "
        f"{s.peak_mb}), CPU {s.cpu}, {s.log_lines} log lines; {hostile.describe(phase.clients)}"
    )


def expect_pings(clients: AttackResult, spread: bool) -> None:
    assert clients.connections == attacks.PINGERS
    assert clients.frames > 0


def expect_deaf(clients: AttackResult, spread: bool) -> None:
    assert clients.logged_on == attacks.DEAF + 1  # the members and their talker
    assert clients.offered_mb > 3 * RSS_MARGIN_MB, "the attack would not test the bound"


def expect_sessions(clients: AttackResult, spread: bool) -> None:
    allowed = DEFAULTS.max_sessions_per_principal
    assert clients.logged_on == allowed
    assert clients.answers == {"too many sessions": attacks.SESSION_TRIES - allowed}


def expect_pending(clients: AttackResult, spread: bool) -> None:
    sheds = clients.closed.get("1013", 0)  # "try again later"
    if spread:  # the attack's address is its own: each connection past 16 shed one of its own
        assert sheds == clients.connections - DEFAULTS.max_pending_per_address
    else:
        assert sheds > 0


def expect_forged(clients: AttackResult, spread: bool) -> None:
    assert clients.rounds >= 1
    assert clients.closed == {"1008": clients.connections}  # every forger kicked
    # Refusals without a seq come as on_error too: of a device's packets (the kick's own
    # on_error says the same) and of an anonymous client's.
    kicks = clients.answers.get("on_error invalid audio packet", 0)
    assert kicks >= clients.connections, clients.answers
    assert set(clients.answers) == {"on_error invalid audio packet", "on_error not logged in"}


def expect_junk(clients: AttackResult, spread: bool) -> None:
    rounds = clients.rounds
    assert rounds >= 1
    # Per round: the sprayers kicked for the flood (1008), or cut first for sending more than a
    # logon before logging on (1006: the connection aborted); one frame too big (1009, or the
    # same cut); one not UTF-8 (1007).
    closed = dict(clients.closed)
    assert closed.pop("1007") == rounds, clients.closed
    assert set(closed) <= {"1008", "1009", "1006"}, clients.closed
    assert sum(closed.values()) == rounds * (attacks.JUNK_CLIENTS + 2), clients.closed
    # Answered (a seq) or not (on_error); 5 wrong passwords at most are checked, then the
    # address is blocked (a sprayer cut for its input may not read its answer: fewer is fine).
    assert 0 < clients.answers.get("not authorized", 0) <= DEFAULTS.auth_failures
    for error in ("on_error invalid json", "unknown command", "not logged in", "rate limited"):
        assert clients.answers.get(error, 0) > 0, (error, clients.answers)


EXPECT: dict[str, Callable[[AttackResult, bool], None]] = {
    "pings": expect_pings,
    "deaf": expect_deaf,
    "sessions": expect_sessions,
    "pending": expect_pending,
    "forged": expect_forged,
    "junk": expect_junk,
}


def check_honest(phase: PhaseResult) -> None:
    h = phase.honest
    assert h.sent > 0
    assert (h.lost, h.out_of_order, h.foreign) == (0, 0, 0), (phase.attack, h)


async def test_hostile_clients_one_after_another(tmp_path: Path) -> None:
    assert set(EXPECT) == set(attacks.ATTACKS)
    async with hostile.Arena.open(tmp_path) as arena:
        reference = await arena.phase(None, SECONDS)
        baseline = reference.server.rss_mb
        show(reference, baseline)
        check_honest(reference)
        assert baseline is not None
        for name in attacks.ATTACKS:
            phase = await arena.phase(name, SECONDS)
            show(phase, baseline)
            check_honest(phase)
            peak = phase.server.peak_mb
            assert peak is not None and peak - baseline <= RSS_MARGIN_MB, (name, peak, baseline)
            assert phase.server.log_lines <= LOG_LINES, arena.log_lines()[-50:]
            assert phase.clients is not None
            EXPECT[name](phase.clients, arena.spread)
        totals = await arena.finish()
        print(f"\nhonest, whole run: {totals}")
        assert (totals.lost, totals.out_of_order, totals.foreign) == (0, 0, 0), totals
        assert totals.stream_stopped is None and not totals.connection_lost, totals
        assert arena.server_errors() == []
        # Nothing written to a connection once cut: asyncio logs a line per such write.
        assert not [line for line in arena.log_lines() if " asyncio: " in line]

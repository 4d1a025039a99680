"""Hostile clients against one room server: what each attack costs an honest talk beside it.

One ``pttd server run`` process (default limits, logging at INFO) serves an honest pair in room
``alpha``: user alice sends a 60-byte audio packet every 20 ms (deadline-paced), each carrying a
sequence number and its send time, and user bob checks that every one comes, in order, and takes
its latency. First a phase with no attack (the reference), then each attack in turn for the same
few seconds, from a separate process (so that the attackers' own CPU is not counted in the honest
pair's latency), each from its own loopback addresses (127.0.N.x, where the machine has them):

* ``pings``: 25 anonymous clients write pings as fast as they can (4 000 each at most) and never
  read the pongs;
* ``deaf``: 40 members of alpha and beta stop reading while another member sends 2 KB texts to
  alpha and 8 KiB audio packets to beta, 240 a second: what the server is asked to queue for
  them (``offered``) is far more than its bound, 512 KiB per connection, lets it hold;
* ``sessions``: one user logs on 16 times from one address (8 sessions allowed);
* ``pending``: 50 connections a second from one address that never log on (from the 17th on,
  each sheds the oldest, 1013);
* ``forged``: logged-on devices and anonymous clients send audio under the honest stream's id
  (refused, then kicked: 1008), over and over;
* ``junk``: bad JSON, unknown commands, missing fields, wrong passwords, faster than the
  control-message limit (kicked: 1008), and frames too big (1009) or not UTF-8 (1007).

Every attack is bounded in count and time and closes its connections at the end. Per phase: the
honest pair's packets sent and lost, latency p50/p99/max; the server's RSS (sampled every 50 ms,
and its high-water mark), its CPU, and the lines it logged; what the attack did and how the
server answered (close codes, refusals).

Targets, none of them a speed: no honest packet lost or out of order, no forged packet heard,
the server's peak RSS at most 60 MB above its RSS after the reference phase, at most 200 log
lines per attack, and no error or traceback in the server's log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pttd.bench import attacks
from pttd.bench.attacks import (
    ANSWER_TIMEOUT,
    ATTACK_GRACE,
    ATTACKS,
    CLOSE_TIMEOUT,
    CODEC,
    DEAF,
    FORGERS,
    HONEST,
    MARK,
    OPEN_TIMEOUT,
    PACKET_MS,
    PADDING,
    ROOM,
    SIDE_ROOM,
    AttackResult,
    Cast,
    Pacer,
    Target,
    spread_addresses,
)
from pttd.bench.common import (
    add_output_arguments,
    child_env,
    emit,
    finish,
    load_average,
    machine,
    mark,
    nearest_rank,
    proc_cpu_seconds,
    proc_status_kb,
    server_command,
    start_logging,
)
from pttd.bench.server import BenchError, Contender, server_process
from pttd.cliargs import positive_float
from pttd.server.registry import Registry
from pttd.wire import messages as p

log = logging.getLogger(__name__)

IDLE: Final = 255  # the phase of packets sent between phases
NO_ATTACK: Final = "none"

# Per phase: full run, then --quick.
PHASE_SECONDS: Final = (5.0, 1.5)

TARGET_RSS_GROWTH_MB: Final = 60.0
TARGET_LOG_LINES: Final = 200

# Bounds, so that a broken run ends with an error instead of hanging (the attacks have theirs).
START_TIMEOUT: Final = 30.0  # a process to start; the honest pair to hear its first packet
DRAIN_TIMEOUT: Final = 30.0  # after an attack, for the honest packets it delayed to arrive
RSS_EVERY: Final = 0.05


# --------------------------------------------------------------------------- registry, attackers


def prepare(db: Path) -> Cast:
    """Make the registry: rooms alpha and beta, three users in alpha, the attackers' devices."""
    passwords = {name: secrets.token_urlsafe(16) for name in ("alice", "bob", "carol")}
    with Registry(db) as reg:
        reg.add_room(ROOM)
        reg.add_room(SIDE_ROOM)
        for name, password in passwords.items():
            reg.add_user(name, password, [ROOM])

        def device(name: str, rooms: Sequence[str] = (ROOM,)) -> str:
            code = reg.create_pair_code(list(rooms))
            return reg.redeem_pair_code(code.code, name).auth_token

        return Cast(
            passwords=passwords,
            deaf=[device(f"deaf-{i:02d}", (ROOM, SIDE_ROOM)) for i in range(DEAF)],
            loud=device("loud", (ROOM, SIDE_ROOM)),
            forgers=[device(f"forger-{i}") for i in range(FORGERS)],
            junk=device("junk"),
        )


class Attacker:
    """The attacker process, seen from the arena."""

    def __init__(self, proc: asyncio.subprocess.Process, errors: Path) -> None:
        self.proc = proc
        self.errors = errors

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, workdir: Path, target: Target) -> AsyncIterator[Attacker]:
        errors = workdir / "attacker.stderr"
        with errors.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                attacks.__name__,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=workdir,
                env=child_env(),
            )
        attacker = cls(proc, errors)
        try:
            line = await attacker._exchange(target.to_json(), START_TIMEOUT, "starting")
            if line != "ready":
                raise BenchError(f"the attacker process did not start: {line or attacker._tail()}")
            yield attacker
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT * 2):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def _tail(self) -> str:
        lines = self.errors.read_text(errors="replace").splitlines()
        return "\n".join(lines[-20:]) or "no output"

    async def _exchange(self, line: str, within: float, what: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        try:
            async with asyncio.timeout(within):
                await self.proc.stdin.drain()
                return (await self.proc.stdout.readline()).decode().strip()
        except TimeoutError:
            raise BenchError(f"the attacker process, {what}: no answer in {within:g} s") from None
        except ConnectionError as exc:
            raise BenchError(f"the attacker process, {what}: {exc}; {self._tail()}") from exc

    async def run(self, name: str, seconds: float) -> AttackResult:
        command = json.dumps({"attack": name, "seconds": seconds})
        line = await self._exchange(command, seconds + ATTACK_GRACE + 30, f"attack {name}")
        if not line:
            raise BenchError(f"the attacker process ended during attack {name}: {self._tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise BenchError(f"attack {name}: {answer['error']}")
        return AttackResult(**answer["result"])


# --------------------------------------------------------------------------- the honest pair


@dataclass(frozen=True, slots=True)
class HonestFigures:
    """What the honest pair saw in one phase."""

    sent: int
    received: int
    lost: int  # sent in the phase, not received once it was over (and drained)
    out_of_order: int  # packets that did not follow the one before
    foreign: int  # packets that were not the honest talker's (forged ones relayed)
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True, slots=True)
class HonestTotals:
    """The whole run, between phases included."""

    sent: int
    received: int
    lost: int
    out_of_order: int
    foreign: int
    stream_stopped: str | None  # the server ended the honest talk (why), or None
    connection_lost: bool  # the talker's or the listener's connection closed


async def _connect(url: str) -> ClientConnection:
    return await connect(
        url,
        compression=None,
        max_size=p.MAX_FRAME,
        ping_interval=None,
        open_timeout=OPEN_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        proxy=None,
    )


async def _answer(ws: ClientConnection, seq: int) -> p.Response:
    """Read until the answer with ``seq`` (before the pair's readers start)."""
    async with asyncio.timeout(ANSWER_TIMEOUT):
        while True:
            frame = await ws.recv()
            if isinstance(frame, str):
                m = p.parse_server_message(frame)
                if isinstance(m, p.Response) and m.seq == seq:
                    return m


class Honest:
    """Alice talks in alpha and bob listens, for the whole run; bob's packets, phase by phase."""

    def __init__(self, talker: ClientConnection, listener: ClientConnection, stream_id: int):
        self.talker = talker
        self.listener = listener
        self.stream_id = stream_id
        self.phase = 0
        self.sent: dict[int, int] = {}
        self.received: dict[int, int] = {}
        self.latencies_ns: dict[int, list[int]] = {}
        self.next_seq = 0
        self.expected_seq = 0
        self.out_of_order = 0
        self.foreign = 0
        self.stream_stopped: str | None = None
        self.connection_lost = False
        self.stopping = False
        self.progress = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, url: str, passwords: dict[str, str]) -> Honest:
        listener = await _connect(url)
        talker = await _connect(url)
        try:
            for ws, user in ((listener, "bob"), (talker, "alice")):
                logon = p.Logon(channels=(ROOM,), seq=1, username=user, password=passwords[user])
                await ws.send(logon.to_json())
                if not (answer := await _answer(ws, 1)).success:
                    raise BenchError(f"the honest {user} could not log on: {answer.error}")
            await talker.send(p.StartStream(CODEC, PACKET_MS, seq=2, channel=ROOM).to_json())
            answer = await _answer(talker, 2)
            if answer.stream_id is None:
                raise BenchError(f"the honest talker got no stream: {answer.error}")
        except BaseException:
            await asyncio.gather(listener.close(), talker.close())
            raise
        honest = cls(talker, listener, answer.stream_id)
        for job in (honest._talk, honest._watch_talker, honest._listen):
            honest.tasks.append(asyncio.create_task(job()))
        if not await honest.until(lambda: sum(honest.received.values()) > 0, START_TIMEOUT):
            await honest.close()
            raise BenchError("the honest listener heard nothing")
        return honest

    async def _talk(self) -> None:
        pacer = Pacer(1000 / PACKET_MS)
        try:
            while not self.stopping and self.stream_stopped is None:
                await pacer.tick()
                phase = self.phase
                payload = MARK.pack(HONEST, phase, self.next_seq, time.perf_counter_ns())
                await self.talker.send(p.AudioPacket(self.stream_id, 0, payload + PADDING).encode())
                self.next_seq += 1
                self.sent[phase] = self.sent.get(phase, 0) + 1
        except ConnectionClosed:
            self.connection_lost = True
            self.progress.set()

    async def _watch_talker(self) -> None:
        """The talker reads what comes (so that it is never behind), watching for its stop."""
        try:
            async for frame in self.talker:
                if isinstance(frame, str) and p.OnStreamStop.COMMAND in frame:
                    m = p.parse_server_message(frame)
                    if isinstance(m, p.OnStreamStop) and m.stream_id == self.stream_id:
                        self.stream_stopped = m.reason or "stopped"
        except ConnectionClosed:
            self.connection_lost = True
        self.progress.set()

    async def _listen(self) -> None:
        offset = p.AUDIO_HEADER_SIZE
        try:
            async for frame in self.listener:
                now = time.perf_counter_ns()
                if isinstance(frame, str):
                    continue
                if len(frame) < offset + MARK.size:
                    self.foreign += 1
                    continue
                whose, phase, seq, sent = MARK.unpack_from(frame, offset)
                if whose != HONEST:
                    self.foreign += 1
                    continue
                if seq != self.expected_seq:
                    self.out_of_order += 1
                self.expected_seq = seq + 1
                self.received[phase] = self.received.get(phase, 0) + 1
                self.latencies_ns.setdefault(phase, []).append(now - sent)
                self.progress.set()
        except ConnectionClosed:
            self.connection_lost = True
        self.progress.set()

    async def until(self, condition: Callable[[], bool], within: float) -> bool:
        """Wait for ``condition`` (looked at after each packet heard); False after ``within``
        seconds or once a connection is lost."""
        try:
            async with asyncio.timeout(within):
                while not condition():
                    if self.connection_lost:
                        return False
                    self.progress.clear()
                    await self.progress.wait()
        except TimeoutError:
            return False
        return True

    async def drained(self, phase: int) -> None:
        """Wait (bounded) until every packet sent in ``phase`` is in."""
        await self.until(
            lambda: self.received.get(phase, 0) >= self.sent.get(phase, 0), DRAIN_TIMEOUT
        )

    def figures(self, phase: int, out_of_order: int, foreign: int) -> HonestFigures:
        sent, received = self.sent.get(phase, 0), self.received.get(phase, 0)
        ordered = sorted(self.latencies_ns.get(phase, []))

        def ms(q: float) -> float | None:
            return round(nearest_rank(ordered, q) / 1e6, 2) if ordered else None

        return HonestFigures(
            sent, received, max(0, sent - received), out_of_order, foreign, ms(50), ms(99), ms(100)
        )

    async def finish(self) -> HonestTotals:
        """Stop talking; once everything sent is in (or the wait is over), the totals."""
        self.stopping = True
        await self.tasks[0]
        sent = sum(self.sent.values())
        await self.until(lambda: sum(self.received.values()) >= sent, DRAIN_TIMEOUT)
        received = sum(self.received.values())
        return HonestTotals(
            sent,
            received,
            max(0, sent - received),
            self.out_of_order,
            self.foreign,
            self.stream_stopped,
            self.connection_lost,
        )

    async def close(self) -> None:
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for ws in (self.talker, self.listener):
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await ws.close()
            except TimeoutError:
                ws.transport.abort()


# --------------------------------------------------------------------------- the arena


class HostileServer(Contender):
    """``pttd server run`` as deployed (default limits, INFO), but one talk may last the run."""

    name = "pttd"
    ready_prefix = "pttd-server listening on "

    def __init__(self, db: Path) -> None:
        self.db = db

    def command(self) -> list[str]:
        return server_command(self.db, "--max-talk-time", "3600", log_level="INFO")


@dataclass(frozen=True, slots=True)
class ServerFigures:
    """The server process in one phase."""

    rss_mb: float | None  # at the end
    rss_peak_mb: float | None  # the highest sample, every 50 ms
    hwm_mb: float | None  # its high-water mark so far (VmHWM): nothing in between is missed
    cpu: float | None  # share of one core
    log_lines: int  # lines it logged

    @property
    def peak_mb(self) -> float | None:
        """The highest RSS seen: the high-water mark, or a sample above it (the kernel updates
        the mark at times of its own)."""
        known = [x for x in (self.rss_peak_mb, self.hwm_mb) if x is not None]
        return max(known) if known else None


@dataclass(frozen=True, slots=True)
class PhaseResult:
    attack: str  # NO_ATTACK for the reference
    what: str
    seconds: float
    honest: HonestFigures
    server: ServerFigures
    clients: AttackResult | None  # None for the reference


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


class Arena:
    """One server process, the honest pair and the attacker process, for one run of phases."""

    def __init__(self, pid: int, log_path: Path, honest: Honest, attacker: Attacker, spread: bool):
        self.pid = pid
        self.log_path = log_path
        self.honest = honest
        self.attacker = attacker
        self.spread = spread
        self.phases: list[PhaseResult] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, workdir: Path) -> AsyncIterator[Arena]:
        """Make the registry, start the server, the honest pair and the attacker process; stop
        them all however the run ends."""
        cast = await asyncio.to_thread(prepare, workdir / "registry.db")
        contender = HostileServer(workdir / "registry.db")
        async with server_process(contender, workdir, echo_stderr=False) as server:
            honest = await Honest.start(server.url, cast.passwords)
            try:
                spread = spread_addresses()
                target = Target(server.url, spread, honest.stream_id, cast)
                async with Attacker.start(workdir, target) as attacker:
                    yield cls(
                        server.pid, workdir / f"{contender.name}.stderr", honest, attacker, spread
                    )
            finally:
                await honest.close()

    async def finish(self) -> HonestTotals:
        """The honest pair stops talking; its totals, once what it sent is in."""
        return await self.honest.finish()

    def log_lines(self) -> list[str]:
        """What the server has logged so far."""
        return self.log_path.read_text(errors="replace").splitlines()

    def server_errors(self) -> list[str]:
        """Log lines of an error, a critical failure or a traceback."""
        return [
            line
            for line in self.log_lines()
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
        ]

    async def phase(self, attack: str | None, seconds: float) -> PhaseResult:
        """The honest pair talks for ``seconds`` while ``attack`` runs (None: the reference);
        then, once the packets it delayed are in, the phase's figures."""
        label = len(self.phases)
        honest = self.honest
        loop = asyncio.get_running_loop()
        lines0 = len(self.log_lines())
        cpu0, wall0 = proc_cpu_seconds(self.pid), loop.time()
        out_of_order0, foreign0 = honest.out_of_order, honest.foreign
        peak = [proc_status_kb(self.pid, "VmRSS") or 0]

        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], proc_status_kb(self.pid, "VmRSS") or 0)
                await asyncio.sleep(RSS_EVERY)

        sampler = asyncio.create_task(sample())
        honest.phase = label
        clients = None
        try:
            if attack is None:
                await asyncio.sleep(seconds)
            else:
                clients = await self.attacker.run(attack, seconds)
        finally:
            honest.phase = IDLE
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        cpu1, wall1 = proc_cpu_seconds(self.pid), loop.time()
        await honest.drained(label)
        rss = proc_status_kb(self.pid, "VmRSS")
        result = PhaseResult(
            attack=attack or NO_ATTACK,
            what=ATTACKS[attack][1] if attack else "the honest pair alone: the reference",
            seconds=round(wall1 - wall0, 2),
            honest=honest.figures(
                label, honest.out_of_order - out_of_order0, honest.foreign - foreign0
            ),
            server=ServerFigures(
                rss_mb=_mb(rss),
                rss_peak_mb=_mb(max(peak[0], rss or 0) or None),
                hwm_mb=_mb(proc_status_kb(self.pid, "VmHWM")),
                cpu=None
                if cpu0 is None or cpu1 is None
                else round((cpu1 - cpu0) / (wall1 - wall0), 2),
                log_lines=len(self.log_lines()) - lines0,
            ),
            clients=clients,
        )
        self.phases.append(result)
        return result


# --------------------------------------------------------------------------- the benchmark


@dataclass(frozen=True, slots=True)
class HostileSettings:
    seconds: float = PHASE_SECONDS[0]  # per phase
    quick: bool = False


def figures(phases: Sequence[PhaseResult], totals: HonestTotals) -> dict[str, Any]:
    """The run's figures against the targets; RSS growth is measured from the RSS at the end of
    the reference phase (the first)."""
    baseline = phases[0].server.rss_mb
    peaks = [x.server.peak_mb for x in phases if x.server.peak_mb is not None]
    peak = max(peaks) if peaks else None
    growth = None if baseline is None or peak is None else round(peak - baseline, 1)
    attacks = [x for x in phases if x.clients is not None]
    worst = max(attacks, key=lambda x: x.server.log_lines) if attacks else phases[0]
    return {
        "lost": totals.lost + totals.out_of_order,
        "forged_heard": totals.foreign,
        "rss_baseline_mb": baseline,
        "rss_peak_mb": peak,
        "rss_growth_mb": growth,
        "log_lines_worst": worst.server.log_lines,
        "log_lines_worst_attack": worst.attack,
    }


async def bench(settings: HostileSettings) -> dict[str, Any]:
    """The reference phase, then every attack; the report (see the module's docstring)."""
    began = time.perf_counter()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="pttd-bench-hostile-") as tmp:
        async with Arena.open(Path(tmp)) as arena:
            for attack in [None, *ATTACKS]:
                phase = await arena.phase(attack, settings.seconds)
                log.info(
                    "%-9s honest p99 %s ms, lost %d; server RSS %s MB (peak %s), %d log lines",
                    phase.attack,
                    phase.honest.p99_ms,
                    phase.honest.lost,
                    phase.server.rss_mb,
                    phase.server.rss_peak_mb,
                    phase.server.log_lines,
                )
            totals = await arena.finish()
            errors = arena.server_errors()
            spread = arena.spread
            phases = arena.phases
    f = figures(phases, totals)
    growth = f["rss_growth_mb"]
    return {
        "seconds": settings.seconds,
        "phases": [asdict(x) for x in phases],
        "honest": asdict(totals),
        "figures": f,
        "server_errors": errors[:20],
        "targets": {
            "lost": 0,
            "forged_heard": 0,
            "rss_growth_mb": TARGET_RSS_GROWTH_MB,
            "log_lines": TARGET_LOG_LINES,
            "server_errors": 0,
        },
        "targets_met": {
            "lost": f["lost"] == 0 and totals.stream_stopped is None,
            "forged_heard": f["forged_heard"] == 0,
            "rss_growth_mb": None if growth is None else growth <= TARGET_RSS_GROWTH_MB,
            "log_lines": f["log_lines_worst"] <= TARGET_LOG_LINES,
            "server_errors": not errors,
        },
        "settings": {
            **asdict(settings),
            "addresses": "127.0.N.x per attack" if spread else "127.0.0.1 for all",
            **machine(load_before),
        },
        "elapsed_s": round(time.perf_counter() - began, 1),
    }


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def describe(clients: AttackResult | None) -> str:
    """What an attack did and how the server answered, in one line."""
    if clients is None:
        return ""
    parts = [f"{clients.connections} conns", f"{clients.frames} frames"]
    if clients.offered_bytes:
        parts.append(f"{clients.offered_mb:g} MB unread")
    if clients.logged_on:
        parts.append(f"{clients.logged_on} logged on")
    closed = ", ".join(f"{code}×{n}" for code, n in sorted(clients.closed.items()))
    parts.append(f"closed {closed}")
    top = sorted(clients.answers.items(), key=lambda kv: -kv[1])[:3]
    if top:
        parts.append("; ".join(f"{why}×{n}" for why, n in top))
    return ", ".join(parts)


def format_report(report: dict[str, Any]) -> str:
    f, targets, met = report["figures"], report["targets"], report["targets_met"]
    lines = [
        f"pttd bench hostile: an honest pair in one room (a packet every {PACKET_MS} ms) beside "
        f"each attack for {report['seconds']:g} s; one server process, default limits",
        "",
        f"{'attack':<10}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'sent':>6}{'lost':>5} |"
        f"{'CPU':>5}{'RSS MB':>8}{'peak':>7}{'log':>5} | what the attack did, how the server "
        "answered",
    ]
    for x in report["phases"]:
        h, s = x["honest"], x["server"]
        clients = None if x["clients"] is None else AttackResult(**x["clients"])
        peak = max((v for v in (s["rss_peak_mb"], s["hwm_mb"]) if v is not None), default=None)
        lines.append(
            f"{x['attack']:<10}{_num(h['p50_ms'], '.1f'):>8}{_num(h['p99_ms'], '.1f'):>8}"
            f"{_num(h['max_ms'], '.1f'):>8}{h['sent']:>6}{h['lost']:>5} |"
            f"{_num(s['cpu'], '.0%'):>5}{_num(s['rss_mb'], '.1f'):>8}"
            f"{_num(peak, '.1f'):>7}{s['log_lines']:>5} | {describe(clients)}"
        )
    lines += [
        "",
        f"honest packets lost or out of order  {f['lost']:>6}    target {targets['lost']}"
        f"          {mark(met['lost'])}",
        f"forged packets heard                 {f['forged_heard']:>6}    target "
        f"{targets['forged_heard']}          {mark(met['forged_heard'])}",
        f"server RSS growth (peak - reference) {_num(f['rss_growth_mb'], '.1f'):>6} MB target "
        f"<= {targets['rss_growth_mb']:g} MB   {mark(met['rss_growth_mb'])}"
        f"  ({_num(f['rss_baseline_mb'], '.1f')} -> {_num(f['rss_peak_mb'], '.1f')} MB)",
        f"log lines per attack, worst          {f['log_lines_worst']:>6}    target <= "
        f"{targets['log_lines']}     {mark(met['log_lines'])}  ({f['log_lines_worst_attack']})",
        f"server errors and tracebacks         {len(report['server_errors']):>6}    target "
        f"{targets['server_errors']}          {mark(met['server_errors'])}",
        "",
        "Latency: alice's send to bob's receive, both in this process; the attackers run in "
        "another.",
        f"peak: the server's highest RSS so far. Load average "
        f"{report['settings']['load_average_before']} before, "
        f"{report['settings']['load_average_after']} after; took {report['elapsed_s']:.0f} s.",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds",
        type=positive_float,
        metavar="S",
        help=f"each phase (default {PHASE_SECONDS[0]:g}, quick {PHASE_SECONDS[1]:g})",
    )
    add_output_arguments(parser, f"{PHASE_SECONDS[1]:g} s per phase")


def run(args: argparse.Namespace) -> int:
    start_logging(args.quiet)
    settings = HostileSettings(
        seconds=args.seconds or PHASE_SECONDS[1 if args.quick else 0], quick=args.quick
    )
    report = asyncio.run(bench(settings))
    emit(report, args, format_report)
    return finish("pttd bench hostile", report["targets_met"], args.report_only)

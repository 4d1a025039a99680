"""Room-server fan-out: one talker sends 20 ms audio packets to N listeners in one room.

Measured for pttd's room server and, in the same run, for a bare websockets broadcast server doing
the same fan-out (``pttd.bench.baseline``). Each server runs in its own process, so that its CPU is
apart from the clients'; talker and listeners run in this process, one asyncio task per connection,
everything on 127.0.0.1. The two servers are measured by the same code, alternately, for R rounds;
figures are the medians of the rounds.

Per round:

* warm-up: the talker sends a packet every 20 ms until every listener has had one;
* latency: P packets paced every 20 ms (deadline-based, so the pacing does not drift); each
  payload carries its send time, each listener takes its receive time (same clock, this process):
  p50 and p99 over all deliveries. This includes the time for this process to wake its listener
  tasks, equally for both servers. The server's CPU time per delivery in this phase is the
  like-for-like measure of what each server costs;
* throughput: K packets back to back (``await ws.send`` each: TCP back-pressure applies);
  deliveries per second = deliveries counted by the listeners / (last delivery - first send).
  The CPU use of the server, of this process and of everything else on the machine during this
  phase is reported with it: a server well under 100 % of a core was not what limited the
  figure, and a busy machine makes it noisy.

On Linux with two CPUs or more, this process is pinned to one CPU and each server to another
(``--no-pin`` to leave placement to the OS): otherwise the scheduler often puts the two on the same
core, which halves the figures at random.

Packets are 60-byte payloads (a 24 kbit/s Opus packet of 20 ms) in Channel-API audio frames.
Targets at N=100: pttd's p99 under 20 ms and at least 0.8x the baseline's deliveries per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import logging
import os
import platform
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

import pttd
from pttd.bench import baseline
from pttd.bench.common import (
    add_output_arguments,
    child_env,
    emit,
    finish,
    load_average,
    mark,
    median,
    nearest_rank,
    proc_cpu_seconds,
    server_command,
    start_logging,
)
from pttd.cliargs import positive_int
from pttd.errors import PttdError
from pttd.server.registry import Registry
from pttd.wire import messages as p

log = logging.getLogger(__name__)

T = TypeVar("T")

ROOM: Final = "bench"
PACKET_MS: Final = 20
PAYLOAD_BYTES: Final = 60  # 24 kbit/s x 20 ms
CODEC: Final = p.CodecHeader(48000, 1, PACKET_MS)
# Payload head: phase, sequence number, send time (time.perf_counter_ns in this process).
STAMP: Final = struct.Struct(">BIQ")
PADDING: Final = bytes(PAYLOAD_BYTES - STAMP.size)
WARMUP, LATENCY, THROUGHPUT = 0, 1, 2

TARGET_P99_MS: Final = 20.0
TARGET_RATIO: Final = 0.8

# Defaults: full run, then --quick.
LISTENERS: Final = 100
LATENCY_PACKETS: Final = (250, 50)
THROUGHPUT_PACKETS: Final = (2000, 300)
ROUNDS: Final = (3, 1)

# Bounds, so that a broken run ends with an error instead of hanging.
START_TIMEOUT: Final = 20.0  # a server process to say it listens
JOIN_TIMEOUT: Final = 30.0  # connecting and logging on all clients (plus 0.2 s per client)
WARMUP_TIMEOUT: Final = 10.0
DRAIN_TIMEOUT: Final = 10.0  # after the last latency packet, for the deliveries to arrive
THROUGHPUT_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 5.0
CONNECT_CONCURRENCY: Final = 16  # below the listen backlog (100), so no SYN is dropped


class BenchError(PttdError):
    """A benchmark that could not run to the end; the message says where it stopped."""


# --------------------------------------------------------------------------- settings, results


@dataclass(frozen=True, slots=True)
class BenchSettings:
    listeners: int = LISTENERS
    latency_packets: int = LATENCY_PACKETS[0]
    throughput_packets: int = THROUGHPUT_PACKETS[0]
    rounds: int = ROUNDS[0]
    quick: bool = False
    packet_ms: int = PACKET_MS
    payload_bytes: int = PAYLOAD_BYTES
    throughput_timeout_s: float = THROUGHPUT_TIMEOUT
    pin_cpus: bool = True  # clients on one CPU, the server under test on another


@dataclass(frozen=True, slots=True)
class RoundResult:
    """One server's figures in one round."""

    packets_per_s: float  # deliveries per second in the throughput phase
    p50_ms: float  # latency phase
    p99_ms: float
    max_ms: float
    paced_server_us: float | None  # server CPU per delivered packet in the latency phase
    lost: int  # deliveries missing, latency and throughput phases together
    throughput_s: float  # first send to last delivery
    server_cpu: float | None  # fraction of one core during the throughput phase
    server_us_per_delivery: float | None  # server CPU per delivered packet, same phase
    client_cpu: float  # this process (talker and listeners), same phase
    other_cpu: float | None  # everything else on the machine, same phase (noise from outside)


# --------------------------------------------------------------------------- payloads


def audio_frame(stream_id: int, phase: int, seq: int) -> bytes:
    """A Channel-API audio frame whose payload carries phase, sequence number and send time."""
    payload = STAMP.pack(phase, seq, time.perf_counter_ns()) + PADDING
    return p.AudioPacket(stream_id, 0, payload).encode()


# --------------------------------------------------------------------------- listeners


class Listener:
    """What one listener connection received."""

    __slots__ = ("closed", "counts", "last_ns", "latencies_ns")

    def __init__(self) -> None:
        self.counts = [0, 0, 0]  # per phase
        self.latencies_ns: list[int] = []
        self.last_ns = 0  # receive time of its last throughput packet
        self.closed = False


class Tally:
    """All listeners, and which of them are done with the current phase."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.expected: dict[int, int] = {}
        self._pending: dict[int, int] = {}
        self._done: dict[int, asyncio.Event] = {}

    def start_phase(self, phase: int, expected: int) -> None:
        """Before the talker sends ``phase``: each listener is done after ``expected`` packets."""
        self.expected[phase] = expected
        self._pending[phase] = sum(1 for li in self.listeners if not li.closed)
        self._done[phase] = event = asyncio.Event()
        if not self._pending[phase]:
            event.set()

    async def wait(self, phase: int) -> None:
        await self._done[phase].wait()

    def pending(self, phase: int) -> int:
        return self._pending.get(phase, 0)

    def _one_done(self, phase: int) -> None:
        self._pending[phase] -= 1
        if not self._pending[phase]:
            self._done[phase].set()

    def received(self, li: Listener, phase: int) -> None:
        if li.counts[phase] == self.expected.get(phase):
            self._one_done(phase)

    def gone(self, li: Listener) -> None:
        """A listener's connection closed: it will get nothing more, so stop waiting for it."""
        li.closed = True
        for phase, expected in self.expected.items():
            if li.counts[phase] < expected:
                self._one_done(phase)

    def lost(self, phase: int) -> int:
        expected = self.expected.get(phase, 0)
        return sum(max(0, expected - li.counts[phase]) for li in self.listeners)


async def listen(ws: ClientConnection, li: Listener, tally: Tally) -> None:
    """Receive until the connection closes; text frames are ignored."""
    counts = li.counts
    offset = p.AUDIO_HEADER_SIZE
    try:
        async for message in ws:
            now = time.perf_counter_ns()
            if isinstance(message, str):
                continue
            phase, _seq, sent = STAMP.unpack_from(message, offset)
            if phase == LATENCY:
                li.latencies_ns.append(now - sent)
            elif phase == THROUGHPUT:
                li.last_ns = now
            counts[phase] += 1
            tally.received(li, phase)
    except ConnectionClosed:
        pass
    finally:
        tally.gone(li)


async def discard(ws: ClientConnection) -> None:
    """Read and drop what the server sends the talker, so that its connection keeps flowing."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


# --------------------------------------------------------------------------- the two servers


class Contender:
    """A server under test: how to start it, log a listener on, and get a stream going."""

    name = "?"
    ready_prefix = ""  # the start of the line the server prints once it listens, before its URL

    def command(self) -> list[str]:
        """The server's command line."""
        raise NotImplementedError

    async def join_listener(self, ws: ClientConnection, index: int) -> None:
        """Log listener ``index`` (1…N) on; return once it is in the room."""

    async def join_talker(self, ws: ClientConnection, listeners: int) -> int:
        """Log the talker on once all ``listeners`` are in; return its stream_id."""
        return 1


class Baseline(Contender):
    """The bare websockets relay: nothing to log on to, any stream_id goes."""

    name = "baseline"
    ready_prefix = baseline.READY_PREFIX

    def command(self) -> list[str]:
        return [sys.executable, "-m", baseline.__name__, "--host", "127.0.0.1", "--port", "0"]


class Pttd(Contender):
    """pttd's room server, with a registry of N+1 paired devices in room ``bench``."""

    name = "pttd"
    ready_prefix = "pttd-server listening on "

    def __init__(self, db: Path, tokens: list[str], max_talk_time: float) -> None:
        self.db = db
        self.tokens = tokens  # [0]: the talker
        self.max_talk_time = max_talk_time

    @classmethod
    def prepare(cls, db: Path, devices: int, max_talk_time: float) -> Pttd:
        """Make the registry: one room, ``devices`` paired devices (device logons are cheap;
        a password logon runs scrypt). Each client needs its own device: a device that logs on
        again replaces its older connection."""
        tokens = []
        with Registry(db) as reg:
            reg.add_room(ROOM)
            for i in range(devices):
                code = reg.create_pair_code([ROOM])
                tokens.append(reg.redeem_pair_code(code.code, f"bench-{i}").auth_token)
        return cls(db, tokens, max_talk_time)

    def command(self) -> list[str]:
        return server_command(
            self.db, "--max-packet-rate", "0", "--max-talk-time", str(self.max_talk_time)
        )

    @staticmethod
    async def _next(ws: ClientConnection) -> p.ServerMessage:
        while True:
            frame = await ws.recv()
            if isinstance(frame, str):
                return p.parse_server_message(frame)

    async def _logon(self, ws: ClientConnection, index: int) -> None:
        await ws.send(p.Logon(channels=(ROOM,), seq=1, auth_token=self.tokens[index]).to_json())
        while True:
            m = await self._next(ws)
            if isinstance(m, p.Response) and m.seq == 1:
                if not m.success:
                    raise BenchError(f"pttd refused the logon of bench-{index}: {m.error}")
                return
            if isinstance(m, p.OnError):
                raise BenchError(f"pttd sent bench-{index} an error: {m.error}")

    async def join_listener(self, ws: ClientConnection, index: int) -> None:
        await self._logon(ws, index)
        while True:
            m = await self._next(ws)
            if isinstance(m, p.OnChannelStatus) and m.channel == ROOM:
                return

    async def join_talker(self, ws: ClientConnection, listeners: int) -> int:
        await self._logon(ws, 0)
        while True:
            m = await self._next(ws)
            if isinstance(m, p.OnChannelStatus) and m.users_online >= listeners + 1:
                break
        await ws.send(p.StartStream(codec_header=CODEC, packet_duration=PACKET_MS, seq=2).to_json())
        while True:
            m = await self._next(ws)
            if isinstance(m, p.Response) and m.seq == 2:
                if m.stream_id is None:
                    raise BenchError(f"pttd refused the stream: {m.error} ({m.reason})")
                return m.stream_id


# --------------------------------------------------------------------------- server processes


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """Which CPUs the clients (this process) and the server under test run on.

    Left to itself, Linux's wake-affine scheduling often puts two processes that wake each
    other over a socket on the same core, which halves the throughput at random from one round
    to the next. Pinning them apart keeps each one's CPU its own.
    """

    clients: frozenset[int]
    server: frozenset[int]

    @classmethod
    def choose(cls, pin: bool) -> CpuPlan | None:
        """A plan if pinning is wanted and possible (Linux, two CPUs or more), else None."""
        if not pin or sys.platform != "linux":
            return None
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return None
        return cls(frozenset(cpus[:1]), frozenset(cpus[1:2]))

    def describe(self) -> str:
        return f"clients on CPU {min(self.clients)}, server on CPU {min(self.server)}"


@contextlib.contextmanager
def pinned(cpus: frozenset[int] | None) -> Iterator[None]:
    """Run this thread (and the threads it starts) on ``cpus`` for a while; None: no change."""
    if cpus is None or sys.platform != "linux":
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _pin_process(pid: int, cpus: frozenset[int] | None) -> None:
    if cpus is not None and sys.platform == "linux":
        with contextlib.suppress(OSError):  # the process may already be gone
            os.sched_setaffinity(pid, cpus)


@dataclass(slots=True)
class ServerProcess:
    url: str
    pid: int


@contextlib.asynccontextmanager
async def server_process(
    contender: Contender,
    workdir: Path,
    cpus: frozenset[int] | None = None,
    *,
    echo_stderr: bool = True,
) -> AsyncIterator[ServerProcess]:
    """Start the contender's server; yield its URL once it listens; stop it however we leave.

    Its stderr goes to ``WORKDIR/NAME.stderr``; the last lines are logged as warnings when it
    stops (``echo_stderr``: for a server that logs only what is wrong)."""
    errors = workdir / f"{contender.name}.stderr"
    with errors.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *contender.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=workdir,
            env=child_env(),
        )
    _pin_process(proc.pid, cpus)  # before it starts any thread: they inherit the mask
    started = True
    try:
        assert proc.stdout is not None
        url = ""
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while not url:
                    line = (await proc.stdout.readline()).decode(errors="replace")
                    if not line:  # it closed its output: it is ending
                        await proc.wait()
                        break
                    if line.startswith(contender.ready_prefix):
                        url = line[len(contender.ready_prefix) :].strip()
        except TimeoutError:
            pass
        if not url:
            started = False
            how = (
                f"exited with code {proc.returncode}"
                if proc.returncode is not None
                else f"did not start within {START_TIMEOUT:.0f} s"
            )
            raise BenchError(f"the {contender.name} server {how}: {_tail(errors) or 'no output'}")
        log.debug("%s server (pid %d) listening on %s", contender.name, proc.pid, url)
        yield ServerProcess(url, proc.pid)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                log.warning("%s server did not stop on SIGTERM; killing it", contender.name)
                proc.kill()
                await proc.wait()
        if started and echo_stderr:  # else its output is in the error already, or unwanted
            for line in _tail(errors).splitlines():
                log.warning("%s server: %s", contender.name, line)


def _system_busy_seconds() -> float | None:
    """CPU time the whole machine spent busy (all CPUs), from /proc/stat; None without it."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- one round


async def _connect(url: str) -> ClientConnection:
    return await connect(
        url, compression=None, max_size=p.MAX_FRAME, ping_interval=None, proxy=None
    )


async def _bounded(
    what: str, seconds: float, step: Awaitable[T], detail: Callable[[], str] | None = None
) -> T:
    """``await step`` within ``seconds``; any failure becomes a BenchError saying ``what``."""
    try:
        async with asyncio.timeout(seconds):
            return await step
    except TimeoutError:
        more = f" ({detail()})" if detail is not None else ""
        raise BenchError(f"{what}: not done after {seconds:g} s{more}") from None
    except BenchError:
        raise
    except ExceptionGroup as group:  # from a TaskGroup: report the first failure
        first = group.exceptions[0]
        raise BenchError(f"{what}: {first}") from group
    except (OSError, WebSocketException, PttdError) as exc:
        raise BenchError(f"{what}: {exc}") from exc


async def run_round(
    contender: Contender,
    settings: BenchSettings,
    workdir: Path,
    plan: CpuPlan | None = None,
    deliveries_ns: list[int] | None = None,
) -> RoundResult:
    """Start the contender's server, run warm-up, latency and throughput phases, stop it.

    ``deliveries_ns``, if given, gets every delivery latency of the latency phase (ns).
    """
    n = settings.listeners
    name = contender.name
    tally = Tally()
    connections: list[ClientConnection] = []
    tasks: list[asyncio.Task[None]] = []

    def unfinished(phase: int) -> Callable[[], str]:
        return lambda: f"{tally.pending(phase)} of {n} listeners unfinished"

    server_cpus = plan.server if plan is not None else None
    async with server_process(contender, workdir, server_cpus) as server:

        async def join(index: int, gate: asyncio.Semaphore) -> None:
            async with gate:
                ws = await _connect(server.url)
                connections.append(ws)
                await contender.join_listener(ws, index)
            li = Listener()
            tally.listeners.append(li)
            tasks.append(asyncio.create_task(listen(ws, li, tally)))

        async def join_all() -> tuple[ClientConnection, int]:
            """Listeners in, then the talker, then a stream."""
            gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
            async with asyncio.TaskGroup() as group:
                for i in range(1, n + 1):
                    group.create_task(join(i, gate))
            talker = await _connect(server.url)
            connections.append(talker)
            stream_id = await contender.join_talker(talker, n)
            tasks.append(asyncio.create_task(discard(talker)))
            return talker, stream_id

        async def warm_up(talker: ClientConnection, stream_id: int) -> None:
            """A packet every 20 ms until every listener has had one."""
            tally.start_phase(WARMUP, 1)
            done = asyncio.create_task(tally.wait(WARMUP))
            try:
                seq = 0
                while not done.done():
                    await talker.send(audio_frame(stream_id, WARMUP, seq))
                    seq += 1
                    await asyncio.wait({done}, timeout=settings.packet_ms / 1000)
            finally:
                done.cancel()
            await asyncio.sleep(0.2)  # let the last warm-up packets go by

        async def paced(talker: ClientConnection, stream_id: int) -> list[int]:
            """Latency phase: packets on a fixed 20 ms grid; the sorted latencies."""
            tally.start_phase(LATENCY, settings.latency_packets)
            start = time.perf_counter()
            for seq in range(settings.latency_packets):
                delay = start + seq * settings.packet_ms / 1000 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await talker.send(audio_frame(stream_id, LATENCY, seq))
            with contextlib.suppress(TimeoutError):  # packets not in by then count as lost
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await tally.wait(LATENCY)
            return sorted(x for li in tally.listeners for x in li.latencies_ns)

        async def blast(talker: ClientConnection, stream_id: int) -> None:
            """Throughput phase: packets back to back, until every listener has them all."""
            tally.start_phase(THROUGHPUT, settings.throughput_packets)
            for seq in range(settings.throughput_packets):
                await talker.send(audio_frame(stream_id, THROUGHPUT, seq))
            await tally.wait(THROUGHPUT)

        try:
            talker, stream_id = await _bounded(
                f"{name}: connecting {n} listeners and the talker",
                JOIN_TIMEOUT + 0.2 * n,
                join_all(),
            )
            await _bounded(
                f"{name}: warm-up", WARMUP_TIMEOUT, warm_up(talker, stream_id), unfinished(WARMUP)
            )
            paced_cpu0 = proc_cpu_seconds(server.pid)
            latency_bound = settings.latency_packets * settings.packet_ms / 1000 + DRAIN_TIMEOUT
            latencies = await _bounded(
                f"{name}: latency phase", latency_bound + 10, paced(talker, stream_id)
            )
            if not latencies:
                raise BenchError(f"{name}: no latency packet reached any listener")
            if deliveries_ns is not None:
                deliveries_ns.extend(latencies)
            paced_cpu1 = proc_cpu_seconds(server.pid)
            paced_server_us = None
            if paced_cpu0 is not None and paced_cpu1 is not None:
                paced_server_us = (paced_cpu1 - paced_cpu0) / len(latencies) * 1e6

            server_cpu0 = proc_cpu_seconds(server.pid)
            client_cpu0 = time.process_time()
            busy0 = _system_busy_seconds()
            first_ns = time.perf_counter_ns()
            await _bounded(
                f"{name}: throughput phase",
                settings.throughput_timeout_s,
                blast(talker, stream_id),
                unfinished(THROUGHPUT),
            )
            wall_s = (time.perf_counter_ns() - first_ns) / 1e9
            server_cpu1 = proc_cpu_seconds(server.pid)
            client_cpu_s = time.process_time() - client_cpu0
            busy1 = _system_busy_seconds()
        finally:
            for task in tasks:
                task.cancel()
            await _close_all(connections)
            await asyncio.gather(*tasks, return_exceptions=True)

    deliveries = sum(li.counts[THROUGHPUT] for li in tally.listeners)
    if not deliveries:
        raise BenchError(f"{name}: no throughput packet reached any listener")
    throughput_s = (max(li.last_ns for li in tally.listeners) - first_ns) / 1e9
    server_cpu = server_us = other_cpu = None
    if server_cpu0 is not None and server_cpu1 is not None:
        server_cpu_s = server_cpu1 - server_cpu0
        server_cpu = server_cpu_s / wall_s
        server_us = server_cpu_s / deliveries * 1e6
        if busy0 is not None and busy1 is not None:
            other_cpu = max(0.0, busy1 - busy0 - server_cpu_s - client_cpu_s) / wall_s
    return RoundResult(
        packets_per_s=deliveries / throughput_s,
        p50_ms=nearest_rank(latencies, 50) / 1e6,
        p99_ms=nearest_rank(latencies, 99) / 1e6,
        max_ms=latencies[-1] / 1e6,
        paced_server_us=paced_server_us,
        lost=tally.lost(LATENCY) + tally.lost(THROUGHPUT),
        throughput_s=throughput_s,
        server_cpu=server_cpu,
        server_us_per_delivery=server_us,
        client_cpu=client_cpu_s / wall_s,
        other_cpu=other_cpu,
    )


async def _close_all(connections: list[ClientConnection]) -> None:
    async def close(ws: ClientConnection) -> None:
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await ws.close()
        except TimeoutError:
            ws.transport.abort()

    await asyncio.gather(*(close(ws) for ws in connections), return_exceptions=True)


# --------------------------------------------------------------------------- the whole run


def _median(values: Sequence[float | None], digits: int) -> float | None:
    """The median of the rounds that measured the figure; None when none did."""
    known = [v for v in values if v is not None]
    return median(known, digits) if known else None


def summarise(rounds: Sequence[RoundResult]) -> dict[str, Any]:
    """Median of the rounds for each figure; lost packets summed."""
    return {
        "packets_per_s": _median([r.packets_per_s for r in rounds], 1),
        "p50_ms": _median([r.p50_ms for r in rounds], 2),
        "p99_ms": _median([r.p99_ms for r in rounds], 2),
        "max_ms": _median([r.max_ms for r in rounds], 2),
        "paced_server_us": _median([r.paced_server_us for r in rounds], 2),
        "lost": sum(r.lost for r in rounds),
        "server_cpu": _median([r.server_cpu for r in rounds], 2),
        "server_us_per_delivery": _median([r.server_us_per_delivery for r in rounds], 2),
        "client_cpu": _median([r.client_cpu for r in rounds], 2),
        "other_cpu": _median([r.other_cpu for r in rounds], 2),
    }


def _rounded(r: RoundResult) -> dict[str, Any]:
    out = asdict(r)
    for key, value in out.items():
        if isinstance(value, float):
            out[key] = round(value, 1 if key == "packets_per_s" else 3)
    return out


async def bench(settings: BenchSettings, deliveries_ns: list[int] | None = None) -> dict[str, Any]:
    """Run every round; return the report (see the module docstring). ``deliveries_ns``, if
    given, gets every delivery latency of pttd's latency phases (ns), for a plot."""
    began = time.perf_counter()
    load_before = load_average()
    results: dict[str, list[RoundResult]] = {"baseline": [], "pttd": []}
    rounds: list[dict[str, Any]] = []
    plan = CpuPlan.choose(settings.pin_cpus)
    with (
        tempfile.TemporaryDirectory(prefix="pttd-bench-") as tmp,
        pinned(plan.clients if plan is not None else None),
    ):
        workdir = Path(tmp)
        max_talk_time = 3600.0  # no server-side time-out in the middle of a long run
        pttd_server = Pttd.prepare(workdir / "registry.db", settings.listeners + 1, max_talk_time)
        contenders: list[Contender] = [Baseline(), pttd_server]
        for i in range(settings.rounds):
            this_round: dict[str, Any] = {"round": i + 1}
            for contender in contenders:
                result = await run_round(
                    contender,
                    settings,
                    workdir,
                    plan,
                    deliveries_ns if contender is pttd_server else None,
                )
                results[contender.name].append(result)
                this_round[contender.name] = _rounded(result)
                log.info(
                    "round %d/%d %-8s %9.0f deliveries/s  p50 %6.2f ms  p99 %6.2f ms  lost %d",
                    i + 1,
                    settings.rounds,
                    contender.name,
                    result.packets_per_s,
                    result.p50_ms,
                    result.p99_ms,
                    result.lost,
                )
            rounds.append(this_round)
    pttd_summary = summarise(results["pttd"])
    baseline_summary = summarise(results["baseline"])
    ratio = pttd_summary["packets_per_s"] / baseline_summary["packets_per_s"]
    return {
        "listeners": settings.listeners,
        "pttd": pttd_summary,
        "baseline": baseline_summary,
        "ratio_packets_per_s": round(ratio, 3),
        "targets": {"p99_ms": TARGET_P99_MS, "ratio": TARGET_RATIO},
        "targets_met": {
            "p99_ms": pttd_summary["p99_ms"] < TARGET_P99_MS,
            "ratio": ratio >= TARGET_RATIO,
        },
        "settings": {
            **asdict(settings),
            "statistic": "median of rounds",
            "cpu_pinning": plan.describe() if plan is not None else None,
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "python": platform.python_version(),
            "websockets": importlib.metadata.version("websockets"),
            "pttd": pttd.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "rounds": rounds,
        "elapsed_s": round(time.perf_counter() - began, 1),
    }


# --------------------------------------------------------------------------- output, CLI


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_report(report: dict[str, Any]) -> str:
    """The human table: both servers, the ratio, the targets with PASS/FAIL."""
    s = report["settings"]
    lines = [
        f"pttd bench server: 1 talker -> {report['listeners']} listeners in one room, "
        f"{s['payload_bytes']}-byte packets, loopback, median of {s['rounds']} round(s)",
        f"latency: {s['latency_packets']} packets, one every {s['packet_ms']} ms; "
        f"throughput: {s['throughput_packets']} packets back to back",
        "",
        f"{'':<10}{'latency phase':^33}|{'throughput phase':^50}",
        f"{'server':<10}{'p50 ms':>9}{'p99 ms':>9}{'server µs':>15}|{'deliveries/s':>13}"
        f"{'server CPU':>11}{'client CPU':>11}{'other CPU':>10}{'lost':>6}",
    ]
    for name in ("baseline", "pttd"):
        r = report[name]
        lines.append(
            f"{name:<10}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{_num(r['paced_server_us'], '.1f'):>15}|{r['packets_per_s']:>13,.0f}"
            f"{_pct(r['server_cpu']):>11}{_pct(r['client_cpu']):>11}{_pct(r['other_cpu']):>10}"
            f"{r['lost']:>6}"
        )
    met = report["targets_met"]
    targets = report["targets"]

    lines += [
        "",
        f"pttd/baseline deliveries/s  {report['ratio_packets_per_s']:>6.2f}"
        f"    target >= {targets['ratio']:.2f}    {mark(met['ratio'])}",
        f"pttd p99 latency            {report['pttd']['p99_ms']:>6.2f} ms"
        f" target <  {targets['p99_ms']:.0f} ms   {mark(met['p99_ms'])}",
        "",
        "server µs: the server's CPU time per delivered packet while paced (like for like).",
        "CPU: share of one core. A client CPU near 100% caps both servers' throughput; other",
        f"CPU is the rest of the machine (noise). Load average {s['load_average_before']} "
        f"before, {s['load_average_after']} after; took {report['elapsed_s']:.0f} s.",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listeners",
        type=positive_int,
        default=LISTENERS,
        metavar="N",
        help="default: %(default)s",
    )
    parser.add_argument(
        "--packets",
        type=positive_int,
        metavar="K",
        help=f"throughput packets per round (default {THROUGHPUT_PACKETS[0]}, "
        f"quick {THROUGHPUT_PACKETS[1]})",
    )
    parser.add_argument(
        "--latency-packets",
        type=positive_int,
        metavar="P",
        help=f"paced latency packets per round (default {LATENCY_PACKETS[0]}, "
        f"quick {LATENCY_PACKETS[1]})",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        metavar="R",
        help=f"alternate rounds per server (default {ROUNDS[0]}, quick {ROUNDS[1]})",
    )
    add_output_arguments(parser, "fewer packets, one round")
    parser.add_argument(
        "--no-pin",
        dest="pin_cpus",
        action="store_false",
        help="let the OS place the server and the clients (default: separate CPUs)",
    )


def settings_from(args: argparse.Namespace) -> BenchSettings:
    pick = 1 if args.quick else 0
    return BenchSettings(
        listeners=args.listeners,
        latency_packets=args.latency_packets or LATENCY_PACKETS[pick],
        throughput_packets=args.packets or THROUGHPUT_PACKETS[pick],
        rounds=args.rounds or ROUNDS[pick],
        quick=args.quick,
        pin_cpus=args.pin_cpus,
    )


def run(args: argparse.Namespace) -> int:
    start_logging(args.quiet)
    settings = settings_from(args)
    log.info(
        "%d listeners, %d latency + %d throughput packets, %d round(s) per server",
        settings.listeners,
        settings.latency_packets,
        settings.throughput_packets,
        settings.rounds,
    )
    report = asyncio.run(bench(settings))
    emit(report, args, format_report)
    return finish("pttd bench server", report["targets_met"], args.report_only)

"""The installer console's interpreter, sans-I/O: a line in, a reply out.

:meth:`Console.handle_line` takes one line typed at the console and the time (monotonic), and
returns a :class:`Reply`: text to print, and sometimes an *effect* for the transport to carry out
(:data:`Effect`). Every change the console makes is such an effect — pairing, unpairing, the
audio test, the factory reset, selecting a room, ``config set`` and ``unset``, the volume, saving
or clearing the PIN — and so is the slow part of checking or setting a PIN (scrypt), which the
transport's back-end runs in a worker thread. The transport hands the outcome back to
:meth:`Console.finish`, which words the result and may return the next effect (a PIN hashed is
then saved). The interpreter reads the device through the small, read-only :class:`DeviceView`
(a :class:`~pttd.radio.status.DeviceStatus` snapshot, the config, the saved values, the log);
nothing here sleeps, reads a clock, opens a file or a socket, or changes the device.

Secrets: a pairing code or PIN is never put in a reply (nor in an effect's ``repr``); every
reply also passes through :func:`pttd.redact.redact` and loses control characters, so that
nothing from the server or a file can reveal a token or drive the installer's terminal.

The installer PIN (optional) guards every command that changes something. With a PIN set the
console starts locked; ``pin unlock`` opens it until ``pin lock``, ``exit``, a new session (the
cable re-plugged) or :data:`IDLE_LOCK_S` without a line. Wrong PINs in a row make the next try
wait 1 s, 2 s, 4 s … (the reply says how long; nothing sleeps).

A pending question (factory-reset's ``type 'yes'``, ``pin set``'s PINs, the pairing code) belongs
to the session that asked it: locking, a new session, or :data:`IDLE_LOCK_S` without a line drop
it. The line that answers a question dropped for idleness is ignored, never run as a command; so
is any line the terminal echoed as stars (``secret``) with no question left to take it. After
``pin unlock`` the next line is always taken as the PIN, back-off or not, and a wrong PIN asks
again (an empty line or Ctrl-C gives up): a PIN is never run as a command, echoed or repeated. An
unknown command is not repeated either: it may be a secret typed at the wrong prompt.
"""

from __future__ import annotations

import io
import json
import math
import shlex
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol, TypeAlias

import segno

from pttd import __version__
from pttd.errors import ConfigError, PairingFailed, StoreError
from pttd.radio.config import (
    Config,
    KeyInfo,
    apply_overrides,
    format_value,
    get_value,
    normal_address,
    parse_value,
    settable_keys,
    split_list,
)
from pttd.radio.console.pin import SCRYPT_N, pin_problem, retry_delay
from pttd.radio.status import DeviceStatus, PinRecord
from pttd.redact import redact

IDLE_LOCK_S: Final = 15 * 60.0
LOG_DEFAULT: Final = 20
LOG_MAX: Final = 500
AUDIO_TEST_S: Final = 3.0
AUDIO_TEST_MAX_S: Final = 30.0
MAX_CODE: Final = 64
MASK: Final = "****"
METER_FLOOR_DB: Final = -60.0


class DeviceView(Protocol):
    """What the interpreter reads of the device (the daemon's back-end, or a test's fake). Reads
    only: every change goes out as an :data:`Effect`."""

    def status(self) -> DeviceStatus: ...

    def audio_devices(self) -> Sequence[str]:
        """Names of the audio devices, for ``status`` and ``audio``."""
        ...

    def config(self) -> Config:
        """The configuration the daemon runs with (the file, with saved values laid over)."""
        ...

    def saved_values(self) -> Mapping[str, Any]:
        """Values saved by ``config set`` (dotted keys), applied at the next start."""
        ...

    def log_lines(self, count: int) -> list[str]:
        """The last ``count`` log lines, redacted."""
        ...


# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class PairRequest:
    """Pair with the server, store the credential, wait for the logon → :class:`PairDone`."""

    server_url: str
    code: str = field(repr=False)
    device_name: str
    authority: str | None = None  # the room key authority's public key, from the pairing link


@dataclass(frozen=True, slots=True)
class UnpairRequest:
    """Tell the server (if online), wipe the credential → :class:`UnpairDone`."""


@dataclass(frozen=True, slots=True)
class AudioTestRequest:
    """A tone and the microphone measured for ``seconds`` → :class:`AudioTestDone`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class FactoryResetRequest:
    """Unpair, wipe the credential, settings and PIN, the volume back to the config's →
    :class:`ResetDone`."""


@dataclass(frozen=True, slots=True)
class SelectRoom:
    """Ask the state machine for room ``name`` → :class:`Done` (the status tells if it took)."""

    name: str


@dataclass(frozen=True, slots=True)
class SaveValue:
    """``config set``: save ``key = value`` for the next start → :class:`Done`."""

    key: str
    value: Any = field(repr=False)  # a secret key's value must not reach a log


@dataclass(frozen=True, slots=True)
class BtScan:
    """``bt scan``: the BLE accessories advertising nearby → :class:`BtFound`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class BtPair:
    """``bt pair``: bond with an accessory that needs it (BlueZ pairs, and trusts it) →
    :class:`Done`."""

    address: str


@dataclass(frozen=True, slots=True)
class BtChange:
    """``bt add`` / ``bt forget``: save ``bluetooth.buttons`` as ``buttons`` and start (or
    stop) the accessory's input at once → :class:`Done`."""

    address: str
    add: bool
    buttons: str


@dataclass(frozen=True, slots=True)
class RemoveValue:
    """``config unset``: forget the saved value of ``key`` → :class:`Done`."""

    key: str


@dataclass(frozen=True, slots=True)
class SetVolume:
    """Apply the volume now and save it (:meth:`pttd.radio.daemon.Device.set_volume`) →
    :class:`Done`."""

    volume: int


@dataclass(frozen=True, slots=True)
class HashPin:
    """Hash a new PIN (scrypt: in a worker thread) → :class:`PinHashed`."""

    pin: str = field(repr=False)
    n: int = SCRYPT_N


@dataclass(frozen=True, slots=True)
class CheckPin:
    """Check ``pin`` against ``record`` (scrypt: in a worker thread) → :class:`PinChecked`."""

    pin: str = field(repr=False)
    record: PinRecord


@dataclass(frozen=True, slots=True)
class SavePin:
    """Save the PIN record through the store → :class:`Done`. ``new``: a PIN just set (the reply
    says whether it was saved); otherwise the counts of wrong tries (a failure is only logged:
    they stay in memory)."""

    record: PinRecord
    new: bool


@dataclass(frozen=True, slots=True)
class ClearPin:
    """Remove the PIN record → :class:`Done`."""


Effect: TypeAlias = (
    PairRequest
    | UnpairRequest
    | AudioTestRequest
    | FactoryResetRequest
    | SelectRoom
    | SaveValue
    | RemoveValue
    | SetVolume
    | HashPin
    | CheckPin
    | SavePin
    | ClearPin
    | BtScan
    | BtChange
    | BtPair
)


@dataclass(frozen=True, slots=True)
class PairDone:
    server_url: str
    device_name: str  # as the server named it (it may add "-2")
    rooms: tuple[str, ...]
    online: bool
    room: str | None = None
    fingerprint: str | None = None  # of the identity key made at this pairing


@dataclass(frozen=True, slots=True)
class UnpairDone:
    had_credential: bool
    told_server: bool


@dataclass(frozen=True, slots=True)
class AudioTestDone:
    ran: bool
    seconds: float = 0.0
    frames: int = 0
    peak_dbfs: float = -math.inf
    refused: str = ""


@dataclass(frozen=True, slots=True)
class ResetDone:
    told_server: bool


@dataclass(frozen=True, slots=True)
class PinHashed:
    record: PinRecord


@dataclass(frozen=True, slots=True)
class PinChecked:
    matches: bool


@dataclass(frozen=True, slots=True)
class Done:
    """An effect with nothing to report but that it was carried out."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    """An effect stopped before it finished (Ctrl-C, or the console closing)."""


@dataclass(frozen=True, slots=True)
class BtSeen:
    address: str
    name: str
    rssi: int | None
    ptt: bool  # advertises a PTT service, or its name says PTT


@dataclass(frozen=True, slots=True)
class BtFound:
    seen: tuple[BtSeen, ...]


Outcome: TypeAlias = (
    BtFound
    | PairDone
    | UnpairDone
    | AudioTestDone
    | ResetDone
    | PinHashed
    | PinChecked
    | Done
    | Cancelled
    | BaseException
)


@dataclass(frozen=True, slots=True)
class Reply:
    text: str = ""
    effect: Effect | None = None


# --------------------------------------------------------------------------- helpers


def clean(text: str) -> str:
    """``text`` fit for the installer's terminal: secrets redacted, control and format
    characters (escape sequences, bidi overrides) replaced, line ends kept."""
    text = redact(text).replace("\r\n", "\n").replace("\t", " ")
    return "".join(
        c if c == "\n" or unicodedata.category(c) not in ("Cc", "Cf") else "?" for c in text
    )


def meter_line(peak_dbfs: float, width: int = 30) -> str:
    """A level meter for the audio test: ``mic [#########.....]  -23.5 dBFS``."""
    db = peak_dbfs if math.isfinite(peak_dbfs) else METER_FLOOR_DB
    db = max(METER_FLOOR_DB, min(0.0, db))
    filled = round((db - METER_FLOOR_DB) / -METER_FLOOR_DB * width)
    return f"mic [{'#' * filled}{'.' * (width - filled)}] {db:6.1f} dBFS"


class PairingLink(NamedTuple):
    server: str | None
    code: str
    authority: str | None = None  # the room key authority's public key (end-to-end encryption)


def parse_pairing_link(link: str) -> PairingLink:
    """The server URL (or None), code and key authority (or None) of
    ``pttd://pair?server=…&code=…&authority=…``; ValueError (naming no secret) when it is not
    such a link."""
    parts = urllib.parse.urlsplit(link.strip())
    target = (parts.netloc or parts.path.strip("/")).lower()
    if parts.scheme.lower() != "pttd" or target != "pair":
        raise ValueError("not a pairing link (pttd://pair?server=...&code=...)")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    codes, servers = query.get("code", []), query.get("server", [])
    if len(codes) != 1 or not codes[0].strip():
        raise ValueError("the pairing link carries no code")
    if len(servers) > 1:
        raise ValueError("the pairing link names more than one server")
    authorities = query.get("authority", [])
    if len(authorities) > 1 or (authorities and not authorities[0].strip()):
        raise ValueError("the pairing link's key authority is not one key")
    return PairingLink(
        (servers[0].strip() or None) if servers else None,
        codes[0].strip(),
        authorities[0].strip() if authorities else None,
    )


def _failure_words(outcome: object) -> str:
    """An exception in words for the console: its message, else its kind (a time-out has no
    message), and no bus or no BlueZ said as such."""
    text = str(outcome)
    if isinstance(outcome, FileNotFoundError) or "ServiceUnknown" in text or "org.bluez" in text:
        return f"BlueZ is not reachable on the system bus ({text or type(outcome).__name__})"
    if isinstance(outcome, TimeoutError):
        return "no answer in time (wake the accessory: press its button)"
    return text or type(outcome).__name__


def qr_text(text: str) -> str:
    """``text`` as a QR code in terminal characters (two rows per line)."""
    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True)
    return out.getvalue().rstrip("\n")


def server_problem(url: str) -> str | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return f"{url!r} is not a server address (ws://HOST:PORT or wss://HOST:PORT)"
    return None


def _failure(outcome: Outcome) -> str:
    """Why an effect did not do what it should: a store error's own words (they name the file),
    ``cancelled`` (Ctrl-C), or the exception's type and text."""
    if isinstance(outcome, StoreError):
        return str(outcome)
    if isinstance(outcome, Cancelled):
        return "cancelled"
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {outcome}"
    return f"unexpected {type(outcome).__name__}"


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    text = f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{days}d {text}" if days else text


def _yes(value: object) -> str:
    return "yes" if value else "no"


def _shown(info: KeyInfo, value: Any) -> str:
    if info.secret and value not in (None, ""):
        return MASK
    return format_value(value)


@dataclass(slots=True)
class _Question:
    prompt: str
    secret: bool
    answer: Callable[[str, float], Reply]


@dataclass(frozen=True, slots=True)
class _Command:
    usage: str
    summary: str
    details: str
    run: Callable[[Console, list[str], float], Reply]

    def help(self) -> str:
        details = f"\n{self.details}" if self.details else ""
        return f"usage: {self.usage}\n{self.summary}{details}"


# --------------------------------------------------------------------------- the console


class Console:
    """One installer console. Feed it lines; print what it returns, then :meth:`prompt`."""

    def __init__(
        self,
        view: DeviceView,
        *,
        pin: PinRecord | None = None,
        now: float = 0.0,
        scrypt_n: int = SCRYPT_N,
    ) -> None:
        """``pin``: the PIN record the store holds (None: no PIN set)."""
        self.view = view
        self.scrypt_n = scrypt_n
        self._pin = pin
        self._next_try = now + (retry_delay(pin.failures) if pin else 0.0)
        self._unlocked = False
        self._question: _Question | None = None
        self._dropped = False  # a question dropped for idleness: the next line answered it
        self._session = True
        self._last_seen = now

    # -- the transport's calls ---------------------------------------------------------------

    def start_session(self, now: float) -> str:
        """A terminal came (the port opened): lock, forget any question, greet."""
        self._lock()
        self._dropped = False
        self._session = True
        self._last_seen = now
        return clean(self._banner())

    def handle_line(self, line: str, now: float, *, secret: bool = False) -> Reply:
        """``secret``: the terminal echoed the line as stars (it answers a secret question, and
        is never run as a command)."""
        self._expire(now)
        self._last_seen = now
        dropped, self._dropped = self._dropped, False
        if self._question is not None:
            question, self._question = self._question, None
            reply = question.answer(line, now)
        elif dropped:
            reply = Reply(
                f"no answer for {IDLE_LOCK_S / 60:g} minutes: the question was dropped and "
                "nothing done; that line was ignored"
            )
        elif secret:
            reply = Reply("that line was typed as a secret, with no question to take it: ignored")
        elif not self._session:
            self._session = True
            reply = Reply(self._banner())
        else:
            reply = self._command(line, now)
        return Reply(clean(reply.text), reply.effect)

    def cancel(self, now: float) -> str:
        """Ctrl-C: drop a pending question."""
        self._expire(now)  # a Ctrl-C after the idle time locks, as a line does
        self._last_seen = now
        self._dropped = False
        if self._question is None:
            return ""
        self._question = None
        return "cancelled"

    def finish(self, effect: Effect, outcome: Outcome, now: float) -> Reply:
        """Words for how an effect went (``outcome`` is its result or the exception), and the
        next effect if there is one."""
        self._last_seen = now
        reply: Reply
        match effect:
            case PairRequest():
                reply = Reply(self._paired(effect, outcome))
            case UnpairRequest():
                reply = Reply(self._unpaired(outcome))
            case AudioTestRequest():
                reply = Reply(self._audio_tested(outcome))
            case FactoryResetRequest():
                reply = Reply(self._reset(outcome))
            case SelectRoom():
                reply = Reply(self._room_selected(effect, outcome))
            case SaveValue():
                reply = Reply(self._value_saved(effect, outcome))
            case RemoveValue():
                reply = Reply(self._value_removed(effect, outcome))
            case SetVolume():
                reply = Reply(self._volume_set(effect, outcome))
            case HashPin():
                reply = self._pin_hashed(outcome)
            case CheckPin():
                reply = self._pin_checked(effect, outcome, now)
            case SavePin():
                reply = Reply(self._pin_saved(effect, outcome, now))
            case ClearPin():
                reply = Reply(self._pin_cleared(outcome))
            case BtScan():
                reply = Reply(self._bt_scanned(outcome))
            case BtChange():
                reply = Reply(self._bt_changed(effect, outcome))
            case BtPair():
                reply = Reply(
                    f"{effect.address} paired and trusted"
                    if isinstance(outcome, Done)
                    else f"pairing with {effect.address} failed: {_failure_words(outcome)}"
                )
        return Reply(clean(reply.text), reply.effect)

    def prompt(self, now: float) -> str:
        """What to show before the next line: a question, or the state (``pttd[online ops]> ``);
        empty after ``exit``."""
        self._expire(now)
        self._dropped = False  # a new prompt is shown: the next line answers it
        if self._question is not None:
            return clean(self._question.prompt)
        if not self._session:
            return ""
        status = self.view.status()
        state = status.link
        if state == "online" and status.room:
            state += f" {status.room}"
        if self._pin is not None and not self._unlocked:
            state += " locked"
        return clean(f"pttd[{state}]> ")

    @property
    def secret_input(self) -> bool:
        """The next line answers a secret question (echo ``*``)."""
        return self._question is not None and self._question.secret

    def locked(self, now: float) -> bool:
        self._expire(now)
        return self._pin is not None and not self._unlocked

    # -- plumbing ----------------------------------------------------------------------------

    def _banner(self) -> str:
        name = self.view.status().device
        return f"pttd {__version__} installer console{f' on {name}' if name else ''}: type 'help'"

    def _lock(self) -> None:
        """Lock, and drop the pending question: it was asked of whoever had the console open."""
        self._unlocked = False
        self._question = None

    def _expire(self, now: float) -> None:
        """:data:`IDLE_LOCK_S` without a line: lock, and drop a question (with a PIN or without:
        a factory reset confirmed by whoever walks by a quarter of an hour later is no
        confirmation)."""
        if now - self._last_seen > IDLE_LOCK_S:
            if self._question is not None:
                self._dropped = True
            self._lock()

    def _ask(self, prompt: str, answer: Callable[[str, float], Reply], *, secret: bool) -> None:
        """Take the next line as the answer (until a lock drops the question)."""
        self._question = _Question(prompt, secret, answer)

    def _guard(self, now: float) -> Reply | None:
        if self.locked(now):
            return Reply("locked: type 'pin unlock' first")
        return None

    def _command(self, line: str, now: float) -> Reply:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return Reply(f"cannot read that line: {exc}")
        if not words:
            return Reply()
        name, args = words[0].lower(), words[1:]
        command = COMMANDS.get(ALIASES.get(name, name))
        if command is None:  # not repeated: it may be a PIN or a code typed at the wrong prompt
            return Reply("unknown command: type 'help'")
        if args[:1] in (["-h"], ["--help"]):
            return Reply(command.help())
        return command.run(self, args, now)

    # -- commands ----------------------------------------------------------------------------

    def _cmd_help(self, args: list[str], now: float) -> Reply:
        if args:
            command = COMMANDS.get(ALIASES.get(args[0].lower(), args[0].lower()))
            if command is None:
                return Reply(f"no command {args[0][:24]!r}: type 'help'")
            return Reply(command.help())
        width = 24  # a longer usage gets a line of its own: the list fits 80 columns
        lines = [
            f"  {c.usage:<{width}}  {c.summary}"
            if len(c.usage) <= width
            else f"  {c.usage}\n  {'':<{width}}  {c.summary}"
            for c in COMMANDS.values()
        ]
        locked = " (locked: 'pin unlock' first)" if self.locked(now) else ""
        return Reply(
            "commands (help COMMAND for more):\n"
            + "\n".join(lines)
            + f"\ncommands that change something need the PIN when one is set{locked}"
        )

    def _lock_status(self, now: float) -> dict[str, Any]:
        pin = self._pin
        return {
            "pin_set": pin is not None,
            "locked": self.locked(now),
            "wrong_pins": pin.wrong_total if pin else 0,
            "wrong_in_a_row": pin.failures if pin else 0,
        }

    def _cmd_status(self, args: list[str], now: float) -> Reply:
        if args not in ([], ["--json"]):
            return Reply("usage: status [--json]")
        s = self.view.status()
        devices = list(self.view.audio_devices())
        lock = self._lock_status(now)
        if args:
            data = s.to_json() | {"audio_devices": devices, "version": __version__, "lock": lock}
            return Reply(json.dumps(data, sort_keys=True, separators=(",", ":"), default=str))
        lock_text = (
            "no PIN set"
            if not lock["pin_set"]
            else f"PIN set, {'locked' if lock['locked'] else 'unlocked'}"
            + (
                f", {lock['wrong_pins']} wrong PIN(s) ({lock['wrong_in_a_row']} in a row)"
                if lock["wrong_pins"]
                else ""
            )
        )
        rows = [
            ("device", s.device or "?"),
            ("paired", _yes(s.paired)),
            ("server", s.server or "none"),
            ("link", s.link),
            ("rooms", ", ".join(s.rooms) or "none yet"),
            ("room", s.room or "none"),
            ("transmitting", _yes(s.transmitting)),
            ("microphone", "open" if s.mic_open else "closed"),
            ("receiving", _yes(s.receiving)),
            ("last error", s.last_error or "none"),
            ("fingerprint", s.fingerprint or "none (pair to make an identity key)"),
            *((f"key {room}", state) for room, state in s.room_keys),
            *((name, state) for name, state in s.accessories),
            ("audio", ", ".join(devices) or "none found"),
            ("volume", s.volume),
            ("version", __version__),
            ("uptime", _duration(s.uptime_s)),
            ("lock", lock_text),
        ]
        return Reply("\n".join(f"{k + ':':<14}{v}" for k, v in rows))

    def _cmd_keys(self, args: list[str], now: float) -> Reply:
        """The identity key's fingerprint (digits and QR code) and each encrypted room's key
        state: what the installer reads to the admin, who approves this fingerprint. Nothing
        secret: a fingerprint is a hash of the public key."""
        if args:
            return Reply(COMMANDS["keys"].help())
        s = self.view.status()
        if s.fingerprint is None:
            return Reply("no identity key: pair this device first (encrypted rooms need one)")
        lines = [
            f"fingerprint: {s.fingerprint}",
            "Read it to the server's admin, who approves this device for encrypted rooms with",
            "'pttd keys approve NAME FINGERPRINT' (or scan the QR code below).",
            qr_text(s.fingerprint),
        ]
        if s.room_keys:
            lines += [f"{room}: {state}" for room, state in s.room_keys]
        else:
            lines.append("no encrypted room")
        return Reply("\n".join(lines))

    def _cmd_bt(self, args: list[str], now: float) -> Reply:
        """BLE PTT accessories: scan for them, add one (bound by its address, started at once,
        saved for the next start), forget one, list them with their state."""
        if not args or args[0] not in ("scan", "add", "forget", "list", "pair"):
            return Reply(COMMANDS["bt"].help())
        action, rest = args[0], args[1:]
        try:  # the file may spell them in lower case or with dashes: as the inputs name them
            buttons = [normal_address(a) for a in split_list(self._buttons())]
        except ValueError:
            buttons = split_list(self._buttons())
        if action == "list":
            if rest:
                return Reply(COMMANDS["bt"].help())
            states = dict(self.view.status().accessories)
            if not buttons and not states:
                return Reply(
                    "no Bluetooth accessory: 'bt scan' finds them, 'bt add ADDRESS' adds one"
                )
            rows = [f"ble:{a}" for a in buttons]
            rows += [n for n in states if n not in rows]
            return Reply(
                "\n".join(f"{n:22} {states.get(n, 'not started (restart)')}" for n in rows)
            )
        if action == "scan":
            seconds = 5.0
            if len(rest) > 1:
                return Reply(COMMANDS["bt"].help())
            if rest:
                try:
                    seconds = float(rest[0])
                except ValueError:
                    return Reply(f"not a number of seconds: {rest[0]!r}")
                if not 1 <= seconds <= 60:
                    return Reply("scan for 1 to 60 seconds")
            return Reply(f"scanning for {seconds:g} s ...", BtScan(seconds))
        if (refused := self._guard(now)) is not None:
            return refused
        if len(rest) != 1:
            return Reply(COMMANDS["bt"].help())
        try:
            address = normal_address(rest[0])
        except ValueError as exc:
            return Reply(str(exc))
        if action == "pair":
            return Reply(f"pairing with {address} (wake it: press its button) ...", BtPair(address))
        if action == "add":
            if address in buttons or f"ble:{address}" in dict(self.view.status().accessories):
                return Reply(f"{address} is already added ('bt list')")
            new = ", ".join([*buttons, address])
            return Reply(f"adding {address} ...", BtChange(address, True, new))
        if address not in buttons:
            return Reply(f"{address} is not added ('bt list')")
        new = ", ".join(b for b in buttons if b != address)
        return Reply(f"forgetting {address} ...", BtChange(address, False, new))

    def _buttons(self) -> str:
        saved = self.view.saved_values().get("bluetooth.buttons")
        return saved if isinstance(saved, str) else self.view.config().bluetooth.buttons

    def _bt_scanned(self, outcome: Outcome) -> str:
        if not isinstance(outcome, BtFound):
            return f"scan failed: {_failure_words(outcome)}"
        if not outcome.seen:
            return "nothing found (wake the accessory: press its button, near the device)"
        lines = []
        for n in outcome.seen:
            rssi = f"{n.rssi} dBm" if n.rssi is not None else "?"
            mark = "  PTT" if n.ptt else ""
            lines.append(f"{n.address}  {rssi:>8}  {n.name or '(no name)'}{mark}")
        return "\n".join(lines) + "\n'bt add ADDRESS' binds this device to one"

    def _bt_changed(self, effect: BtChange, outcome: Outcome) -> str:
        if isinstance(outcome, StoreError):
            return f"not saved: {outcome}"
        if not isinstance(outcome, Done):
            return f"failed: {outcome}"
        if effect.add:
            return f"{effect.address} added and saved: connecting (see 'bt list')"
        return f"{effect.address} forgotten"

    def _cmd_version(self, args: list[str], now: float) -> Reply:
        return Reply(f"pttd {__version__}")

    def _cmd_exit(self, args: list[str], now: float) -> Reply:
        self._lock()
        self._session = False
        return Reply("bye (press Enter to start again)")

    # pairing ---------------------------------------------------------------------------------

    def _cmd_pair(self, args: list[str], now: float) -> Reply:
        if (refused := self._guard(now)) is not None:
            return refused
        configured = self.view.config().server.url
        server: str | None = None
        code: str | None = None
        authority: str | None = None
        if len(args) > 2:
            return Reply(COMMANDS["pair"].help())
        if len(args) == 2:
            server, code = args
        elif len(args) == 1:
            word = args[0]
            if word.lower().startswith("pttd:"):
                try:
                    server, code, authority = parse_pairing_link(word)
                except ValueError as exc:
                    return Reply(str(exc))
            elif word.lower().startswith(("ws:", "wss:")):
                server = word
            else:
                code = word
        if server is None:
            if not configured:
                return Reply("no server address: type 'pair SERVER_URL CODE'")
            server = configured
        if (problem := server_problem(server)) is not None:
            return Reply(problem)
        status = self.view.status()
        if status.paired:
            return Reply(f"already paired with {status.server}: type 'unpair' first")
        if code is None:
            url = server

            def answer(text: str, now: float) -> Reply:
                return self._pair_with(url, text, authority)

            self._ask("pairing code: ", answer, secret=True)
            return Reply(f"pairing with {server}")
        return self._pair_with(server, code, authority)

    def _pair_with(self, server: str, code: str, authority: str | None) -> Reply:
        code = code.strip()
        if not code or len(code) > MAX_CODE or not code.isprintable():
            return Reply("that is not a pairing code (it looks like ABCD-EFGH-JKMN)")
        name = self.view.config().device.name
        return Reply(
            f"pairing with {server} as {name} ...", PairRequest(server, code, name, authority)
        )

    def _paired(self, effect: PairRequest, outcome: Outcome) -> str:
        if isinstance(outcome, PairDone):
            lines = [
                f"paired with {outcome.server_url} as {outcome.device_name}",
                f"rooms: {', '.join(outcome.rooms) or 'none'}",
                f"online in room {outcome.room}"
                if outcome.online and outcome.room
                else "online"
                if outcome.online
                else "credential saved; the link is still connecting (see 'status')",
            ]
            if outcome.fingerprint:
                lines += [
                    f"fingerprint: {outcome.fingerprint}",
                    "for encrypted rooms, read it to the server's admin to approve (see 'keys')",
                ]
            return "\n".join(lines)
        if isinstance(outcome, PairingFailed):
            why = str(outcome)
            if outcome.reason == "invalid code":
                return f"pairing failed: {why}. Check the code and type it again."
            if outcome.reason in ("expired code", "used code"):
                return f"pairing failed: {why}"
            if outcome.reason == "unreachable":
                return (
                    f"pairing failed: server unreachable at {effect.server_url} ({why}). "
                    "Check the address and the network."
                )
            if outcome.reason == "tls":
                return (
                    f"pairing failed: TLS error with {effect.server_url} ({why}). "
                    "Check the address, or trust the server's CA with "
                    "'config set server.ca_file PATH'."
                )
            return f"pairing failed: {why}"
        if isinstance(outcome, StoreError):
            return (
                f"paired, but the credential could not be saved: {outcome}. "
                "Fix the state directory, then pair again with a new code."
            )
        if isinstance(outcome, Cancelled):
            return "pairing cancelled (if the server took the code, ask for a new one)"
        if isinstance(outcome, TimeoutError):
            return "pairing failed: no answer in time"
        return f"pairing failed: {type(outcome).__name__}: {outcome}"

    def _cmd_unpair(self, args: list[str], now: float) -> Reply:
        if args:
            return Reply(COMMANDS["unpair"].help())
        if (refused := self._guard(now)) is not None:
            return refused
        return Reply("unpairing ...", UnpairRequest())

    def _unpaired(self, outcome: Outcome) -> str:
        if isinstance(outcome, UnpairDone):
            if not outcome.had_credential:
                return "not paired: nothing to wipe"
            if outcome.told_server:
                return "unpaired: the server was told, and the credential is wiped"
            return (
                "unpaired: the credential is wiped, but the server could not be told "
                "(offline): ask its admin to revoke this device"
            )
        if isinstance(outcome, StoreError):
            return f"unpair failed: {outcome}"
        if isinstance(outcome, Cancelled):
            return "unpair interrupted: see 'status'"
        return f"unpair failed: {type(outcome).__name__}: {outcome}"

    # rooms -----------------------------------------------------------------------------------

    def _cmd_rooms(self, args: list[str], now: float) -> Reply:
        s = self.view.status()
        if not s.rooms:
            return Reply(f"no rooms yet (link {s.link})")
        return Reply("\n".join(f"{'*' if r == s.room else ' '} {r}" for r in s.rooms))

    def _cmd_room(self, args: list[str], now: float) -> Reply:
        s = self.view.status()
        if not args:
            return Reply(f"room: {s.room or 'none'}")
        if len(args) > 1:
            return Reply(COMMANDS["room"].help())
        if (refused := self._guard(now)) is not None:
            return refused
        name = args[0]
        if not s.rooms:
            return Reply(f"no rooms yet (link {s.link})")
        if name not in s.rooms:
            return Reply(f"no room {name[:64]!r}: the rooms are {', '.join(s.rooms)}")
        if s.room == name:
            return Reply(f"already in room {name}")
        return Reply("", SelectRoom(name))

    def _room_selected(self, effect: SelectRoom, outcome: Outcome) -> str:
        if not isinstance(outcome, Done):
            return f"room {effect.name} not selected: {_failure(outcome)}"
        now_in = self.view.status().room
        if now_in != effect.name:
            return f"room {effect.name} not selected (still {now_in}): see 'status'"
        return f"room {effect.name} selected"

    # config ----------------------------------------------------------------------------------

    def _cmd_config(self, args: list[str], now: float) -> Reply:
        sub = args[0].lower() if args else "show"
        rest = args[1:]
        if sub == "show" and len(rest) <= 1:
            return Reply(self._config_show(rest[0].lower() if rest else ""))
        if sub == "get" and len(rest) == 1:
            return Reply(self._config_get(rest[0].lower()))
        if sub == "set" and len(rest) >= 2:
            return self._guard(now) or self._config_set(rest[0].lower(), " ".join(rest[1:]))
        if sub == "unset" and len(rest) == 1:
            return self._guard(now) or self._config_unset(rest[0].lower())
        return Reply(COMMANDS["config"].help())

    def _running(self, config: Config, key: str) -> Any:
        """The value in use: the volume is the mixer's (buttons change it), the rest config."""
        if key == "audio.volume":
            return self.view.status().volume
        return get_value(config, key)

    def _config_show(self, prefix: str) -> str:
        config, saved = self.view.config(), self.view.saved_values()
        lines = []
        for key, info in settable_keys().items():
            if prefix and not key.startswith(prefix):
                continue
            line = f"{key} = {_shown(info, self._running(config, key))}"
            if key in saved and saved[key] != get_value(config, key):
                line += f"  (saved: {_shown(info, saved[key])}, after a restart)"
            lines.append(line)
        return "\n".join(lines) or f"no key starts with {prefix[:64]!r}"

    def _config_get(self, key: str) -> str:
        info = settable_keys().get(key)
        if info is None:
            try:
                parse_value(key, "")  # words the unknown key, with near matches
            except ConfigError as exc:
                return str(exc)
            return f"{key[:64]}: unknown key"
        config, saved = self.view.config(), self.view.saved_values()
        value = get_value(config, key)
        lines = [f"{key} = {_shown(info, self._running(config, key))}"]
        if key in saved and saved[key] != value:
            lines.append(f"saved: {_shown(info, saved[key])} (after a restart)")
        lines.append(
            f"{info.doc + '; ' if info.doc else ''}{info.type_name}, "
            f"default {_shown(info, info.default)}"
        )
        return "\n".join(lines)

    def _config_set(self, key: str, text: str) -> Reply:
        try:
            value = parse_value(key, text)
            updated = apply_overrides(self.view.config(), {key: value})
        except ConfigError as exc:
            return Reply(f"not set: {exc}")
        value = get_value(updated, key)
        if key == "audio.volume":
            return Reply("", SetVolume(int(value)))
        return Reply("", SaveValue(key, value))

    def _volume_set(self, effect: SetVolume, outcome: Outcome) -> str:
        if isinstance(outcome, StoreError):
            return f"volume {effect.volume} applied, but not saved: {_failure(outcome)}"
        if not isinstance(outcome, Done):
            return f"volume not set: {_failure(outcome)}"
        return f"audio.volume = {effect.volume} (applied now, and saved)"

    def _value_saved(self, effect: SaveValue, outcome: Outcome) -> str:
        if not isinstance(outcome, Done):
            return f"not saved: {_failure(outcome)}"
        shown = _shown(settable_keys()[effect.key], effect.value)
        return f"{effect.key} = {shown} (saved; takes effect after a restart)"

    def _config_unset(self, key: str) -> Reply:
        if key not in self.view.saved_values():
            return Reply(f"{key[:64]}: no saved value (the config file's applies)")
        return Reply("", RemoveValue(key))

    def _value_removed(self, effect: RemoveValue, outcome: Outcome) -> str:
        if not isinstance(outcome, Done):
            return f"not saved: {_failure(outcome)}"
        return f"{effect.key}: saved value removed; the config file's applies after a restart"

    # audio -----------------------------------------------------------------------------------

    def _cmd_audio(self, args: list[str], now: float) -> Reply:
        if not args:
            devices = self.view.audio_devices()
            return Reply("audio devices:\n" + ("\n".join(f"  {d}" for d in devices) or "  none"))
        if args[0].lower() != "test" or len(args) > 2:
            return Reply(COMMANDS["audio"].help())
        seconds = AUDIO_TEST_S
        if len(args) == 2:
            try:
                seconds = float(args[1])
            except ValueError:
                seconds = math.nan
            if not 0.5 <= seconds <= AUDIO_TEST_MAX_S:
                return Reply(f"audio test: SECONDS from 0.5 to {AUDIO_TEST_MAX_S:g}")
        if (refused := self._guard(now)) is not None:
            return refused
        return Reply(
            f"audio test: a tone plays and the microphone is measured for {seconds:g} s "
            "(Ctrl-C stops it)",
            AudioTestRequest(seconds),
        )

    def _audio_tested(self, outcome: Outcome) -> str:
        if isinstance(outcome, AudioTestDone):
            if not outcome.ran:
                return f"audio test refused: {outcome.refused or 'the device is busy'}"
            peak = outcome.peak_dbfs
            verdict = (
                "no sound reached the microphone: check it and its cable"
                if not outcome.frames or peak < -50
                else "clipping: the microphone is too loud"
                if peak > -1
                else "the microphone works"
            )
            peak_text = f"{peak:.1f} dBFS" if math.isfinite(peak) else "silence"
            return (
                f"audio test done: {outcome.frames} frames in {outcome.seconds:.1f} s, "
                f"peak {peak_text}: {verdict}; microphone closed"
            )
        if isinstance(outcome, Cancelled):
            return "audio test stopped; microphone closed"
        return f"audio test failed: {outcome}; microphone closed"

    # log -------------------------------------------------------------------------------------

    def _cmd_log(self, args: list[str], now: float) -> Reply:
        count = LOG_DEFAULT
        if len(args) > 1:
            return Reply(COMMANDS["log"].help())
        if args:
            try:
                count = int(args[0])
            except ValueError:
                count = 0
            if not 1 <= count <= LOG_MAX:
                return Reply(f"log: N from 1 to {LOG_MAX}")
        lines = self.view.log_lines(count)
        return Reply("\n".join(lines) if lines else "no log lines yet")

    # PIN -------------------------------------------------------------------------------------

    def _lock_text(self, now: float) -> str:
        if self._pin is None:
            return "no PIN set"
        state = "locked" if self.locked(now) else "unlocked"
        return f"PIN set, {state}; {self._pin.wrong_total} wrong PIN(s)"

    def _cmd_pin(self, args: list[str], now: float) -> Reply:
        sub = args[0].lower() if len(args) == 1 else "" if not args else "?"
        if sub == "":
            return Reply(self._lock_text(now))
        if sub == "set":
            return self._pin_set(now)
        if sub == "lock":
            if self._pin is None:
                return Reply("no PIN set: 'pin set' first")
            self._lock()
            return Reply("locked")
        if sub == "unlock":
            return self._pin_unlock(now)
        if sub == "clear":
            if self._pin is None:
                return Reply("no PIN set")
            if (refused := self._guard(now)) is not None:
                return refused
            return Reply("", ClearPin())
        return Reply(COMMANDS["pin"].help())

    def _pin_cleared(self, outcome: Outcome) -> str:
        if not isinstance(outcome, Done):
            return f"PIN not removed: {_failure(outcome)}"
        self._pin = None
        return "PIN removed: every command works without it"

    def _pin_set(self, now: float) -> Reply:
        if self._pin is not None and (refused := self._guard(now)) is not None:
            return refused

        def first(pin: str, now: float) -> Reply:
            if (problem := pin_problem(pin)) is not None:
                return Reply(f"{problem}: PIN not changed")

            def second(again: str, now: float) -> Reply:
                if again != pin:
                    return Reply("the two PINs differ: PIN not changed")
                return Reply("", HashPin(pin, self.scrypt_n))

            self._ask("the new PIN again: ", second, secret=True)
            return Reply()

        self._ask("new PIN: ", first, secret=True)
        return Reply()

    def _pin_hashed(self, outcome: Outcome) -> Reply:
        if not isinstance(outcome, PinHashed):
            return Reply(f"PIN not changed: {_failure(outcome)}")
        return Reply("", SavePin(outcome.record, new=True))

    def _pin_saved(self, effect: SavePin, outcome: Outcome, now: float) -> str:
        if not effect.new:
            return ""  # the counts of wrong tries: kept in memory; the back-end logs a failure
        if not isinstance(outcome, Done):
            return f"PIN not saved: {_failure(outcome)}"
        self._pin = effect.record
        self._next_try = now
        self._unlocked = True
        return (
            "PIN set. The console locks on 'pin lock', 'exit', a reconnect, or "
            f"{IDLE_LOCK_S / 60:g} minutes idle; 'pin unlock' opens it."
        )

    def _pin_unlock(self, now: float) -> Reply:
        if self._pin is None:
            return Reply("no PIN set: nothing to unlock")
        if not self.locked(now):
            return Reply("already unlocked")
        self._ask_pin()  # during the back-off too: the PIN typed next is never a command
        if (wait := self._next_try - now) > 0:
            return Reply(f"wait {math.ceil(wait)} s before the next try")
        return Reply()

    def _ask_pin(self) -> None:
        """Ask for the PIN (echoed as stars); an empty line or Ctrl-C gives up."""

        def check(pin: str, now: float) -> Reply:
            if self._pin is None:
                return Reply("no PIN set")
            if not pin:
                return Reply("no PIN typed: still locked")
            if (wait := self._next_try - now) > 0:  # not checked, not counted: asked again
                self._ask_pin()
                return Reply(f"too soon, that PIN was not checked: wait {math.ceil(wait)} s")
            return Reply("", CheckPin(pin, self._pin))

        self._ask("PIN: ", check, secret=True)

    def _pin_checked(self, effect: CheckPin, outcome: Outcome, now: float) -> Reply:
        if not isinstance(outcome, PinChecked):  # not checked: not a try
            return Reply(f"PIN not checked: {_failure(outcome)}; still locked")
        record = effect.record
        if outcome.matches:
            self._unlocked = True
            if not record.failures:
                return Reply("unlocked")
            self._pin = record.right()
            return Reply("unlocked", SavePin(self._pin, new=False))
        self._pin = record.wrong()
        delay = retry_delay(self._pin.failures)
        self._next_try = now + delay
        self._ask_pin()  # the next line is a PIN again, typed after the wait or not
        return Reply(
            f"wrong PIN ({self._pin.failures} in a row): wait {delay:g} s before the next try",
            SavePin(self._pin, new=False),
        )

    # factory reset ---------------------------------------------------------------------------

    def _cmd_factory_reset(self, args: list[str], now: float) -> Reply:
        if args:
            return Reply(COMMANDS["factory-reset"].help())
        if (refused := self._guard(now)) is not None:
            return refused

        def confirm(answer: str, now: float) -> Reply:
            if answer.strip().lower() != "yes":
                return Reply("factory reset cancelled: nothing changed")
            return Reply("factory reset ...", FactoryResetRequest())

        self._ask("type 'yes' to wipe it all: ", confirm, secret=False)
        return Reply(
            "This wipes the pairing (telling the server if it can), the installer PIN, and the "
            "settings saved on this device (room, volume, config values)."
        )

    def _reset(self, outcome: Outcome) -> str:
        self._unlocked = False
        if isinstance(outcome, ResetDone):
            self._pin = None  # wiped with the rest; a failed reset leaves it (and the lock) be
            told = " (the server was told)" if outcome.told_server else ""
            return (
                f"factory reset done: unpaired{told}, PIN and saved settings wiped; "
                "the config file's settings apply after a restart"
            )
        return f"factory reset failed: {outcome}"


COMMANDS: Final[dict[str, _Command]] = {
    "status": _Command(
        "status [--json]",
        "pairing, link, rooms, errors, audio, uptime ...",
        "--json prints one line of JSON (paired, link, rooms, room, transmitting, mic_open ...).",
        Console._cmd_status,
    ),
    "pair": _Command(
        "pair [SERVER_URL] [CODE] | pair pttd://pair?...",
        "pair with a room server (a one-time code)",
        "SERVER_URL is ws://HOST:PORT or wss://HOST:PORT (default: server.url). Without CODE\n"
        "the code is asked for, and not shown as you type it. The link the server's QR code\n"
        "holds works too. Stores the credential, logs on and joins the rooms.",
        Console._cmd_pair,
    ),
    "unpair": _Command(
        "unpair",
        "give the pairing up (tells the server if online)",
        "",
        Console._cmd_unpair,
    ),
    "rooms": _Command("rooms", "list the rooms (* marks the selected one)", "", Console._cmd_rooms),
    "room": _Command("room [NAME]", "show or select the room to talk in", "", Console._cmd_room),
    "config": _Command(
        "config show [PREFIX] | get KEY | set KEY VALUE | unset KEY",
        "show or change settings (saved on the device)",
        "KEY is dotted: audio.volume, talk.mode, talk.timeout, server.url, device.name ...\n"
        "audio.volume applies at once; other keys after a restart. Secrets show masked.",
        Console._cmd_config,
    ),
    "audio": _Command(
        "audio [test [SECONDS]]",
        "audio devices; 'audio test': a tone and a mic meter",
        f"The test runs {AUDIO_TEST_S:g} s unless told; the transmit LED is lit while the\n"
        "microphone is open. Nothing is sent to the server. Ctrl-C stops it.",
        Console._cmd_audio,
    ),
    "log": _Command(
        "log [N]", f"the last N log lines (default {LOG_DEFAULT})", "", Console._cmd_log
    ),
    "bt": _Command(
        "bt scan [SECONDS] | bt add ADDRESS | bt forget ADDRESS | bt list | bt pair ADDRESS",
        "Bluetooth LE PTT buttons and hand microphones",
        "scan lists nearby accessories (name, address, signal), PTT-looking ones first;\n"
        "add binds this device to one by its address (the PTT-Z convention: service ffe0,\n"
        'characteristic ffe1, 01 pressed, 00 released; [[ptt]] kind = "ble" in the config\n'
        "file for others), starts it at once and saves it; forget undoes it; list shows each\n"
        "with its connection and battery. pair bonds with an accessory that needs it (most\n"
        "PTT buttons do not): before add, while it is awake.",
        Console._cmd_bt,
    ),
    "keys": _Command(
        "keys",
        "this device's key fingerprint (and QR code), the encrypted rooms' keys",
        "The admin approves the device for encrypted rooms by this fingerprint, read to them\n"
        "(or scanned) from here: never from the server alone. Nothing secret is shown.",
        Console._cmd_keys,
    ),
    "pin": _Command(
        "pin [set | lock | unlock | clear]",
        "the optional installer PIN that guards changes",
        "Wrong PINs make the next try wait longer (1 s, 2 s, 4 s ...) and are counted.\n"
        "'pin unlock' asks for the PIN (again after a wrong one); Enter or Ctrl-C gives up.",
        Console._cmd_pin,
    ),
    "factory-reset": _Command(
        "factory-reset",
        "wipe pairing, PIN and saved settings (asks)",
        "",
        Console._cmd_factory_reset,
    ),
    "version": _Command("version", "the software version", "", Console._cmd_version),
    "help": _Command("help [COMMAND]", "this list, or one command's help", "", Console._cmd_help),
    "exit": _Command("exit", "end the session (locks the console)", "", Console._cmd_exit),
}
ALIASES: Final = {"?": "help", "quit": "exit", "logout": "exit"}

"""The console interpreter on its own (sans-I/O): every command, its errors, the PIN flows.

The interpreter reads the device only through its small read-only DeviceView, and every change it
makes is an effect it returns; here a fake device stands in for both (the one test double: the
real device is exercised over a pty elsewhere), carrying the quick effects out in memory as the
transport's back-end would, scrypt included (at a tiny cost). Time is passed in, so the PIN
back-off and the idle lock are tested without sleeping.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest

from pttd import __version__
from pttd.e2ee.keys import AuthorityKey, Fingerprint, IdentityKey
from pttd.errors import PairingFailed, StoreError
from pttd.radio.config import Config, DeviceConfig, KeyInfo, ServerConfig, settable_keys
from pttd.radio.console.interpreter import (
    COMMANDS,
    IDLE_LOCK_S,
    AudioTestDone,
    AudioTestRequest,
    Cancelled,
    CheckPin,
    ClearPin,
    Console,
    Done,
    Effect,
    FactoryResetRequest,
    HashPin,
    Outcome,
    PairDone,
    PairRequest,
    PinChecked,
    PinHashed,
    RemoveValue,
    Reply,
    ResetDone,
    SavePin,
    SaveValue,
    SelectRoom,
    SetVolume,
    UnpairDone,
    UnpairRequest,
    clean,
    meter_line,
    parse_pairing_link,
    qr_text,
)
from pttd.radio.console.pin import MAX_DELAY_S, hash_pin, pin_matches, retry_delay
from pttd.radio.status import DeviceStatus, PinRecord
from pttd.redact import redact

CODE = "K7QW-3MZP-9XTR"
URL = "ws://radio.example:8080"
IDENTITY = IdentityKey.generate()
FINGERPRINT = str(IDENTITY.public.fingerprint)  # what the device shows: 8 groups of 5 digits
AUTHORITY = AuthorityKey.generate().public.to_text()  # what a pairing link carries
WAITING = "waiting for its room key (not approved by the key authority yet?)"
ROOM_KEYS = (("ops", "encrypted, epoch 3, 4 members, sender 1"), ("yard", WAITING))
LONG = (PairRequest, UnpairRequest, AudioTestRequest, FactoryResetRequest)


class FakeDevice:
    """Implements pttd.radio.console.interpreter.DeviceView in memory, and carries out the quick
    effects (the long ones, pairing and such, the tests finish themselves)."""

    def __init__(self) -> None:
        self.state = DeviceStatus(
            device="pttd-test",
            paired=False,
            link="unpaired",
            server="",
            rooms=(),
            room=None,
            transmitting=False,
            mic_open=False,
            receiving=False,
            last_error="",
            volume=70,
            uptime_s=3723.4,
            packets_sent=0,
            packets_received=0,
        )
        self.devices = ["simulated"]
        self.cfg = Config(device=DeviceConfig(name="pttd-test"))
        self.values: dict[str, Any] = {}
        self.volume_set: list[int] = []
        self.pin: PinRecord | None = None
        self.pin_saves = 0
        self.logs = [f"line {i}" for i in range(100)]
        self.broken_store = False
        self.room_taken = True
        self.effects: list[Effect] = []  # every effect carried out, in order

    def online(self, rooms: tuple[str, ...] = ("ops", "yard"), room: str = "ops") -> None:
        self.update(paired=True, link="online", server=URL, rooms=rooms, room=room)

    def update(self, **changes: Any) -> None:
        self.state = replace(self.state, **changes)

    # -- DeviceView ------------------------------------------------------------------------

    def status(self) -> DeviceStatus:
        return self.state

    def audio_devices(self) -> list[str]:
        return self.devices

    def config(self) -> Config:
        return self.cfg

    def saved_values(self) -> dict[str, Any]:
        return dict(self.values)

    def log_lines(self, count: int) -> list[str]:
        return self.logs[-count:]

    # -- the quick effects -----------------------------------------------------------------

    def _check_store(self) -> None:
        if self.broken_store:
            raise StoreError("/var/lib/pttd/settings.json: cannot save (No space left on device)")

    def run(self, effect: Effect) -> Outcome:
        self.effects.append(effect)
        match effect:
            case SelectRoom():
                if self.room_taken:
                    self.update(room=effect.name)
            case SaveValue():
                self._check_store()
                self.values[effect.key] = effect.value
            case RemoveValue():
                self._check_store()
                del self.values[effect.key]
            case SetVolume():
                self.update(volume=effect.volume)  # applied first, as Device.set_volume does
                self._check_store()
                self.volume_set.append(effect.volume)
            case HashPin():
                return PinHashed(hash_pin(effect.pin, n=effect.n))
            case CheckPin():
                return PinChecked(pin_matches(effect.record, effect.pin))
            case SavePin():
                self._check_store()
                self.pin = effect.record
                self.pin_saves += 1
            case ClearPin():
                self._check_store()
                self.pin = None
            case _:
                raise AssertionError(f"{effect!r} is the test's to finish")
        return Done()


@pytest.fixture
def backend() -> FakeDevice:
    return FakeDevice()


@pytest.fixture
def console(backend: FakeDevice) -> Console:
    return Console(backend, now=0.0, scrypt_n=16)


def carry_out(console: Console, reply: Reply, now: float) -> Reply:
    """What the transport does with ``reply``: its quick effects carried out (by the fake) and
    finished, one after the other; the texts joined, and the long effect left for the test."""
    device = console.view
    assert isinstance(device, FakeDevice)
    texts, effect = [reply.text], reply.effect
    while effect is not None and not isinstance(effect, LONG):
        outcome: Outcome
        try:
            outcome = device.run(effect)
        except StoreError as exc:
            outcome = exc
        reply = console.finish(effect, outcome, now)
        texts.append(reply.text)
        effect = reply.effect
    return Reply("\n".join(t for t in texts if t), effect)


def say(console: Console, line: str, now: float = 1.0) -> Reply:
    return carry_out(console, console.handle_line(line, now), now)


def text(console: Console, line: str, now: float = 1.0) -> str:
    reply = say(console, line, now)
    assert reply.effect is None, reply
    return reply.text


def set_pin(console: Console, pin: str = "2468", now: float = 1.0) -> None:
    say(console, "pin set", now)
    say(console, pin, now)
    assert "PIN set" in say(console, pin, now).text


# --------------------------------------------------------------------------- basics


def test_help_lists_every_command(console):
    out = text(console, "help")
    for name in COMMANDS:
        assert name in out
    assert text(console, "?") == out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(console, name):
    detail = text(console, f"help {name}")
    assert detail.startswith("usage: ")
    assert text(console, f"{name} --help") == detail
    assert text(console, f"{name} -h") == detail


def test_help_texts_survive_redaction_unchanged():
    for command in COMMANDS.values():
        assert redact(command.help()) == command.help()


def test_unknown_command_and_empty_line(console):
    assert text(console, "") == ""
    assert text(console, "   ") == ""
    assert text(console, "frobnicate") == "unknown command: type 'help'"
    assert text(console, "STATUS").startswith("device:")  # commands are not case-sensitive
    assert "x" * 30 not in text(console, "x" * 200)
    assert text(console, 'room "ops').startswith("cannot read that line")


def test_a_code_typed_as_a_command_is_not_repeated(console):
    out = text(console, CODE)
    assert out == "unknown command: type 'help'"


def test_version(console):
    assert text(console, "version") == f"pttd {__version__}"


def test_clean_removes_control_and_format_characters_and_secrets():
    assert clean("a\x1b[2Jb\u202ec\x07\n") == "a?[2Jb?c?\n"
    assert clean("token=abc") == "token=[redacted]"
    assert clean(f"code {CODE}") == "code [redacted]"


def test_meter_line():
    assert meter_line(0.0) == f"mic [{'#' * 30}]    0.0 dBFS"
    assert meter_line(-math.inf) == f"mic [{'.' * 30}]  -60.0 dBFS"
    assert meter_line(-30.0).count("#") == 15
    assert meter_line(float("nan")).count("#") == 0


# --------------------------------------------------------------------------- status


def test_status_text_shows_every_field(console, backend):
    backend.online()
    out = text(console, "status")
    for field in ("device:", "paired:", "server:", "link:", "rooms:", "room:", "transmitting:"):
        assert field in out
    for field in ("microphone:", "last error:", "audio:", "version:", "uptime:", "lock:"):
        assert field in out
    assert "ops, yard" in out and "online" in out and URL in out
    assert "simulated" in out and __version__ in out and "1:02:03" in out
    assert "no PIN set" in out


def test_status_json_is_one_line(console, backend):
    backend.online()
    out = text(console, "status --json")
    assert "\n" not in out
    data = json.loads(out)
    assert data["paired"] is True and data["link"] == "online"
    assert data["rooms"] == ["ops", "yard"] and data["room"] == "ops"
    assert data["transmitting"] is False and data["mic_open"] is False
    assert data["version"] == __version__
    assert set(data) == {
        "device",
        "fingerprint",
        "room_keys",
        "accessories",
        "paired",
        "link",
        "server",
        "rooms",
        "room",
        "transmitting",
        "mic_open",
        "receiving",
        "last_error",
        "volume",
        "uptime_s",
        "packets_sent",
        "packets_received",
        "audio_devices",
        "version",
        "lock",
    }
    assert data["lock"] == {"pin_set": False, "locked": False, "wrong_pins": 0, "wrong_in_a_row": 0}


def test_status_usage(console):
    assert text(console, "status --yaml") == "usage: status [--json]"


def test_status_of_a_long_uptime_and_an_error(console, backend):
    backend.update(uptime_s=2 * 86400 + 5, last_error="link lost: \x1b[31mred")
    out = text(console, "status")
    assert "2d 0:00:05" in out
    assert "\x1b" not in out and "link lost: ?[31mred" in out


def test_status_shows_the_fingerprint_and_each_encrypted_rooms_key(console, backend):
    backend.online()
    lines = text(console, "status").splitlines()
    assert "fingerprint:  none (pair to make an identity key)" in lines
    assert not [line for line in lines if line.startswith("key ")]
    backend.update(fingerprint=FINGERPRINT, room_keys=ROOM_KEYS)
    lines = text(console, "status").splitlines()
    at = lines.index(f"fingerprint:  {FINGERPRINT}")
    assert lines[at + 1 : at + 3] == [
        "key ops:      encrypted, epoch 3, 4 members, sender 1",
        f"key yard:     {WAITING}",
    ]
    assert lines[at - 1].startswith("last error:") and lines[at + 3].startswith("audio:")
    data = json.loads(text(console, "status --json"))
    assert data["fingerprint"] == FINGERPRINT
    assert data["room_keys"] == {"ops": "encrypted, epoch 3, 4 members, sender 1", "yard": WAITING}


def test_prompt_shows_the_state(console, backend):
    assert console.prompt(1.0) == "pttd[unpaired]> "
    backend.update(link="connecting")
    assert console.prompt(1.0) == "pttd[connecting]> "
    backend.online()
    assert console.prompt(1.0) == "pttd[online ops]> "
    set_pin(console)
    say(console, "pin lock")
    assert console.prompt(1.0) == "pttd[online ops locked]> "


# --------------------------------------------------------------------------- keys


def test_keys_without_an_identity_key(console):
    assert text(console, "keys") == (
        "no identity key: pair this device first (encrypted rooms need one)"
    )
    assert text(console, "keys now").startswith("usage: keys")


def test_keys_shows_the_fingerprint_as_digits_and_qr_code_and_the_room_keys(console, backend):
    backend.online()
    backend.update(fingerprint=FINGERPRINT, room_keys=ROOM_KEYS)
    out = text(console, "keys")
    lines = out.splitlines()
    assert lines[0] == f"fingerprint: {FINGERPRINT}"
    assert "'pttd keys approve NAME FINGERPRINT'" in out
    # What the admin reads or scans is the device's fingerprint, as 'pttd keys approve' takes it.
    assert Fingerprint.parse(lines[0].removeprefix("fingerprint: ")) == IDENTITY.public.fingerprint
    assert qr_text(FINGERPRINT) in out
    assert qr_text(str(IdentityKey.generate().public.fingerprint)) not in out
    assert lines[-2:] == ["ops: encrypted, epoch 3, 4 members, sender 1", f"yard: {WAITING}"]
    backend.update(room_keys=())
    assert text(console, "keys").splitlines()[-1] == "no encrypted room"


def test_keys_can_be_read_on_a_locked_console(console, backend):
    backend.update(fingerprint=FINGERPRINT)
    set_pin(console)
    say(console, "pin lock")
    assert text(console, "keys").splitlines()[0] == f"fingerprint: {FINGERPRINT}"


# --------------------------------------------------------------------------- pairing


def test_pair_with_url_and_code(console):
    reply = say(console, f"pair {URL} {CODE}")
    assert reply.effect == PairRequest(URL, CODE, "pttd-test")
    assert CODE not in reply.text and URL in reply.text
    assert CODE not in repr(reply)


def test_pair_with_the_link_from_the_qr_code(console):
    link = f"pttd://pair?server={URL.replace(':', '%3A').replace('/', '%2F')}&code={CODE}"
    reply = say(console, f"pair {link}")
    assert reply.effect == PairRequest(URL, CODE, "pttd-test")
    assert CODE not in reply.text


def test_pair_with_a_link_that_names_the_key_authority(console):
    server = URL.replace(":", "%3A").replace("/", "%2F")
    link = f"pttd://pair?server={server}&code={CODE}&authority={AUTHORITY}"
    reply = say(console, f"pair {link}")
    assert reply.effect == PairRequest(URL, CODE, "pttd-test", AUTHORITY)
    assert reply.text == f"pairing with {URL} as pttd-test ..."
    assert CODE not in repr(reply)


def test_pair_link_with_an_authority_and_the_configured_server(console, backend):
    backend.cfg = replace(backend.cfg, server=ServerConfig(url="wss://conf.example"))
    reply = say(console, f"pair pttd://pair?code={CODE}&authority={AUTHORITY}")
    assert reply.effect == PairRequest("wss://conf.example", CODE, "pttd-test", AUTHORITY)
    for plain in (f"pair {URL} {CODE}", f"pair pttd://pair?code={CODE}", f"pair {CODE}"):
        effect = say(console, plain).effect
        assert isinstance(effect, PairRequest) and effect.authority is None


def test_pair_link_with_two_authorities_is_refused(console):
    reply = say(console, f"pair pttd://pair?code={CODE}&authority={AUTHORITY}&authority=x")
    assert reply.effect is None
    assert reply.text == "the pairing link's key authority is not one key"


def test_pair_link_without_server_uses_the_configured_one(console, backend):
    assert text(console, f"pair pttd://pair?code={CODE}") == (
        "no server address: type 'pair SERVER_URL CODE'"
    )
    backend.cfg = replace(backend.cfg, server=ServerConfig(url="wss://conf.example"))
    reply = say(console, f"pair pttd://pair?code={CODE}")
    assert reply.effect == PairRequest("wss://conf.example", CODE, "pttd-test")
    reply = say(console, f"pair {CODE}")
    assert reply.effect == PairRequest("wss://conf.example", CODE, "pttd-test")


def test_pair_asks_for_the_code_as_a_secret(console):
    reply = say(console, f"pair {URL}")
    assert reply.effect is None and console.secret_input
    assert console.prompt(1.0) == "pairing code: "
    reply = say(console, CODE)
    assert reply.effect == PairRequest(URL, CODE, "pttd-test")
    assert not console.secret_input


def test_pair_question_can_be_cancelled(console):
    say(console, f"pair {URL}")
    assert console.cancel(2.0) == "cancelled"
    assert console.cancel(2.0) == ""
    assert console.prompt(2.0) == "pttd[unpaired]> "


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("pair http://example.com CODE", "is not a server address"),
        ("pair ws:// CODE", "is not a server address"),
        ("pair pttd://other?code=X", "not a pairing link"),
        ("pair pttd://pair?server=ws://x", "carries no code"),
        ("pair a b c", "usage: pair"),
        ("pair", "no server address"),
    ],
)
def test_pair_refusals(console, line, expected):
    reply = say(console, line)
    assert reply.effect is None and expected in reply.text


def test_pair_refuses_a_bad_code_without_repeating_it(console):
    say(console, f"pair {URL}")
    reply = say(console, "x" * 80)
    assert reply.effect is None and "x" * 80 not in reply.text and "pairing code" in reply.text


def test_pair_when_already_paired(console, backend):
    backend.online()
    reply = say(console, f"pair {URL} {CODE}")
    assert reply.effect is None and "already paired" in reply.text and "unpair" in reply.text


def test_parse_pairing_link():
    assert parse_pairing_link(f"pttd://pair?server=ws%3A%2F%2Fh%3A1&code={CODE}") == (
        "ws://h:1",
        CODE,
        None,
    )
    assert parse_pairing_link(f"PTTD://PAIR?code={CODE}") == (None, CODE, None)
    assert parse_pairing_link(f"pttd://pair?code={CODE}&authority=AbC-_1") == (
        None,
        CODE,
        "AbC-_1",
    )
    for bad in (
        "pttd://pair",
        "http://pair?code=x",
        f"pttd://pair?code={CODE}&code=x",
        f"pttd://pair?code={CODE}&authority=a&authority=b",
        f"pttd://pair?code={CODE}&authority=",
    ):
        with pytest.raises(ValueError) as info:
            parse_pairing_link(bad)
        assert CODE not in str(info.value)


PAIRING_FAILURES = {
    "invalid code": PairingFailed("invalid code", "wrong pairing code"),
    "expired code": PairingFailed(
        "expired code", "the pairing code has expired: ask for a new one"
    ),
    "used code": PairingFailed("used code", "the pairing code was already used"),
    "unreachable": PairingFailed("unreachable", "cannot reach the server: Connection refused"),
    "tls": PairingFailed("tls", "TLS certificate not trusted: self-signed certificate"),
    "bad link": PairingFailed(
        "bad link", "the link's key authority is not a key: key authority public key is not …"
    ),
    "store": StoreError("/state/credential.json: cannot save (Read-only file system)"),
    "cancelled": Cancelled(),
    "timeout": TimeoutError(),
}


def test_every_pairing_failure_has_its_own_message(console):
    request = PairRequest(URL, CODE, "pttd-test")
    messages = {k: console.finish(request, v, 2.0).text for k, v in PAIRING_FAILURES.items()}
    assert len(set(messages.values())) == len(messages)
    assert "wrong pairing code" in messages["invalid code"]
    assert "expired" in messages["expired code"]
    assert "unreachable" in messages["unreachable"] and URL in messages["unreachable"]
    assert "TLS" in messages["tls"] and "server.ca_file" in messages["tls"]
    assert "could not be saved" in messages["store"]
    assert "cancelled" in messages["cancelled"]
    assert messages["bad link"] == (
        "pairing failed: the link's key authority is not a key: key authority public key is not …"
    )
    for message in messages.values():
        assert CODE not in message


def test_pairing_success_message(console):
    request = PairRequest(URL, CODE, "pttd-test")
    done = PairDone(URL, "pttd-test-2", ("ops", "yard"), True, "ops")
    out = console.finish(request, done, 2.0).text
    assert out == f"paired with {URL} as pttd-test-2\nrooms: ops, yard\nonline in room ops"
    late = console.finish(request, replace(done, online=False, room=None), 2.0).text
    assert "still connecting" in late


def test_pairing_success_shows_the_new_identity_keys_fingerprint(console):
    request = PairRequest(URL, CODE, "pttd-test", AUTHORITY)
    done = PairDone(URL, "pttd-test", ("ops",), True, "ops", FINGERPRINT)
    assert console.finish(request, done, 2.0).text.splitlines() == [
        f"paired with {URL} as pttd-test",
        "rooms: ops",
        "online in room ops",
        f"fingerprint: {FINGERPRINT}",
        "for encrypted rooms, read it to the server's admin to approve (see 'keys')",
    ]


# --------------------------------------------------------------------------- unpair


def test_unpair(console):
    reply = say(console, "unpair")
    assert reply.effect == UnpairRequest()
    finish = console.finish
    assert "server was told" in finish(UnpairRequest(), UnpairDone(True, True), 2).text
    assert "could not be told" in finish(UnpairRequest(), UnpairDone(True, False), 2).text
    assert "not paired" in finish(UnpairRequest(), UnpairDone(False, False), 2).text
    assert "unpair failed" in finish(UnpairRequest(), StoreError("x: cannot remove"), 2).text
    assert text(console, "unpair now").startswith("usage: unpair")


# --------------------------------------------------------------------------- rooms


def test_rooms_and_room(console, backend):
    assert text(console, "rooms") == "no rooms yet (link unpaired)"
    assert text(console, "room ops") == "no rooms yet (link unpaired)"
    backend.online()
    assert text(console, "rooms") == "* ops\n  yard"
    assert text(console, "room") == "room: ops"
    reply = console.handle_line("room yard", 1.0)
    assert reply == Reply("", SelectRoom("yard"))  # the interpreter asks; the device changes
    assert backend.state.room == "ops"
    assert carry_out(console, reply, 1.0).text == "room yard selected"
    assert backend.state.room == "yard"
    assert text(console, "room yard") == "already in room yard"
    assert text(console, "room cellar") == "no room 'cellar': the rooms are ops, yard"
    assert text(console, "room a b").startswith("usage: room")


def test_room_not_taken(console, backend):
    backend.online()
    backend.room_taken = False
    assert text(console, "room yard") == "room yard not selected (still ops): see 'status'"


# --------------------------------------------------------------------------- config


def test_config_show_lists_every_key(console):
    out = text(console, "config show")
    for key in settable_keys():
        assert f"{key} = " in out
    assert "state.dir" not in out
    assert text(console, "config") == out
    audio = text(console, "config show audio.")
    assert audio and all(line.startswith("audio.") for line in audio.splitlines())
    assert text(console, "config show nothing") == "no key starts with 'nothing'"


def test_config_get(console):
    out = text(console, "config get talk.mode")
    assert out.splitlines()[0] == 'talk.mode = "hold"'
    assert out.splitlines()[1] == 'one of hold, toggle, default "hold"'
    assert "unknown key" in text(console, "config get talk.mood")
    assert "did you mean talk.mode" in text(console, "config get talk.mood")


def test_config_set_saves_a_validated_value(console, backend):
    reply = console.handle_line("config set talk.mode toggle", 1.0)
    assert reply == Reply("", SaveValue("talk.mode", "toggle")) and backend.values == {}
    out = carry_out(console, reply, 1.0).text
    assert out == 'talk.mode = "toggle" (saved; takes effect after a restart)'
    assert backend.values == {"talk.mode": "toggle"}
    assert 'saved: "toggle" (after a restart)' in text(console, "config get talk.mode")
    assert '(saved: "toggle"' in text(console, "config show talk.")
    text(console, "config set talk.timeout 30")
    text(console, 'config set device.name "ops radio 1"')
    assert backend.values == {
        "talk.mode": "toggle",
        "talk.timeout": 30.0,
        "device.name": "ops radio 1",
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("config set talk.mode shout", "talk.mode: must be one of hold, toggle"),
        ("config set audio.volume 150", "audio.volume: must be between 0 and 100"),
        ("config set talk.timeout soon", "talk.timeout: must be a number"),
        ("config set server.url http://x", "server.url: must start with ws:// or wss://"),
        ("config set state.dir /tmp", "state.dir: set in the configuration file only"),
        ("config set no.such 1", "no.such: unknown key"),
        ("config set audio.frame_ms 25", "audio.frame_ms: must be one of 10, 20, 40, 60"),
    ],
)
def test_config_set_refuses_bad_values(console, backend, line, expected):
    out = text(console, line)
    assert out.startswith("not set: ") and expected in out
    assert backend.values == {}


def test_config_set_volume_applies_now(console, backend):
    assert console.handle_line("config set audio.volume 40", 1.0) == Reply("", SetVolume(40))
    assert (
        text(console, "config set audio.volume 40") == "audio.volume = 40 (applied now, and saved)"
    )
    assert backend.volume_set == [40] and backend.values == {}
    assert "volume = 40" in text(console, "config get audio.volume")


def test_config_unset(console, backend):
    text(console, "config set talk.mode toggle")
    assert console.handle_line("config unset talk.mode", 1.0) == Reply("", RemoveValue("talk.mode"))
    assert "saved value removed" in text(console, "config unset talk.mode")
    assert backend.values == {}
    assert "no saved value" in text(console, "config unset talk.mode")


def test_config_store_failure(console, backend):
    backend.broken_store = True
    assert text(console, "config set talk.mode toggle").startswith("not saved: ")
    out = text(console, "config set audio.volume 10")
    assert out.startswith("volume 10 applied, but not saved: /var/lib/pttd/settings.json")
    assert backend.state.volume == 10


def test_config_usage(console):
    assert text(console, "config set talk.mode").startswith("usage: config")
    assert text(console, "config frob").startswith("usage: config")


def test_secret_keys_show_masked():
    info = KeyInfo("server.auth_token", "server", "auth_token", str, "", "")
    assert info.secret
    assert not settable_keys()["server.url"].secret
    from pttd.radio.console.interpreter import _shown

    assert _shown(info, "abc") == "****"
    assert _shown(info, "") == '""'


# --------------------------------------------------------------------------- audio, log


def test_audio_lists_devices_and_starts_a_test(console):
    assert text(console, "audio") == "audio devices:\n  simulated"
    reply = say(console, "audio test")
    assert reply.effect == AudioTestRequest(3.0)
    assert say(console, "audio test 1.5").effect == AudioTestRequest(1.5)
    assert "from 0.5 to 30" in text(console, "audio test 99")
    assert "from 0.5 to 30" in text(console, "audio test soon")
    assert text(console, "audio play").startswith("usage: audio")


def test_audio_test_results(console):
    r = AudioTestRequest(3.0)
    finish = console.finish
    assert "works" in finish(r, AudioTestDone(True, 3.0, 150, -20.0), 2).text
    assert "no sound" in finish(r, AudioTestDone(True, 3.0, 150, -math.inf), 2).text
    assert "clipping" in finish(r, AudioTestDone(True, 3.0, 150, -0.1), 2).text
    assert (
        "refused: the PTT is in use"
        in finish(r, AudioTestDone(False, refused="the PTT is in use"), 2).text
    )
    assert "stopped" in finish(r, Cancelled(), 2).text
    for outcome in (AudioTestDone(True, 3.0, 1, -20.0), Cancelled()):
        assert "microphone closed" in finish(r, outcome, 2).text


def test_log(console):
    assert text(console, "log") == "\n".join(f"line {i}" for i in range(80, 100))
    assert text(console, "log 3") == "line 97\nline 98\nline 99"
    assert "from 1 to 500" in text(console, "log 0")
    assert "from 1 to 500" in text(console, "log many")
    assert text(console, "log 1 2").startswith("usage: log")


def test_log_lines_are_redacted_again(console, backend):
    backend.logs = ["auth_token=abc123 leaked", f"code {CODE}"]
    out = text(console, "log 2")
    assert "abc123" not in out and CODE not in out


# --------------------------------------------------------------------------- PIN

GUARDED = [
    f"pair {URL} {CODE}",
    "unpair",
    "room yard",
    "config set talk.mode toggle",
    "config unset talk.mode",
    "audio test",
    "factory-reset",
    "pin set",
    "pin clear",
]


def test_without_a_pin_nothing_is_locked(console, backend):
    backend.online()
    assert text(console, "pin") == "no PIN set"
    assert text(console, "pin lock") == "no PIN set: 'pin set' first"
    assert text(console, "pin unlock") == "no PIN set: nothing to unlock"
    assert text(console, "pin clear") == "no PIN set"


def test_pin_set_asks_twice_with_secret_echo(console, backend):
    say(console, "pin set")
    assert console.secret_input and console.prompt(1.0) == "new PIN: "
    assert say(console, "2468").text == ""
    assert console.secret_input and console.prompt(1.0) == "the new PIN again: "
    out = say(console, "2468").text
    assert out.startswith("PIN set") and "2468" not in out
    assert backend.pin is not None and pin_matches(backend.pin, "2468")
    assert "2468" not in json.dumps(backend.pin.to_json())
    assert backend.pin.hash.startswith("scrypt$16$8$1$")  # the parameters travel with the hash
    assert not console.locked(1.0)  # the installer who set it stays in


def test_pin_set_refusals(console, backend):
    say(console, "pin set")
    assert "4 to 64 characters" in say(console, "12").text
    say(console, "pin set")
    say(console, "2468")
    assert say(console, "2469").text == "the two PINs differ: PIN not changed"
    assert backend.pin is None
    backend.broken_store = True
    say(console, "pin set")
    say(console, "2468")
    assert say(console, "2468").text.startswith("PIN not saved")


@pytest.mark.parametrize("line", GUARDED)
def test_locked_console_refuses_every_change(console, backend, line):
    backend.online()
    set_pin(console)
    assert text(console, "pin lock") == "locked"
    reply = say(console, line)
    assert reply.effect is None
    assert reply.text == "locked: type 'pin unlock' first"
    assert backend.values == {} and backend.state.room == "ops"
    assert [type(e) for e in backend.effects] == [HashPin, SavePin]  # setting the PIN only


@pytest.mark.parametrize("line", ["status", "status --json", "rooms", "config show", "log 1"])
def test_locked_console_still_reads(console, backend, line):
    set_pin(console)
    say(console, "pin lock")
    assert "locked:" not in text(console, line)


def test_unlock_with_growing_delays(console, backend):
    set_pin(console, "2468", now=0.0)
    say(console, "pin lock", now=0.0)
    say(console, "pin unlock", now=0.0)
    assert console.secret_input and console.prompt(0.0) == "PIN: "
    assert (
        say(console, "0000", now=0.0).text == "wrong PIN (1 in a row): wait 1 s before the next try"
    )
    assert console.secret_input and console.prompt(0.5) == "PIN: "  # asked again
    assert text(console, "", now=0.5) == "no PIN typed: still locked"  # Enter gives up
    assert text(console, "pin unlock", now=0.5) == "wait 1 s before the next try"
    assert console.secret_input and console.prompt(0.5) == "PIN: "  # the wait is no command
    assert text(console, "1111", now=0.7) == "too soon, that PIN was not checked: wait 1 s"
    assert console.secret_input  # and asked again: not counted
    assert "(2 in a row): wait 2 s" in say(console, "1111", now=1.0).text
    assert console.cancel(2.0) == "cancelled"  # Ctrl-C gives up
    assert text(console, "pin unlock", now=2.0) == "wait 1 s before the next try"
    assert "(3 in a row): wait 4 s" in say(console, "1111", now=3.0).text
    console.cancel(3.0)
    assert backend.pin is not None and backend.pin.failures == 3
    assert "3 wrong PIN(s) (3 in a row)" in text(console, "status", now=3.1)
    assert json.loads(text(console, "status --json", now=3.1))["lock"]["wrong_pins"] == 3
    say(console, "pin unlock", now=7.0)
    assert say(console, "2468", now=7.0).text == "unlocked"
    assert backend.pin.failures == 0 and backend.pin.wrong_total == 3
    assert backend.pin_saves == 1 + 3 + 1  # set, three wrong, the right one after them
    assert say(console, "room yard", now=7.0).text != "locked: type 'pin unlock' first"


def test_delay_is_capped():
    assert retry_delay(20) == MAX_DELAY_S == 60.0
    assert retry_delay(0) == 0.0 and retry_delay(1) == 1.0 and retry_delay(3) == 4.0


def test_the_pin_never_appears_in_replies(console, backend):
    set_pin(console, "97531")
    replies = [say(console, line) for line in ("pin lock", "pin unlock", "97530")]
    replies += [say(console, line, now=10.0) for line in ("pin unlock", "97531")]
    for reply in replies:
        assert "97531" not in reply.text and "97530" not in reply.text
    assert "97531" not in repr(backend.pin)


def test_backoff_survives_a_restart(backend):
    backend.pin = hash_pin("2468", n=16).wrong().wrong().wrong()  # next try: 4 s later
    console = Console(backend, pin=backend.pin, now=100.0, scrypt_n=16)
    assert console.locked(100.0)
    assert text(console, "pin unlock", now=101.0) == "wait 3 s before the next try"
    assert say(console, "2468", now=104.0).text == "unlocked"


def test_idle_and_new_sessions_lock(console, backend):
    set_pin(console, now=0.0)
    assert not console.locked(1.0)
    assert not console.locked(IDLE_LOCK_S)
    assert console.locked(1.0 + IDLE_LOCK_S + 1)
    say(console, "pin unlock", now=2000.0)
    say(console, "2468", now=2000.0)
    assert not console.locked(2000.0)
    console.start_session(2001.0)
    assert console.locked(2001.0)


IDLE = IDLE_LOCK_S + 1.0  # a quarter of an hour and a second without a line
DROPPED = (
    "no answer for 15 minutes: the question was dropped and nothing done; that line was ignored"
)


def test_idle_lock_drops_a_pending_factory_reset(console, backend):
    """An unlocked installer types factory-reset and walks away; whoever answers 'yes' after the
    idle lock gets nothing wiped, and the console is locked."""
    backend.online()
    set_pin(console, now=0.0)
    assert "wipes the pairing" in text(console, "factory-reset", now=10.0)
    reply = say(console, "yes", now=10.0 + IDLE)
    assert reply == Reply(DROPPED)
    assert console.locked(10.0 + IDLE) and not console.secret_input
    assert console.prompt(10.0 + IDLE) == "pttd[online ops locked]> "
    assert text(console, "yes", now=10.0 + IDLE) == "unknown command: type 'help'"  # not a reset
    assert text(console, "factory-reset", now=10.0 + IDLE) == "locked: type 'pin unlock' first"
    assert [type(e) for e in backend.effects] == [HashPin, SavePin]  # setting the PIN only


def test_idle_drops_a_question_without_a_pin_too(console, backend):
    say(console, "factory-reset", now=0.0)
    assert say(console, "yes", now=IDLE) == Reply(DROPPED)
    assert not console.locked(IDLE)  # no PIN: nothing to lock, but the question is gone
    say(console, "factory-reset", now=IDLE)
    assert say(console, "yes", now=IDLE + IDLE_LOCK_S).effect == FactoryResetRequest()  # in time


@pytest.mark.parametrize("answered", [0, 1])
def test_idle_lock_drops_a_pending_pin_set(console, backend, answered):
    set_pin(console, "2468", now=0.0)
    say(console, "pin set", now=1.0)
    for _ in range(answered):
        say(console, "1357", now=1.0)
    assert console.secret_input
    reply = say(console, "1357", now=1.0 + IDLE)
    assert reply == Reply(DROPPED) and "1357" not in reply.text
    assert console.locked(1.0 + IDLE)
    assert backend.pin is not None and pin_matches(backend.pin, "2468")
    assert [type(e) for e in backend.effects] == [HashPin, SavePin]  # the first PIN only


def test_idle_drops_a_pending_pairing_code(console):
    say(console, f"pair {URL}", now=0.0)
    assert console.secret_input
    reply = console.handle_line(CODE, IDLE, secret=True)
    assert reply == Reply(DROPPED) and CODE not in reply.text


def test_a_fresh_prompt_after_the_idle_time_reads_a_command(console):
    """The question was dropped before its answer came (the console showed the shell's prompt
    again): the next line is a command."""
    say(console, "factory-reset", now=0.0)
    assert console.prompt(IDLE) == "pttd[unpaired]> " and not console.secret_input
    assert text(console, "version", now=IDLE) == f"pttd {__version__}"


def test_ctrl_c_does_not_put_the_idle_lock_off(console):
    set_pin(console, now=0.0)
    say(console, "factory-reset", now=1.0)
    assert console.cancel(1.0 + IDLE) == ""  # the question went with the lock
    assert console.locked(1.0 + IDLE)
    assert console.prompt(1.0 + IDLE) == "pttd[unpaired locked]> "


@pytest.mark.parametrize("lock", ["reconnect", "idle"])
def test_every_lock_drops_the_question(console, backend, lock):
    """Whatever locks the console leaves no question behind for the next person ('pin lock'
    and 'exit' cannot be typed while a question waits: the line would be its answer)."""
    set_pin(console, now=0.0)
    say(console, "factory-reset", now=1.0)
    later = 2.0 if lock == "reconnect" else 1.0 + IDLE
    if lock == "reconnect":
        console.start_session(later)
    assert console.locked(later) and not console.secret_input
    assert console.prompt(later) == "pttd[unpaired locked]> "
    assert say(console, "yes", now=later).effect is None
    assert not any(isinstance(e, FactoryResetRequest) for e in backend.effects)


def test_a_line_typed_as_a_secret_is_never_a_command(console):
    """The terminal echoed it as stars, but no question is left to take it: ignored, not run,
    not repeated."""
    reply = console.handle_line("97531", 1.0, secret=True)
    assert reply.effect is None and "97531" not in reply.text and "ignored" in reply.text
    reply = console.handle_line("factory-reset", 1.0, secret=True)
    assert reply.effect is None and not console.prompt(1.0).startswith("type 'yes'")


def test_a_pin_typed_after_the_wait_reply_is_taken_as_the_pin(console, backend):
    """After 'wait N s', the next line is the PIN (echoed as stars), typed too soon or not: it is
    never run as a command nor repeated."""
    set_pin(console, "97531", now=0.0)
    say(console, "pin lock", now=0.0)
    say(console, "pin unlock", now=0.0)
    assert "wait 1 s" in say(console, "11111", now=0.0).text
    console.cancel(0.1)
    assert text(console, "pin unlock", now=0.2) == "wait 1 s before the next try"
    assert console.secret_input
    too_soon = say(console, "97531", now=0.3)
    assert too_soon == Reply("too soon, that PIN was not checked: wait 1 s")
    assert console.secret_input and console.locked(0.3)
    assert backend.pin is not None and backend.pin.failures == 1  # not a try
    assert say(console, "97531", now=1.0).text == "unlocked"
    assert all("97531" not in line for line in [too_soon.text, repr(backend.effects)])


def test_pin_clear(console, backend):
    set_pin(console)
    assert text(console, "pin") == "PIN set, unlocked; 0 wrong PIN(s)"
    assert text(console, "pin clear") == "PIN removed: every command works without it"
    assert backend.pin is None and not console.locked(1.0)


def test_changing_the_pin_needs_the_old_one(console, backend):
    set_pin(console, "2468")
    say(console, "pin lock")
    assert text(console, "pin set") == "locked: type 'pin unlock' first"
    say(console, "pin unlock")
    say(console, "2468")
    set_pin(console, "1357")
    assert backend.pin is not None and pin_matches(backend.pin, "1357")


def test_pin_usage(console):
    assert text(console, "pin frob").startswith("usage: pin")
    assert text(console, "pin set now").startswith("usage: pin")


def test_scrypt_is_an_effect_never_run_by_the_interpreter(console, backend):
    """Setting and checking a PIN: the interpreter asks for the hash (the back-end runs scrypt in
    a worker thread) and words what comes back; the PIN is in no effect's repr."""
    say(console, "pin set")
    say(console, "97531")
    reply = console.handle_line("97531", 1.0)
    assert reply == Reply("", HashPin("97531", 16)) and "97531" not in repr(reply)
    record = hash_pin("97531", n=16)
    reply = console.finish(HashPin("97531", 16), PinHashed(record), 1.0)
    assert reply == Reply("", SavePin(record, new=True))
    assert console.finish(reply.effect, Done(), 1.0).text.startswith("PIN set")
    assert backend.effects == []  # nothing was done but through the effects
    say(console, "pin lock")
    say(console, "pin unlock")
    reply = console.handle_line("97531", 2.0)
    assert reply == Reply("", CheckPin("97531", record)) and "97531" not in repr(reply)
    assert console.finish(reply.effect, PinChecked(True), 2.0) == Reply("unlocked")
    assert not console.locked(2.0)


def test_a_pin_check_that_did_not_finish_is_not_a_try(console, backend):
    set_pin(console)
    say(console, "pin lock")
    say(console, "pin unlock")
    check = console.handle_line("1111", 2.0).effect
    assert isinstance(check, CheckPin)
    out = console.finish(check, Cancelled(), 2.0).text
    assert out == "PIN not checked: cancelled; still locked"
    assert console.locked(2.0) and text(console, "pin unlock", now=2.0) == ""  # no back-off
    assert "PIN not checked" in console.finish(check, ValueError("damaged"), 2.0).text


def test_wrong_pins_count_in_memory_when_the_store_fails(console, backend):
    set_pin(console)
    say(console, "pin lock")
    backend.broken_store = True
    say(console, "pin unlock", now=2.0)
    assert say(console, "0000", now=2.0).text == (
        "wrong PIN (1 in a row): wait 1 s before the next try"
    )
    console.cancel(2.5)
    assert "1 wrong PIN(s)" in text(console, "status", now=2.5)


def test_pin_clear_that_cannot_be_saved(console, backend):
    set_pin(console)
    assert console.handle_line("pin clear", 1.0) == Reply("", ClearPin())
    backend.broken_store = True
    assert text(console, "pin clear").startswith("PIN not removed: ")
    assert text(console, "pin") == "PIN set, unlocked; 0 wrong PIN(s)"


def test_saved_values_stay_out_of_effect_reprs():
    assert "s3cret" not in repr(SaveValue("server.token", "s3cret"))
    assert CODE not in repr(PairRequest(URL, CODE, "pttd-test"))


# --------------------------------------------------------------------------- reset, exit


def test_factory_reset_asks_first(console, backend):
    out = text(console, "factory-reset")
    assert "wipes the pairing" in out
    assert console.prompt(1.0) == "type 'yes' to wipe it all: " and not console.secret_input
    assert text(console, "no") == "factory reset cancelled: nothing changed"
    say(console, "factory-reset")
    reply = say(console, "YES")
    assert reply.effect == FactoryResetRequest()


def test_factory_reset_result_forgets_the_pin(console, backend):
    set_pin(console)
    backend.pin = None  # what the reset did to the store
    out = console.finish(FactoryResetRequest(), ResetDone(True), 2.0).text
    assert "factory reset done" in out and "server was told" in out
    assert text(console, "pin") == "no PIN set"
    assert "failed" in console.finish(FactoryResetRequest(), StoreError("x"), 2.0).text


def test_a_failed_factory_reset_keeps_the_pin_and_locks(console, backend):
    set_pin(console)
    out = console.finish(FactoryResetRequest(), StoreError("/state: cannot remove"), 2.0).text
    assert out == "factory reset failed: /state: cannot remove"
    assert (
        console.locked(2.0) and text(console, "pin", now=2.0) == "PIN set, locked; 0 wrong PIN(s)"
    )


def test_factory_reset_can_be_cancelled_with_ctrl_c(console):
    say(console, "factory-reset")
    assert console.cancel(1.0) == "cancelled"
    assert console.prompt(1.0) == "pttd[unpaired]> "


def test_exit_ends_the_session(console):
    assert text(console, "exit") == "bye (press Enter to start again)"
    assert console.prompt(1.0) == ""
    out = text(console, "status")  # any line starts a new session: the greeting, not status
    assert out.startswith(f"pttd {__version__} installer console on pttd-test")
    assert console.prompt(1.0) == "pttd[unpaired]> "
    assert text(console, "quit") == "bye (press Enter to start again)"


def test_exit_locks(console):
    set_pin(console)
    say(console, "exit")
    say(console, "")
    assert console.locked(1.0)


def test_start_session_greets_and_drops_a_question(console):
    say(console, f"pair {URL}")
    banner = console.start_session(5.0)
    assert banner.startswith("pttd ") and "help" in banner
    assert not console.secret_input and console.prompt(5.0) == "pttd[unpaired]> "

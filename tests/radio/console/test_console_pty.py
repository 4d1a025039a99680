"""The installer console end to end over a real pty: a real room server on 127.0.0.1, a real
device (simulated audio, in-memory LEDs), the console in the daemon opening the pty's slave, and
the test typing on the master as picocom would."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import stat
import threading
import time
import urllib.parse
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from console_harness import PROMPT, ROOMS, TIMEOUT, Pty, Terminal, console_rig, secrets_absent

from pttd import __version__, cli
from pttd.radio import run
from pttd.radio.config import AudioConfig, Config, ConsoleConfig, StateConfig
from pttd.radio.console.interpreter import COMMANDS
from pttd.radio.machine import Link
from pttd.radio.run import with_saved_settings
from pttd.radio.store import CREDENTIAL_FILE, PIN_FILE, SETTINGS_FILE, Store
from pttd.server.admin import pairing_link
from pttd.server.app import RoomServer, ServerSettings


def status_json(reply: str) -> dict:
    return json.loads(reply)


def console_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("pttd console")]


@pytest.fixture
def caplog_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="pttd")
    return caplog


async def test_full_pairing_run(tmp_path: Path, caplog_debug) -> None:
    async with console_rig(tmp_path) as rig:
        before = await rig.terminal.command("status --json")
        assert status_json(before)["link"] == "unpaired"
        assert rig.sim.device.leds.error.state.mode == "blink"
        code = await rig.code()
        mark = rig.terminal.mark()
        reply = await rig.terminal.command(f"pair {rig.bench.server.url} {code}")
        fingerprint = rig.sim.device.fingerprint  # of the identity key made at this pairing
        assert fingerprint is not None and re.fullmatch(r"(\d{5} ){7}\d{5}", fingerprint)
        assert reply.splitlines() == [
            f"pairing with {rig.bench.server.url} as gate-1 ...",
            f"paired with {rig.bench.server.url} as gate-1",
            "rooms: ops, yard",
            "online in room ops",
            f"fingerprint: {fingerprint}",
            "for encrypted rooms, read it to the server's admin to approve (see 'keys')",
        ]
        status = status_json(await rig.terminal.command("status --json"))
        assert status["paired"] is True and status["link"] == "online"
        assert status["rooms"] == list(ROOMS) and status["room"] == "ops"
        assert status["transmitting"] is False and status["mic_open"] is False
        assert status["server"] == rig.bench.server.url
        assert rig.terminal.since(mark).decode().endswith("pttd[online ops]> ")
        assert rig.sim.device.leds.online.state.mode == "on"

        credential_file = rig.state / CREDENTIAL_FILE
        assert stat.S_IMODE(credential_file.stat().st_mode) == 0o600
        token = Store(rig.state).credential().auth_token  # type: ignore[union-attr]
        text = await rig.terminal.command("status")
        assert "paired:       yes" in text and "link:         online" in text
        assert f"version:      {__version__}" in text and "audio:        simulated" in text

        # The code shows only as typed (the terminal's echo); no reply, log or status has it.
        transcript = rig.terminal.since(mark).decode()
        echo_line = f"pair {rig.bench.server.url} {code}\r\n"
        assert transcript.count(code) == 1 and echo_line in transcript
        secrets_absent(transcript.replace(echo_line, ""), code, token)
        secrets_absent(rig.terminal.transcript.replace(echo_line.encode(), b""), code, token)
        secrets_absent("\n".join(rig.logs.lines()), code, token)
        secrets_absent(caplog_debug.text, code, token)
        assert "credential for gate-1 saved" in "\n".join(rig.logs.lines())


async def test_pair_with_the_qr_link_and_a_masked_code(tmp_path: Path, caplog_debug) -> None:
    async with console_rig(tmp_path) as rig:
        url = rig.bench.server.url
        code = await rig.code(["yard"])
        reply = await rig.terminal.command(f"pair {pairing_link(code, url)}")
        assert f"paired with {url} as gate-1" in reply and "online in room yard" in reply
        assert "unpaired" in await rig.terminal.command("unpair")
        assert Store(rig.state).settings().room is None  # unpaired: no room kept

        # Typed at the question, the code is echoed as stars: it is nowhere in the transcript.
        mark = rig.terminal.mark()
        assert await rig.terminal.answer(f"pair {url}") == f"pairing with {url}"
        assert rig.terminal.since(mark).endswith(b"pairing code: ")
        code = await rig.code()
        reply = await rig.terminal.command(code)
        assert "*" * len(code) + "\r\n" in rig.terminal.since(mark).decode()
        assert "online in room ops" in reply  # the new pairing's first room
        token = rig.sim.device.store.credential().auth_token  # type: ignore[union-attr]
        secrets_absent(rig.terminal.since(mark), code, token)
        secrets_absent(caplog_debug.text, code, token)


async def test_pair_with_a_link_and_the_configured_server(tmp_path: Path) -> None:
    """A link without a server (or a bare code) pairs with the configured server.url."""
    async with console_rig(tmp_path) as rig:
        device = rig.sim.device
        url = rig.bench.server.url
        device.config = replace(device.config, server=replace(device.config.server, url=url))
        code = await rig.code()
        reply = await rig.terminal.command(f"pair pttd://pair?code={code}")
        assert "online in room ops" in reply
        await rig.terminal.command("unpair")
        reply = await rig.terminal.command(f"pair {await rig.code()}")
        assert "online in room ops" in reply


async def test_wrong_expired_and_used_codes(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        url = rig.bench.server.url
        wrong = await rig.terminal.command(f"pair {url} AAAA-BBBB-CCCC")
        assert "pairing failed: wrong pairing code" in wrong
        expired = await rig.code(now=time.time() - 3600, ttl=60)
        reply = await rig.terminal.command(f"pair {url} {expired}")
        assert "pairing failed: the pairing code has expired" in reply
        assert reply != wrong
        code, _ = await rig.pair()
        await rig.terminal.command("unpair")
        used = await rig.terminal.command(f"pair {url} {code}")
        assert "already used" in used
        for text in (wrong, reply, used):
            secrets_absent(text, expired, code)
        assert status_json(await rig.terminal.command("status --json"))["link"] == "unpaired"


async def test_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    async with console_rig(tmp_path) as rig:
        url = f"ws://127.0.0.1:{closed_port}"
        reply = await rig.terminal.command(f"pair {url} AAAA-BBBB-CCCC")
        assert reply.splitlines()[-1].startswith(f"pairing failed: server unreachable at {url}")
        assert "Check the address and the network" in reply
        assert "AAAA-BBBB-CCCC" not in reply


async def tls_server(rig, tmp_path: Path) -> tuple[RoomServer, trustme.CA]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    settings = ServerSettings(host="127.0.0.1", port=0, tls_cert=cert_file, tls_key=key_file)
    server = RoomServer(rig.bench.registry, settings)
    await server.start()
    return server, ca


async def test_tls_failure_names_the_certificate(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        server, _ = await tls_server(rig, tmp_path)
        try:
            url = server.url
            code = await rig.code()
            reply = await rig.terminal.command(f"pair {url} {code}")
        finally:
            await server.close()
        assert f"pairing failed: TLS error with {url}" in reply
        assert "certificate" in reply and "server.ca_file" in reply
        assert code not in reply


async def test_tls_works_with_the_ca_configured(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    async with console_rig(tmp_path, ca_file=str(ca_file)) as rig:
        server, ca = await tls_server(rig, tmp_path)
        ca.cert_pem.write_to_path(ca_file)
        try:
            code = await rig.code()
            reply = await rig.terminal.command(f"pair {server.url} {code}")
            assert "online in room ops" in reply
        finally:
            await rig.terminal.command("unpair")
            await server.close()


async def test_unpair_tells_the_server_and_wipes_the_credential(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        await rig.pair()
        assert [d.name for d in rig.bench.registry.list_devices()] == ["gate-1"]
        reply = await rig.terminal.command("unpair")
        assert reply.splitlines() == [
            "unpairing ...",
            "unpaired: the server was told, and the credential is wiped",
        ]
        assert not (rig.state / CREDENTIAL_FILE).exists()
        assert rig.bench.registry.list_devices() == []
        status = status_json(await rig.terminal.command("status --json"))
        assert status["paired"] is False and status["link"] == "unpaired"
        assert status["last_error"] == ""
        assert await rig.terminal.command("unpair") == "unpairing ...\nnot paired: nothing to wipe"
        # The link stays down, no reconnecting with the old token: it has none to log on with.
        assert rig.sim.device.credential is None
        assert rig.sim.device.machine.link is Link.UNPAIRED
        await rig.pair()  # and it pairs again


async def test_unpair_offline_still_wipes(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        await rig.pair()
        await rig.bench.server.close()
        async with asyncio.timeout(TIMEOUT):
            await rig.sim.device.until(lambda m: m.link is not Link.ONLINE)
        reply = await rig.terminal.command("unpair")
        assert "server could not be told" in reply
        assert not (rig.state / CREDENTIAL_FILE).exists()


async def test_a_revoked_device_shows_no_rooms_and_keeps_no_room(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        await rig.pair()
        assert await rig.terminal.command("room yard") == "room yard selected"
        assert Store(rig.state).settings().room == "yard"
        db = rig.bench.registry.path  # `pttd server device revoke`, the admin's command
        revoke = ["server", "device", "revoke", "gate-1", "--db", db]
        assert await asyncio.to_thread(cli.main, revoke) == 0
        async with asyncio.timeout(TIMEOUT):
            await rig.sim.device.until(lambda m: m.link is Link.UNPAIRED)
        status = (await rig.terminal.command("status")).splitlines()
        for row in ("paired:       no", "rooms:        none yet", "room:         none"):
            assert row in status, status
        assert status_json(await rig.terminal.command("status --json"))["rooms"] == []
        assert await rig.terminal.command("rooms") == "no rooms yet (link unpaired)"
        assert Store(rig.state).settings().room is None


async def test_rooms_and_room(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        assert await rig.terminal.command("rooms") == "no rooms yet (link unpaired)"
        await rig.pair()
        assert await rig.terminal.command("rooms") == "* ops\n  yard"
        assert await rig.terminal.command("room yard") == "room yard selected"
        assert rig.terminal.transcript.endswith(b"pttd[online yard]> ")
        assert status_json(await rig.terminal.command("status --json"))["room"] == "yard"
        assert Store(rig.state).settings().room == "yard"
        assert "no room 'cellar'" in await rig.terminal.command("room cellar")


async def test_config_set_get_persisted(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        t = rig.terminal
        assert await t.command("config get talk.mode") == (
            'talk.mode = "hold"\none of hold, toggle, default "hold"'
        )
        reply = await t.command("config set talk.mode toggle")
        assert reply == 'talk.mode = "toggle" (saved; takes effect after a restart)'
        assert 'saved: "toggle"' in await t.command("config get talk.mode")
        assert (await t.command("config set talk.timeout -5")).startswith("not set: talk.timeout")
        assert await t.command("config set audio.volume 35") == (
            "audio.volume = 35 (applied now, and saved)"
        )
        assert rig.sim.device.mixer.volume == 35
        assert "audio.volume = 35" in await t.command("config show audio.")
        settings = Store(rig.state).settings()
        assert settings.values == {"talk.mode": "toggle"} and settings.volume == 35
        assert stat.S_IMODE((rig.state / SETTINGS_FILE).stat().st_mode) == 0o600
        # what the daemon starts with next time
        restarted = with_saved_settings(rig.sim.device.config)
        assert restarted.talk.mode == "toggle"
        assert await t.command("config unset talk.mode") == (
            "talk.mode: saved value removed; the config file's applies after a restart"
        )
        assert with_saved_settings(rig.sim.device.config).talk.mode == "hold"


async def test_audio_test_lights_the_transmit_led_and_closes_after(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        led = rig.sim.device.leds.transmit
        before = len(led.history)
        assert await rig.terminal.command("audio") == "audio devices:\n  simulated"
        reply = await rig.terminal.command("audio test 0.6")
        assert "mic [" in reply and "dBFS" in reply
        assert "audio test done:" in reply and "the microphone works" in reply
        assert [c.mode for c in led.history[before:]] == ["on", "off"]
        assert not rig.sim.device.machine.capture_open and not rig.sim.mic.is_open
        assert rig.sim.device.counters.packets_sent == 0  # nothing went to a server
        assert rig.sim.device.frame_taps == []


async def test_ctrl_c_stops_the_audio_test(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        mark = rig.terminal.mark()
        rig.terminal.write(b"audio test 20\r")
        await rig.terminal.wait_for(b"mic [", mark)
        assert rig.sim.device.leds.transmit.state.mode == "on"
        rig.terminal.write(b"\x03")
        out = await rig.terminal.wait_for(PROMPT, mark)
        assert b"audio test stopped; microphone closed" in out
        assert rig.sim.device.leds.transmit.state.mode == "off"
        assert not rig.sim.mic.is_open


async def test_typing_during_a_command_is_read_after_it(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        mark = rig.terminal.mark()
        rig.terminal.write(b"audio test 0.5\rversion\r")
        out = await rig.terminal.wait_for(b"pttd " + __version__.encode() + b"\r\n", mark)
        assert out.index(b"audio test done") < out.index(b"version\r\n")


async def test_log_shows_recent_lines_without_secrets(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        code, token = await rig.pair()
        logging.getLogger("pttd.test").warning("leak check auth_token=%s code=%s", token, code)
        out = await rig.terminal.command("log 30")
        assert "credential for gate-1 saved" in out
        assert "leak check auth_token=[redacted] code=[redacted]" in out
        secrets_absent(out, code, token)
        assert len((await rig.terminal.command("log 2")).splitlines()) == 2


async def test_pin_flows(tmp_path: Path) -> None:
    async with console_rig(tmp_path, scrypt_n=2**10) as rig:
        t = rig.terminal
        await rig.pair()
        assert await t.answer("pin set") == ""
        assert t.transcript.endswith(b"new PIN: ")
        await t.answer("2468")
        assert t.transcript.endswith(b"the new PIN again: ")
        assert (await t.command("2468")).startswith("PIN set")
        assert b"2468" not in t.transcript  # typed twice, echoed as stars
        pin_file = rig.state / PIN_FILE
        assert stat.S_IMODE(pin_file.stat().st_mode) == 0o600
        assert "2468" not in pin_file.read_text()

        assert await t.command("pin lock") == "locked"
        assert t.transcript.endswith(b"pttd[online ops locked]> ")
        assert await t.command("room yard") == "locked: type 'pin unlock' first"
        assert await t.command("config set talk.mode toggle") == "locked: type 'pin unlock' first"
        assert await t.command("factory-reset") == "locked: type 'pin unlock' first"
        await t.answer("pin unlock")
        wrong = await t.answer("1111")
        assert wrong == "wrong PIN (1 in a row): wait 1 s before the next try"
        assert t.transcript.endswith(b"PIN: ")  # asked again
        assert await t.command("") == "no PIN typed: still locked"
        assert await t.answer("pin unlock") == "wait 1 s before the next try"
        assert t.transcript.endswith(b"PIN: ")
        mark = t.mark()
        t.write(b"\x03")  # Ctrl-C gives up
        assert (await t.wait_for(PROMPT, mark)).startswith(b"^C\r\ncancelled\r\n")
        status = status_json(await t.command("status --json"))
        assert status["lock"] == {
            "pin_set": True,
            "locked": True,
            "wrong_pins": 1,
            "wrong_in_a_row": 1,
        }
        rig.clock.advance(1.0)  # the console's clock: the wait it asked for is over
        await t.answer("pin unlock")
        assert await t.command("2468") == "unlocked"
        assert await t.command("room yard") == "room yard selected"
        await rig.replug()  # a new session starts locked
        assert await rig.terminal.command("room ops") == "locked: type 'pin unlock' first"


async def test_factory_reset_with_confirmation(tmp_path: Path) -> None:
    async with console_rig(tmp_path, scrypt_n=2**10) as rig:
        t = rig.terminal
        await rig.pair()
        await t.command("config set talk.mode toggle")
        await t.command("config set audio.volume 20")
        await t.answer("pin set")
        await t.answer("1357")
        await t.command("1357")
        reply = await t.answer("factory-reset")
        assert "wipes the pairing" in reply
        assert t.transcript.endswith(b"type 'yes' to wipe it all: ")
        assert await t.command("no") == "factory reset cancelled: nothing changed"
        assert (rig.state / CREDENTIAL_FILE).exists()
        await t.answer("factory-reset")
        reply = await t.command("yes")
        assert "factory reset done: unpaired (the server was told)" in reply
        for name in (CREDENTIAL_FILE, SETTINGS_FILE, PIN_FILE):
            assert not (rig.state / name).exists(), name
        assert rig.bench.registry.list_devices() == []
        status = status_json(await t.command("status --json"))
        assert status["link"] == "unpaired" and status["lock"]["pin_set"] is False
        assert status["volume"] == 70


async def test_cable_pulled_and_replugged(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        rig.terminal.write(b"stat")  # half a line when the cable goes
        await rig.replug()
        assert rig.terminal.transcript.startswith(b"\r\npttd ")  # greeted again
        status = status_json(await rig.terminal.command("status --json"))
        assert status["link"] == "unpaired"
        await rig.pair()
        await rig.replug()
        assert status_json(await rig.terminal.command("status --json"))["link"] == "online"


async def test_every_command_answers(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        t = rig.terminal
        lines = {
            "help": "commands (help COMMAND for more):",
            "version": f"pttd {__version__}",
            "status": "link:",
            "status --json": '"mic_open":false',
            "rooms": "no rooms yet",
            "room": "room: none",
            "config show": "talk.mode = ",
            "config get audio.volume": "audio.volume = 70",
            "audio": "simulated",
            "log 5": "",
            "pin": "no PIN set",
            "unpair": "not paired",
            "frobnicate": "unknown command",
        }
        for line, expected in lines.items():
            assert expected in await t.command(line), line
        for name in COMMANDS:
            assert (await t.command(f"help {name}")).startswith("usage: ")
        bye = b"bye (press Enter to start again)\r\n"
        assert await t.command("exit", until=bye) == "bye (press Enter to start again)"
        # No prompt until Enter: a character typed and erased now echoes after anything the
        # exit sent, and nothing comes between.
        mark = t.mark()
        t.write(b"x\x7f")
        await t.wait_for(b"x\b \b", mark)
        assert t.transcript.endswith(bye + b"x\b \b")
        mark = t.mark()
        t.write(b"\r")
        out = await t.wait_for(PROMPT, mark)
        assert b"installer console on gate-1" in out


async def test_noise_on_the_line(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        t = rig.terminal
        for noise, message in [
            (b"sta\x00tus", b"line noise (control characters): line ignored"),
            (b"\xff\xfestatus", b"not UTF-8 text: line ignored"),
            (b"x" * 400, b"line too long (over 256 bytes): ignored"),
        ]:
            mark = t.mark()
            t.write(noise + b"\r")
            out = await t.wait_for(PROMPT, mark)
            assert message in out
        mark = t.mark()
        t.write(b"stat\x1b[D\x1b[Cus\x7f\x7fus\r")  # arrows swallowed, DEL erases
        out = await t.wait_for(PROMPT, mark)
        assert b"link:" in out
        assert status_json(await t.command("status --json"))["link"] == "unpaired"


async def test_daemon_starts_the_console(tmp_path: Path, monkeypatch) -> None:
    """``pttd run``'s serve() starts the console when console.port is set, and closes it."""
    pty = Pty()
    terminal = Terminal(pty)
    config = Config(
        state=StateConfig(dir=str(tmp_path / "state")),
        audio=AudioConfig(backend="sim"),
        console=ConsoleConfig(port=pty.path),
    )
    Store(tmp_path / "state").update_settings(values={"device.name": "from-console"})
    task = asyncio.create_task(run.serve(config))
    try:
        await terminal.wait_for(PROMPT)
        assert b"installer console on from-console" in terminal.transcript
        assert "link:         unpaired" in await terminal.command("status")
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # serve() stops the device on SIGTERM
        await asyncio.wait_for(task, TIMEOUT)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        terminal.close()
        pty.close()
    assert not console_threads()


def test_pairing_link_format_matches_the_server() -> None:
    link = pairing_link("ABCD-EFGH-JKMN", "wss://radio.example:8443")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
    assert query == {"server": ["wss://radio.example:8443"], "code": ["ABCD-EFGH-JKMN"]}

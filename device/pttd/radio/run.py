"""``pttd run --config PATH`` and ``pttd config check``: the daemon on real (or simulated) parts.

Builds the device's parts from the configuration, runs it until SIGTERM/SIGINT, tells systemd
when it is ready and feeds the watchdog while the event loop is alive (when ``NOTIFY_SOCKET`` is
set). On SIGTERM capture closes, the stream stops, the link closes, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

from pttd.errors import ConfigError
from pttd.radio.audio import AudioInput, AudioOutput
from pttd.radio.config import Config, apply_overrides, load_config
from pttd.radio.daemon import Device
from pttd.radio.inputs import build_inputs
from pttd.radio.leds import build_leds
from pttd.radio.store import Store
from pttd.redact import setup_logging
from pttd.sim.audio import ClockedSource, RecordingSink, read_wav, sine

log = logging.getLogger(__name__)


def sd_notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``…) to systemd, if it listens."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify %s failed: %s", state, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half the watchdog period systemd asked for (WATCHDOG_USEC), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6 / 2
    except ValueError:
        return None


def build_audio(config: Config) -> tuple[AudioInput, AudioOutput]:
    a = config.audio
    frame = a.sample_rate * a.frame_ms // 1000
    if a.backend == "sim":
        signal_ = (
            read_wav(a.sim_input, sample_rate=a.sample_rate)
            if a.sim_input
            else sine(440.0, 1.0, sample_rate=a.sample_rate, amplitude=0.3)
        )
        source = ClockedSource(
            signal_, sample_rate=a.sample_rate, frame_samples=frame, at_end="loop"
        )
        # A daemon keeps nothing it "played": no audio is ever stored, not even in memory.
        sink = RecordingSink(sample_rate=a.sample_rate, frame_samples=frame, keep_seconds=0.0)
        return source, sink
    from pttd.radio.audio.capture import SoundDeviceInput  # noqa: PLC0415 - needs PortAudio
    from pttd.radio.audio.playback import SoundDeviceOutput  # noqa: PLC0415

    return (
        SoundDeviceInput(a.input_device, sample_rate=a.sample_rate, frame_samples=frame),
        SoundDeviceOutput(a.output_device, sample_rate=a.sample_rate, frame_samples=frame),
    )


def with_saved_settings(config: Config, store: Store | None = None) -> Config:
    """``config`` with the values saved by the console's ``config set`` laid over it; a saved
    value that no longer checks out is logged and the file's values are used."""
    values = (store or Store(config.state.dir)).settings().values
    if not values:
        return config
    try:
        return apply_overrides(config, values)
    except ConfigError as exc:
        log.error("saved console settings ignored: %s", exc)
        return config


def build_device(config: Config, *, pin_factory: object | None = None) -> Device:
    """The device ``config`` describes, its state directory checked before anything in it is
    read (:meth:`Store.open`: StoreError, one line naming the path, when it cannot be trusted)."""
    store = Store.open(config.state.dir)
    config = with_saved_settings(config, store)
    audio_in, audio_out = build_audio(config)
    return Device(
        config,
        store=store,
        audio_in=audio_in,
        audio_out=audio_out,
        inputs=build_inputs(
            config.ptt, config.buttons, pin_factory=pin_factory, bluetooth=config.bluetooth
        ),
        leds=build_leds(config.leds, pin_factory=pin_factory),
    )


async def serve(config: Config) -> None:
    device = build_device(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, device.stop)
    interval = watchdog_interval()

    async def watchdog(period: float) -> None:
        while True:
            sd_notify("WATCHDOG=1")
            await asyncio.sleep(period)

    if device.config.log.level != config.log.level:  # set from the console: `config set`
        logging.getLogger().setLevel(device.config.log.level)
    feeder = asyncio.create_task(watchdog(interval)) if interval else None
    console = None
    if device.config.console.port:  # the installer console; its modules (and pyserial) only then
        from pttd.radio.console.device_backend import build_console  # noqa: PLC0415

        console = build_console(device)
    try:
        if console is not None:
            await console.start()
        await device.run(ready=lambda: sd_notify("READY=1\nSTATUS=running"))
    finally:
        sd_notify("STOPPING=1")
        if feeder is not None:
            feeder.cancel()
        if console is not None:
            await console.close()


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the device daemon")
    run.add_argument("--config", type=Path, required=True, help="TOML configuration file")
    run.set_defaults(func=cmd_run)

    config = sub.add_parser("config", help="configuration file tools")
    csub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check = csub.add_parser("check", help="validate a configuration file, naming each bad key")
    check.add_argument("--config", type=Path, required=True)
    check.set_defaults(func=cmd_config_check)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    setup_logging(config.log.level)
    asyncio.run(serve(config))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # raises ConfigError naming every bad key
    ptts = ", ".join(p.kind for p in config.ptt) or "none"
    print(f"{args.config}: OK (audio {config.audio.backend}, PTT inputs: {ptts})")
    return 0

"""A simulated button set, pressed and released from code on any thread (the demo, tests)."""

from __future__ import annotations

from pttd.radio.inputs import Button, EdgeHandler, EdgeSink


class SimulatedButton:
    """Buttons pressed by calling :meth:`press`/:meth:`release`, thread-safe.

    Calls before :meth:`start` or after :meth:`close` are ignored; pressing a held button
    again is not a second edge. ``close()`` releases whatever is held.
    """

    def __init__(self, source: str = "sim") -> None:
        self._source = source
        self._sink = EdgeSink(source)

    @property
    def name(self) -> str:
        return self._source

    async def start(self, handler: EdgeHandler) -> None:
        self._sink.connect(handler)

    def press(self, button: Button = Button.PTT) -> None:
        self._sink.edge(button, True, self._source)

    def release(self, button: Button = Button.PTT) -> None:
        self._sink.edge(button, False, self._source)

    def vanish(self) -> None:
        """The device goes away (as an unplugged pedal does): whatever is held is up, and a
        talk it latched on ends. Pressing again is the device back."""
        self._sink.lost(self._source)

    def is_held(self, button: Button = Button.PTT) -> bool:
        return self._sink.is_held(button, self._source)

    async def close(self) -> None:
        self._sink.release_all()
        self._sink.disconnect()

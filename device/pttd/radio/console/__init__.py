"""The installer console: pairing and set-up over a serial line (picocom, screen, minicom, PuTTY).

* :mod:`~pttd.radio.console.editor` — the line editor (bytes in, echo and lines out), sans-I/O;
* :mod:`~pttd.radio.console.interpreter` — the commands (a line in, a reply out), sans-I/O;
* :mod:`~pttd.radio.console.pin` — the optional installer PIN (scrypt hash, back-off);
* :mod:`~pttd.radio.console.serial_console` — the transport: the serial port, threads, the loop;
* :mod:`~pttd.radio.console.device_backend` — the interpreter's view of a running device, and the
  effects (pairing, audio test …) carried out on it.
"""

"""The project's exceptions: one root, a base per layer, leaves that also inherit a builtin."""

from __future__ import annotations


class PttdError(Exception):
    """Root of every error pttd raises on purpose."""


class ProtocolError(PttdError, ValueError):
    """A message that breaks the wire protocol.

    ``error`` is the exact Channel-API error string to send back (``invalid json`` …);
    ``detail`` says, for logs and humans, what exactly was wrong; ``seq`` is the request's
    sequence number when it could be read, so that the answer can echo it.
    """

    def __init__(self, error: str, detail: str = "", seq: int | None = None) -> None:
        super().__init__(f"{error}: {detail}" if detail else error)
        self.error = error
        self.detail = detail
        self.seq = seq


class ConfigError(PttdError, ValueError):
    """A configuration file or value that cannot be used; the message names the key."""


class RegistryError(PttdError):
    """Base for the room server's registry (SQLite) errors."""


class NotFound(RegistryError, LookupError):
    """A room, user or device that does not exist."""


class AlreadyExists(RegistryError, ValueError):
    """A room, user or device name that is taken."""


class InvalidName(RegistryError, ValueError):
    """A room, user or device name that cannot be used; the message says what is wrong with it."""


class InvalidArgument(RegistryError, ValueError):
    """A value the registry refuses (an empty password, a pairing code for no room…)."""


class PairingError(RegistryError, PermissionError):
    """A pairing code that is wrong, expired, used, or tried too often.

    ``reason`` is the exact protocol reason string (``invalid code``, ``expired code``,
    ``used code`` …) to answer the device with; ``detail`` is for logs and humans and
    never contains the code itself.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ServerStartError(PttdError, OSError):
    """The room server cannot start: the address is in use or cannot be resolved, the TLS
    certificate or key cannot be used. The message names the address or the files."""


class AudioError(PttdError):
    """Base for the device's audio path: devices, streams, codec."""


class AudioDeviceError(AudioError, LookupError):
    """An audio device that does not exist or cannot be used as asked (no input channels, a sample
    rate it does not support…); the message lists the devices there are."""


class AudioStreamError(AudioError, OSError):
    """An audio stream that PortAudio could not open or start (device unplugged, busy…)."""


class AudioConfigError(AudioError, ConfigError):
    """An audio setting that cannot be used (an Opus frame size, a bitrate…); names the field.

    Also a :class:`ConfigError`, so that whoever loads the configuration catches it with the rest.
    """


class CodecError(AudioError, ValueError):
    """An Opus frame or packet that cannot be encoded or decoded (a malformed packet, a frame
    of the wrong length); the stream goes on without it."""


class HardwareError(PttdError):
    """Base for the device's hardware adapters: buttons, input devices, serial accessories, LEDs."""


class InputError(HardwareError, OSError):
    """A button, input device or serial accessory that cannot be used.

    The message names the pin, device or port and the function it was meant for
    (``PTT button on GPIO 17: pin in use …``).
    """


class LedError(HardwareError, OSError):
    """An LED pin that cannot be claimed; the message names the pin and the LED's function."""


class StoreError(PttdError, OSError):
    """Persisted device state (credential, settings) that cannot be read or saved; names the file.
    A failed save leaves the old state intact."""


class LinkError(PttdError):
    """Base for the device's link to the room server."""


class PairingFailed(LinkError):
    """Pairing did not work. ``reason`` is one of ``invalid code``, ``expired code``,
    ``used code``, ``rate limited``, ``unreachable``, ``tls``, ``refused``; the message says it
    for humans."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

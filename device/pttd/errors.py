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

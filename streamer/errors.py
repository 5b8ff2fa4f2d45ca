"""The exceptions a user can act on, one per kind of failure.

Every message is one line that says what is wrong and where; the CLI prints it
without a traceback and carries on with the next item where it can.

    StreamerError
    ├── AudioError      a file or buffer that is not usable audio
    ├── DataError       a training folder that cannot make a bank
    ├── BankError       a bank file that is corrupt, foreign or too new
    ├── TickError       price data that cannot be decoded
    ├── ConfigError     a setting or flag that makes no sense
    ├── DeviceError     PortAudio or the requested device is missing
    ├── ProtocolError   a wire message that breaks the protocol
    └── StateError      a saved state (checkpoint) that is corrupt, foreign or does not fit
"""

from __future__ import annotations


class StreamerError(Exception):
    """Base class: a problem in the user's input or setup, reported as one line."""


class AudioError(StreamerError):
    """Audio that cannot be read or used (empty, not WAV, truncated, NaN, too low a rate)."""


class DataError(StreamerError):
    """A training data folder that cannot make a bank (missing classes, too few files)."""


class BankError(StreamerError):
    """A bank file that is corrupt, truncated, foreign or written by a newer version."""


class TickError(StreamerError):
    """Price data that cannot be decoded (no price column, too few rows, bad values)."""


class ConfigError(StreamerError):
    """A configuration value or flag combination that makes no sense."""


class DeviceError(StreamerError):
    """PortAudio, or the requested audio device, is not available."""


class ProtocolError(StreamerError):
    """A message on the wire that does not follow docs/protocol.md."""


class StateError(StreamerError):
    """A state directory or checkpoint file that is corrupt, foreign, or for other settings."""


__all__ = [
    "AudioError",
    "BankError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "ProtocolError",
    "StateError",
    "StreamerError",
    "TickError",
]

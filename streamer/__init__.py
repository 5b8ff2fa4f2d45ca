"""streamer: a streaming real-time recognizer service.

Audio and price ticks stream in; words (per-word HMM bank) and market regimes
(online Gaussian-HMM filter) stream out over ZeroMQ. See README.md.
"""

from streamer.errors import (
    AudioError,
    BankError,
    ConfigError,
    DataError,
    DeviceError,
    ProtocolError,
    StreamerError,
    TickError,
)

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "BankError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "ProtocolError",
    "StreamerError",
    "TickError",
    "__version__",
]

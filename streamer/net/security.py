"""Optional CURVE encryption and authentication (ZeroMQ's CurveZMQ, through `zmq.auth`).

Off by default: on loopback nobody else can listen. Turned on, every socket the
service binds (publisher, snapshot, tick feed) is a CURVE server holding the
server's secret key, and a ZAP handler (`zmq.auth.asyncio.AsyncioAuthenticator`)
admits only clients whose public key is a certificate file in the allow-list
folder. A client that is not listed fails the handshake and receives nothing;
ZeroMQ retries it quietly, so the server logs nothing either.

Keys are made by `streamer keys` (`zmq.auth.create_certificates`): ``NAME.key``
(public, to give out and to drop into an allow-list folder) and
``NAME.key_secret`` (keep it private).

Why a registry of authenticators: ZAP is one handler per ZeroMQ context (it binds
``inproc://zeromq.zap.01``), while several sockets of one context (publisher,
snapshot, feed) use it. And a CURVE server with *no* handler lets everyone in,
so every server socket here holds a reference to its context's handler for as
long as it is open.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from streamer.errors import ConfigError

log = logging.getLogger(__name__)


def create_keypair(folder: str | Path, name: str, *, force: bool = False) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret in `folder`; (public, secret) paths."""
    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CURVE support")
    d = Path(folder)
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"key name {name!r}: use a plain file name")
    public, secret = d / f"{name}.key", d / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise ConfigError(f"{public} or {secret} exists; pass --force to replace it")
    try:
        d.mkdir(parents=True, exist_ok=True)
        pub, sec = zmq.auth.create_certificates(d, name)
        Path(sec).chmod(0o600)
    except OSError as e:
        raise ConfigError(f"cannot write keys in {d}: {e}") from None
    return Path(pub), Path(sec)


def load_keys(path: str | Path, *, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) z85 keys from a certificate file; ConfigError if unusable."""
    p = Path(path)
    try:
        public, sec = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p}: not a readable certificate ({e})") from None
    if not public or len(public) != 40:
        raise ConfigError(f"{p}: no public key in it")
    if secret and (not sec or len(sec) != 40):
        raise ConfigError(f"{p}: no secret key in it (give the NAME.key_secret file)")
    return public, sec


@dataclass
class CurveServer:
    """Server side: our secret certificate and the folder of client public keys let in."""

    secret_file: Path
    allow_dir: Path
    public: bytes = field(init=False, repr=False)
    secret: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.secret_file = Path(self.secret_file)
        self.allow_dir = Path(self.allow_dir)
        public, secret = load_keys(self.secret_file, secret=True)
        self.public, self.secret = public, secret or b""
        if not self.allow_dir.is_dir():
            raise ConfigError(f"allow-list folder {self.allow_dir} does not exist")
        if not self.client_keys():
            log.warning(
                "allow-list %s holds no *.key files: no client can connect yet", self.allow_dir
            )

    def client_keys(self) -> list[Path]:
        return sorted(self.allow_dir.glob("*.key"))

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make `sock` a CURVE server (before it binds)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True


@dataclass
class CurveClient:
    """Client side: our secret certificate and the server's public key."""

    secret_file: Path
    server_public_file: Path
    public: bytes = field(init=False, repr=False)
    secret: bytes = field(init=False, repr=False)
    server_key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        public, secret = load_keys(self.secret_file, secret=True)
        self.public, self.secret = public, secret or b""
        self.server_key, _ = load_keys(self.server_public_file, secret=False)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make `sock` a CURVE client of the server (before it connects)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_key


class _Auth:
    """One running ZAP handler for a context, shared by reference count."""

    def __init__(self, ctx: zmq.Context[Any], server: CurveServer) -> None:
        self.allow_dir = server.allow_dir
        self.auth = AsyncioAuthenticator(ctx)
        self.auth.start()
        self.users = 0
        self._seen: tuple[tuple[str, float], ...] = ()
        self.reload()

    def reload(self) -> bool:
        """Re-read the allow-list folder if it changed (keys can be added or removed live)."""
        try:
            seen = tuple((p.name, p.stat().st_mtime) for p in self.allow_dir.glob("*.key"))
        except OSError:
            seen = ()
        if seen == self._seen:
            return False
        self._seen = seen
        self.auth.configure_curve(domain="*", location=str(self.allow_dir))
        log.info("CURVE allow-list %s: %d client keys", self.allow_dir, len(seen))
        return True


_AUTHS: weakref.WeakKeyDictionary[zmq.Context[Any], _Auth] = weakref.WeakKeyDictionary()


def acquire_auth(ctx: zmq.Context[Any], server: CurveServer) -> _Auth:
    """Start (or share) the ZAP handler of `ctx`; must run inside the event loop."""
    a = _AUTHS.get(ctx)
    if a is None:
        a = _AUTHS[ctx] = _Auth(ctx, server)
    elif a.allow_dir.resolve() != server.allow_dir.resolve():
        raise ConfigError(
            f"one ZeroMQ context, two allow-lists ({a.allow_dir}, {server.allow_dir})"
        )
    a.users += 1
    return a


def release_auth(ctx: zmq.Context[Any]) -> None:
    """Drop one reference; the handler stops with the last one."""
    a = _AUTHS.get(ctx)
    if a is None:
        return
    a.users -= 1
    if a.users <= 0:
        a.auth.stop()
        del _AUTHS[ctx]


__all__ = [
    "CurveClient",
    "CurveServer",
    "acquire_auth",
    "create_keypair",
    "load_keys",
    "release_auth",
]

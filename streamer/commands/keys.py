"""`streamer keys [DIR] [--name NAME]`: a CURVE key pair for the server or a client.

Writes ``NAME.key`` (the public key: give it out; a client's goes into the
server's `--curve-allow` folder, the server's to clients as `--curve-server`)
and ``NAME.key_secret`` (private, mode 600: `--curve-secret` of its owner).
"""

from __future__ import annotations

import argparse

from streamer.net.security import create_keypair

NAME = "keys"
HELP = "make a CURVE key pair (NAME.key public, NAME.key_secret private)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", nargs="?", default=".", metavar="DIR", help="where (default: here)")
    p.add_argument("--name", default="server", help="file name stem (default: server)")
    p.add_argument("--force", action="store_true", help="replace existing files")


def run(args: argparse.Namespace) -> int:
    public, secret = create_keypair(args.folder, args.name, force=args.force)
    print(f"public key: {public}")
    print(f"secret key: {secret}")
    return 0

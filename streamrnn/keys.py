"""CURVE keys: key pairs in ZeroMQ's certificate files (`NAME.key` public, `NAME.key_secret`
secret), a client's keys put on its socket, and the service's side: its own key on every bound
socket and a ZAP authenticator that lets in only the public keys found in a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth


class KeyFileError(ValueError):
    """A key file or folder that cannot be used; the message names it."""


def make_key_pair(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret into `folder` (made if missing); refuses to overwrite."""
    folder = Path(folder)
    if (folder / f"{name}.key_secret").exists() or (folder / f"{name}.key").exists():
        raise KeyFileError(f"{folder / name}.key: a key pair of that name exists already")
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(folder, name)
    return Path(public), Path(secret)


def read_key(path: str | Path, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) of a certificate file; `secret` demands a secret key file."""
    try:
        public_key, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a ZeroMQ key file ({exc})") from None
    if secret and not secret_key:
        raise KeyFileError(f"{path}: holds no secret key (give the .key_secret file)")
    return public_key, secret_key


@dataclass(frozen=True)
class ClientKeys:
    """What a client needs: the service's public key and its own key pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, server_key: str | Path, key: str | Path) -> ClientKeys:
        server_public, _ = read_key(server_key, secret=False)
        public, secret = read_key(key, secret=True)
        assert secret is not None  # read_key demands it
        return cls(server_public, public, secret)

    def apply(self, socket: zmq.Socket) -> None:
        """Make `socket` (before it connects) a CURVE client of the service."""
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret


def client_keys(server_key: str | None, key: str | None) -> ClientKeys | None:
    """The client keys given as --server-key and --key (both or neither)."""
    if not server_key and not key:
        return None
    if not (server_key and key):
        raise KeyFileError("CURVE needs both --server-key (the service's .key) and --key (your .key_secret)")
    return ClientKeys.load(server_key, key)


class ServerKeys:
    """The service's key pair and the folder of client public keys it lets in (ZAP)."""

    def __init__(self, context: zmq.Context, secret_key: str | Path, clients: str | Path):
        self.public, secret = read_key(secret_key, secret=True)
        assert secret is not None
        self.secret, self.clients = secret, Path(clients)
        self.allowed = count_client_keys(self.clients)
        from zmq.auth.thread import ThreadAuthenticator  # asyncio and ssl: only when CURVE is used

        self._authenticator = ThreadAuthenticator(context)
        self._authenticator.start()
        self._authenticator.configure_curve(domain="*", location=str(self.clients))

    def reload_clients(self) -> int:
        """Read the client folder again (SIGHUP); the number of keys now allowed."""
        self.allowed = count_client_keys(self.clients)
        self._authenticator.configure_curve(domain="*", location=str(self.clients))
        return self.allowed

    def apply(self, socket: zmq.Socket) -> None:
        """Make `socket` (before it binds) a CURVE server that asks ZAP about each client."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def close(self) -> None:
        self._authenticator.stop()


def count_client_keys(folder: Path) -> int:
    """How many public keys (*.key) a client folder holds; a missing folder is an error."""
    if not folder.is_dir():
        raise KeyFileError(f"{folder}: no such folder of client public keys")
    return len(list(folder.glob("*.key")))

"""CURVE keys: key pairs in ZeroMQ's certificate files (`NAME.key` public, `NAME.key_secret`
secret), a client's keys put on its socket, and the service's side: its own key on every bound
socket and a ZAP authenticator that lets in only the public keys found in a folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth


class KeyFileError(ValueError):
    """A key file or folder that cannot be used; the message names it."""


def make_key_pair(folder: str | Path, name: str, allow: str | Path | None = None) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret (readable by its owner only) into `folder` (made if
    missing); refuses to overwrite. `allow`: also copy the public key into that folder of client
    keys a service lets in."""
    folder = Path(folder)
    if (folder / f"{name}.key_secret").exists() or (folder / f"{name}.key").exists():
        raise KeyFileError(f"{folder / name}.key: a key pair of that name exists already")
    if allow and (Path(allow) / f"{name}.key").exists():
        raise KeyFileError(f"{Path(allow) / name}.key: a client key of that name is allowed already")
    if allow and Path(allow).resolve() == folder.resolve():
        raise KeyFileError(f"{folder}: the secret key must not lie in the folder of allowed client keys")
    folder.mkdir(parents=True, exist_ok=True)
    mask = os.umask(0o077)  # the secret key is never readable by others, not even for a moment
    try:
        public, secret = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(mask)
    Path(public).chmod(0o644)
    if allow:
        Path(allow).mkdir(parents=True, exist_ok=True)
        (Path(allow) / f"{name}.key").write_bytes(Path(public).read_bytes())
    return Path(public), Path(secret)


def read_key(path: str | Path, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) of a certificate file; `secret` demands a secret key file, and one that
    other users may read is refused (as ssh refuses such a key)."""
    try:
        public_key, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a ZeroMQ key file ({exc})") from None
    if secret and not secret_key:
        raise KeyFileError(f"{path}: holds no secret key (give the .key_secret file)")
    if secret and (mode := Path(path).stat().st_mode & 0o777) & 0o007:
        raise KeyFileError(f"{path}: a secret key that other users can read (mode {mode:o}): chmod 600 {path}")
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
    """The service's key pair and the folder of client public keys it lets in (ZAP). Each client
    refused is reported to `refused(counter, message)` (from the authenticator's thread)."""

    def __init__(
        self,
        context: zmq.Context,
        secret_key: str | Path,
        clients: str | Path,
        refused: Callable[[str, str], None] = lambda counter, message: None,
    ):
        self.public, secret = read_key(secret_key, secret=True)
        assert secret is not None
        self.secret, self.clients, self._refused = secret, Path(clients), refused
        self._keys = client_keys_in(self.clients)
        from zmq.auth.thread import ThreadAuthenticator  # asyncio and ssl: only when CURVE is used

        class Authenticator(ThreadAuthenticator):
            """Keeps the address of the request being answered, for the refusal's log line."""

            address = ""

            async def handle_zap_message(self, msg: list[bytes]) -> None:
                self.address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
                await super().handle_zap_message(msg)

        self._authenticator = Authenticator(context)
        self._authenticator.start()
        self._authenticator.configure_curve_callback(domain="*", credentials_provider=self)

    @property
    def allowed(self) -> int:
        return len(self._keys)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP's question for each new connection: is this client's public key (Z85) let in?"""
        if key in self._keys:
            return True
        where = self._authenticator.address or "a local socket"
        message = f"CURVE: client key {key[:8].decode()}... from {where} refused (not in {self.clients})"
        self._refused("curve_refused", message)
        return False

    def read_clients(self) -> frozenset[bytes]:
        """The client folder read again (a reload); KeyFileError names a file that is no key."""
        return client_keys_in(self.clients)

    def allow(self, keys: frozenset[bytes]) -> int:
        """Let in these keys from now on; how many that were let in before no longer are."""
        revoked = len(self._keys - keys)
        self._keys = keys
        return revoked

    def apply(self, socket: zmq.Socket) -> None:
        """Make `socket` (before it binds) a CURVE server that asks ZAP about each client."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def close(self) -> None:
        self._authenticator.stop()


def client_keys_in(folder: Path) -> frozenset[bytes]:
    """The public keys (Z85 text, as the files hold them and ZAP asks) of the `*.key` files in a
    folder of allowed clients. A missing folder, a file that is no key, or a secret key lying
    among them is an error naming it."""
    if not folder.is_dir():
        raise KeyFileError(f"{folder}: no such folder of client public keys")
    if secrets := sorted(folder.glob("*.key_secret")):
        raise KeyFileError(f"{secrets[0]}: a secret key in the folder of allowed client keys: move it out")
    return frozenset(read_key(path, secret=False)[0] for path in sorted(folder.glob("*.key")))

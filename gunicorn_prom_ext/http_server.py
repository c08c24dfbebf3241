"""A small HTTP(S) server for the master's metrics port that nobody can exhaust.

One accept thread, one thread per connection, and these bounds:

- at most ``max_connections`` connections at once, and at most half of them from one
  client address: past either, the connection (of that address, for the second) that has
  been waiting longest for its request is closed to make room (a scraper sends its
  request at once, so idle connections are the ones to go); if every one is busy being
  answered, the new one is closed instead. One client reading its answers slowly can
  hold half the connections, never the ones a scraper or a health probe needs;
- ``header_timeout`` seconds from accept to the end of the request's head (TLS handshake
  included): a client that connects and says nothing, or trickles bytes, is cut off;
- ``response_timeout`` seconds from there to the end of the answer;
- ``io_timeout`` seconds for any single read or write.

The gunicorn master forks workers while this server runs. A fork copies every open
descriptor, so without care each worker would inherit the listening socket and every
connection open at that moment (thousands, under a flood, enough to break a worker's
``select()``). Accepting happens under a lock that fork waits for, and the child closes
its copies right after the fork.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .forks import act_around_forks
from .natives import Natives, natives

ACCEPT_BATCH = 64  # connections taken per wake-up, so a burst cannot starve the reaper
TICK = 0.25  # how often deadlines are checked (and stop() is noticed at the latest)
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s


@dataclass(frozen=True)
class Limits:
    max_connections: int = 32
    header_timeout: float = 5.0
    io_timeout: float = 10.0
    response_timeout: float = 30.0

    @property
    def per_address(self) -> int:
        """Connections one client may hold: half, except where half would be 1."""
        return self.max_connections if self.max_connections < 4 else self.max_connections // 2


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    fd: int
    address: Any
    deadline: float  # monotonic time by which the request's head (then answer) must be done
    response_timeout: float = 30.0
    head_done: bool = False
    # Shut down by a limit: no longer counted, but still listed (and its descriptor
    # still open) until its thread closes it, so a fork meanwhile closes its copy too.
    closing: bool = False
    accepted: float = field(default_factory=time.monotonic)
    client: str = ""  # whose share of the connections it counts in (client_of)

    def answering(self) -> None:
        """The request's head is in: from now on it is being answered, within its time."""
        # The deadline first: the reaper, reading both meanwhile, must never see the head
        # done with the head's deadline, which may be about to pass.
        self.deadline = time.monotonic() + self.response_timeout
        self.head_done = True


def client_of(address: object) -> str:
    """Who a connection counts as, for the share one client may hold: its IP address, an
    IPv6 client by its /64 network (one host often has a whole /64 to pick from)."""
    host = address[0] if isinstance(address, tuple) and address else address
    try:
        ip = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # a dual-stack socket's IPv4 client
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


# What a connection's thread runs once the connection is accepted (and TLS set up).
Handle = Callable[[Connection], None]
# Called with a kind ("endpoint_connections") whenever a limit closes a connection.
OnLimit = Callable[[str], None]


class BoundedServer:
    def __init__(
        self,
        address: tuple[Any, ...],
        family: int,
        handle: Handle,
        limits: Limits,
        ssl_context: ssl.SSLContext | None = None,
        on_limit: OnLimit | None = None,
        real: Natives | None = None,
    ) -> None:
        """``real``: the modules to serve with (natives.py: never eventlet's green ones)."""
        self._real = real = real or natives()
        self._handle = handle
        self.limits = limits
        self._ssl_context = ssl_context
        self._on_limit = on_limit
        self._lock = real.threading.Lock()  # guards _connections
        self._fork_lock = real.threading.Lock()  # held while a descriptor is being made
        self._connections: dict[int, Connection] = {}
        self._stopping = real.threading.Event()
        self._owner = os.getpid()
        self.socket = real.socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.socket.bind(address)
            self.socket.listen(128)
            self.socket.setblocking(False)
        except BaseException:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        act_around_forks(self)

    # -- lifecycle --------------------------------------------------------------------------

    def serve_forever(self) -> None:
        poll = self._real.select.poll()  # one descriptor: poll, with no fd-number limit
        poll.register(self.socket, self._real.select.POLLIN)
        while not self._stopping.is_set():
            ready = poll.poll(TICK * 1000)
            self._reap(time.monotonic())
            if ready and not self._stopping.is_set():
                self._accept_some()

    def stop(self) -> None:
        """Stop accepting (in every process: shutdown, not close), close every connection."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RD)
        with self._lock:
            for connection in list(self._connections.values()):
                self._shutdown(connection.fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.close()

    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    # -- accept thread ----------------------------------------------------------------------

    def _accept_some(self) -> None:
        for _ in range(ACCEPT_BATCH):
            starved = False
            with self._fork_lock:
                try:
                    sock, address = self.socket.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    if self._stopping.is_set():
                        return  # stop() shut the listening socket down meanwhile
                    if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                        continue
                    if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        raise
                    starved = True
                else:
                    limits = self.limits
                    connection = Connection(
                        sock, sock.fileno(), address, time.monotonic() + limits.header_timeout,
                        limits.response_timeout, client=client_of(address),
                    )  # fmt: skip
                    admitted = self._admit(connection)
                    if not admitted:  # closed under the lock: a fork never keeps it open
                        with contextlib.suppress(OSError):
                            sock.close()
            if starved:
                self._limit()
                # The queue stays readable: do not spin. Outside the fork lock, which
                # gunicorn's worker spawning waits for.
                self._real.time.sleep(TICK)
                return
            if not admitted:
                self._limit()
                continue
            try:
                self._real.threading.Thread(
                    target=self._serve, args=(connection,),
                    name="gunicorn-prom-ext-metrics-conn", daemon=True,
                ).start()  # fmt: skip
            except RuntimeError:  # no more threads: let the connection go
                with self._fork_lock:
                    self._forget(connection)
                    with contextlib.suppress(OSError):
                        sock.close()
                self._limit()

    def _admit(self, new: Connection) -> bool:
        with self._lock:
            counted = [c for c in self._connections.values() if not c.closing]
            same_host = [c for c in counted if c.client == new.client]
            if len(same_host) >= self.limits.per_address:
                full: list[Connection] | None = same_host
            elif len(counted) >= self.limits.max_connections:
                full = counted
            else:
                full = None
            if full is not None and not self._make_room(full):
                return False
            self._connections[new.fd] = new
            return True

    def _make_room(self, among: list[Connection]) -> bool:
        """With _lock held: close the one of these that has waited longest for its
        request's head; False if every one is being answered."""
        waiting = [c for c in among if not c.head_done]
        if not waiting:
            return False
        self._close_by_limit(min(waiting, key=lambda c: c.accepted))
        self._limit()
        return True

    def _reap(self, now: float) -> None:
        with self._lock:
            expired = [c for c in self._connections.values()
                       if not c.closing and c.deadline <= now]  # fmt: skip
            for connection in expired:
                self._close_by_limit(connection)
        for _ in expired:
            self._limit()

    def _close_by_limit(self, connection: Connection) -> None:
        """With _lock held: wake its thread, which closes it; it stops counting now."""
        connection.closing = True
        self._shutdown(connection.fd, abort=True)

    def _limit(self) -> None:
        if self._on_limit is not None:
            with contextlib.suppress(Exception):
                self._on_limit("endpoint_connections")

    # -- connection threads -----------------------------------------------------------------

    def _serve(self, connection: Connection) -> None:
        sock = connection.sock
        try:
            sock.setblocking(True)
            # The reaper enforces the deadlines; this bounds each read and write.
            sock.settimeout(self.limits.io_timeout)
            if self._ssl_context is not None:
                # The TLS socket takes the descriptor over: swapped under the fork lock,
                # so that a fork always finds the object that owns it in connection.sock.
                # The handshake comes after, so that a failing one does not close the
                # descriptor before this connection is forgotten (its number could be
                # reused by a new connection, which the reaper would then shut down).
                with self._fork_lock:
                    sock = self._ssl_context.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                    connection.sock = sock
                sock.do_handshake()
            self._handle(connection)
        except Exception:
            pass  # resets, handshake failures, timeouts: the client's business
        finally:
            # Forgotten and closed together, under the fork lock: a fork never finds a
            # descriptor open that is no longer listed (the child would keep it).
            with self._fork_lock:
                self._forget(connection)
                with contextlib.suppress(OSError):
                    sock.close()

    def _shutdown(self, fd: int, *, abort: bool = False) -> None:
        """Shut a connection down by descriptor: whichever object owns it (a plain or a
        TLS socket, mid-handshake or not), its thread wakes up and closes it. ``abort``:
        the close resets the connection, dropping what the kernel still holds to send
        (else a slow reader would go on getting megabytes of it after the cut).

        Through a socket object borrowing the descriptor, not a dup() of it: that would
        fail with EMFILE exactly when a flood has taken every descriptor, and a fork in
        the meantime would hand the copy to a worker."""
        with contextlib.suppress(OSError):
            borrowed = self._real.socket.socket(fileno=fd)
            try:
                if abort:
                    borrowed.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
                borrowed.shutdown(socket.SHUT_RDWR)
            finally:
                borrowed.detach()  # the descriptor stays its owner's to close

    def _forget(self, connection: Connection) -> None:
        with self._lock:
            if self._connections.get(connection.fd) is connection:
                del self._connections[connection.fd]

    # -- fork -------------------------------------------------------------------------------

    def before_fork(self) -> None:
        self._fork_lock.acquire()

    def after_fork_in_parent(self) -> None:
        self._fork_lock.release()

    def after_fork_in_child(self) -> None:
        # Only the forking thread exists here: no lock is needed (or safe) but ours.
        self._fork_lock = self._real.threading.Lock()
        self._lock = self._real.threading.Lock()
        if os.getpid() == self._owner:
            return
        self._stopping.set()
        for connection in list(self._connections.values()):
            # close() would not close it while its request handler has file objects open
            # on it (makefile): that is every connection past accept. Detach the socket
            # object (the thread that used it does not exist here), close the descriptor.
            with contextlib.suppress(OSError):
                connection.sock.detach()
            with contextlib.suppress(OSError):
                os.close(connection.fd)
        self._connections.clear()
        with contextlib.suppress(OSError):
            self.socket.close()

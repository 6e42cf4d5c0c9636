"""A unix-socket relay in front of the real Docker engine that a test can cut and restore.

While cut, every connection (open or new) is closed at once: the docker SDK's calls fail for real
(``ConnectionError``), as when the engine restarts or its socket goes away. Restored, calls pass
through to the engine unchanged. Test infrastructure, not a stand-in: the engine does the work.
"""

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path


class DockerRelay:
    def __init__(self, engine_socket: Path, path: Path) -> None:
        self.engine_socket = str(engine_socket)
        self.path = path
        self.url = f"unix://{path}"
        self._cut = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(self.engine_socket)
            with self._lock:
                self._open |= {client, engine}
            for src, dst in ((client, engine), (engine, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(src)
            src.close()


@contextlib.contextmanager
def docker_relay(engine_socket: Path, path: Path) -> Iterator[DockerRelay]:
    relay = DockerRelay(engine_socket, path)
    try:
        yield relay
    finally:
        relay.close()

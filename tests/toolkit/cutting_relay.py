"""A TCP relay in front of the real API that drops a connection mid-response, as a proxy or a
flaky network does: the first ``cuts`` connections are closed once ``after_bytes`` of the answer
have passed; later ones pass through unchanged. It keeps each request's head, so a test sees what
a client sent when it came back (``Last-Event-ID``). Test infrastructure, not a stand-in: the
API answers every request."""

import contextlib
import socket
import threading
from urllib.parse import urlsplit


class CuttingRelay:
    def __init__(self, upstream_url: str, after_bytes: int, cuts: int = 1) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.after_bytes, self.cuts = after_bytes, cuts
        self.heads: list[bytes] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut = self.cuts > 0
                self.cuts -= cut
            threading.Thread(target=self._serve, args=(client, cut), daemon=True).start()

    def _serve(self, client: socket.socket, cut: bool) -> None:
        upstream = socket.create_connection(self.upstream)
        threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(4096):
                if cut and sent + len(data) >= self.after_bytes:
                    client.sendall(data[: max(self.after_bytes - sent, 0)])
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        head = b""
        try:
            while data := client.recv(4096):
                if b"\r\n\r\n" not in head:
                    head += data
                    if b"\r\n\r\n" in head:
                        with self._lock:
                            self.heads.append(head.split(b"\r\n\r\n")[0])
                upstream.sendall(data)
        except OSError:
            pass

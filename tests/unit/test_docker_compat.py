"""The docker-py/requests/urllib3 shim (runtime/docker_compat.py): each internal it relies on is
pinned here against the installed SDK, so an upgrade that moves one fails this module."""

from __future__ import annotations

import http.server
import socket
import struct
import threading
import time

import docker
import requests

from ds01.runtime import docker_compat as compat


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)  # as the exec session holds it: the event loop writes stdin to it
    return a, b


def test_frames_without_tty_are_demultiplexed_even_split_across_reads():
    ours, engine = pair()
    wire = frame(1, b"out-1 ") + frame(2, b"err-1") + frame(0, b"echo") + frame(1, b"x" * 70000)

    def send() -> None:
        for i in range(0, len(wire), 7):  # headers and payloads cut anywhere
            engine.sendall(wire[i:i + 7])
            if i < 64:
                time.sleep(0.001)  # the reader finds the socket empty (EAGAIN) in between
        engine.close()

    t = threading.Thread(target=send)
    t.start()
    got: dict[int, bytes] = {1: b"", 2: b""}
    for stream, data in compat.exec_frames(ours, tty=False):
        got[stream] += data
    t.join()
    assert got[2] == b"err-1"
    assert got[1] == b"out-1 echo" + b"x" * 70000  # stream 0 (stdin echo) counts as stdout


def test_frames_with_tty_are_the_raw_bytes_as_stdout():
    ours, engine = pair()
    engine.sendall(b"\x1b[1mprompt$ \x00\x01\x02\x03\x00\x00\x00\x05")  # no header to decode
    engine.close()
    out = list(compat.exec_frames(ours, tty=True))
    assert {s for s, _ in out} == {compat.STDOUT}
    assert b"".join(d for _, d in out) == b"\x1b[1mprompt$ \x00\x01\x02\x03\x00\x00\x00\x05"


def test_a_quiet_stream_blocks_and_a_shutdown_from_another_thread_ends_it():
    ours, engine = pair()
    got: list = []
    t = threading.Thread(target=lambda: got.extend(compat.exec_frames(ours, tty=True)))
    t.start()
    time.sleep(0.2)
    assert t.is_alive()  # nothing to read on a non-blocking socket is not the end of the stream
    engine.sendall(b"late")
    time.sleep(0.1)
    ours.shutdown(socket.SHUT_RDWR)
    t.join(2)
    assert not t.is_alive() and got == [(1, b"late")]


def test_raw_socket_unwraps_the_socketio_exec_start_returns():
    a, b = socket.socketpair()
    with a, b:
        assert compat.raw_socket(socket.SocketIO(a, "rwb")) is a
        assert compat.raw_socket(a) is a


def test_api_url_is_the_versioned_engine_url():
    api = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
    assert compat.api_url(api, "/build") == "http+docker://localhost/v1.41/build"


class _Chunked(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hold = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        body = b'{"stream": "Step 1/2"}\r\n{"stream": "a'
        for part in (body, b'b"}\r\n{"aux": {"ID": "sha256:1"}}\r\n'):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
        if self.path == "/hold":
            self.hold.wait(10)  # a quiet build step
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *a) -> None:
        pass


def _server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Chunked)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def test_json_stream_decodes_messages_split_across_chunks():
    srv, url = _server()
    try:
        api = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
        resp = requests.get(url + "/", stream=True, timeout=5)
        msgs = list(compat.json_stream(api, resp))
        assert msgs == [{"stream": "Step 1/2"}, {"stream": "ab"}, {"aux": {"ID": "sha256:1"}}]
    finally:
        srv.shutdown()


def test_cut_wakes_a_reader_blocked_on_a_streaming_response():
    srv, url = _server()
    _Chunked.hold.clear()
    try:
        api = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
        resp = requests.get(url + "/hold", stream=True, timeout=None)
        assert isinstance(compat.response_socket(resp), socket.socket)
        got: list = []
        done = threading.Event()

        def read() -> None:
            try:
                for m in compat.json_stream(api, resp):
                    got.append(m)
            except Exception:
                pass
            done.set()

        threading.Thread(target=read, daemon=True).start()
        time.sleep(0.3)
        assert not done.is_set() and len(got) == 3  # waiting for the next chunk
        t0 = time.monotonic()
        compat.cut(resp)
        assert done.wait(3) and time.monotonic() - t0 < 3
    finally:
        _Chunked.hold.set()
        srv.shutdown()


def test_cut_of_a_response_without_a_socket_closes_it():
    class Resp:
        closed = False
        raw = None

        def close(self) -> None:
            self.closed = True

    r = Resp()
    compat.cut(r)
    assert r.closed

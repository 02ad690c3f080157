#!/usr/bin/env python3
"""An HTTP-aware fault proxy for the S3 tests (tests/integration/test_s3_faults.sh).

tests/tools/faultproxy relays bytes and knows nothing of HTTP, so it cannot
aim at one request's body or answer for the server. This one sits between
sesscp and the Ceph RADOS Gateway on 127.0.0.1, parses each request's head
(request line, Content-Length, Expect) in the client-to-server direction and
relays everything else unchanged (the SigV4 signature covers the headers, so
no header is ever touched). Faults apply only to uploads of data: PUT
requests with a body (a part, or a whole small object):

  --corrupt N    xor 0x01 into the middle byte of the body of the first N
                 such PUTs (forwarded: the server sees a body that does not
                 match its Content-MD5 and must answer BadDigest)
  --slowdown N   answer the first N such PUTs itself with S3's
                 "503 SlowDown" (XML body, Connection: close), without
                 forwarding them
  --slowdown-get N  the same for the first N GET requests (downloads)

SIGUSR1 sets every budget to 0: from then on the proxy only relays (a re-run
through the same endpoint, so the same resume journal, goes through clean).

--port-file F gets the listening port once the proxy listens. --log F gets one
line per fault, flushed at once, which the tests count:
    CORRUPT PUT /bucket/key?partNumber=3&uploadId=...
    SLOWDOWN PUT /bucket/key
    SLOWDOWN GET /bucket/key
A request with Transfer-Encoding (not used by sesscp) ends parsing on that
connection: the rest of it is relayed as bytes. Standard library only; it must
not share code with what it tests.
"""
import argparse
import os
import signal
import socket
import sys
import threading

SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                 b'<Message>Please reduce your request rate.</Message></Error>')


class Budget:
    def __init__(self, corrupt, slowdown, slowdown_get, log_path):
        self.lock = threading.Lock()
        self.corrupt, self.slowdown, self.slowdown_get = corrupt, slowdown, slowdown_get
        self.log = open(log_path, "a", buffering=1) if log_path else None

    def take(self, kind):
        with self.lock:
            left = getattr(self, kind)
            if left <= 0:
                return False
            setattr(self, kind, left - 1)
            return True

    def clear(self):
        self.corrupt = self.slowdown = self.slowdown_get = 0  # no lock: a handler must not block

    def record(self, line):
        if self.log:
            with self.lock:
                self.log.write(line + "\n")


def relay(src, dst):
    try:
        while True:
            data = src.recv(1 << 16)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (dst, src):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Client:
    """One client connection: parse request heads c2s, relay bodies and s2c."""

    def __init__(self, conn, target, budget):
        self.conn, self.budget, self.buf = conn, budget, b""
        self.up = socket.create_connection(target)
        threading.Thread(target=relay, args=(self.up, self.conn), daemon=True).start()

    def read_more(self):
        data = self.conn.recv(1 << 16)
        if not data:
            raise EOFError
        self.buf += data

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 1 << 16:
                raise EOFError
            self.read_more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head + b"\r\n\r\n"

    def forward_body(self, length, flip_at, sink=True):
        sent = 0
        while sent < length:
            if not self.buf:
                self.read_more()
            piece, self.buf = self.buf[:length - sent], self.buf[length - sent:]
            if flip_at is not None and sent <= flip_at < sent + len(piece):
                b = bytearray(piece)
                b[flip_at - sent] ^= 0x01
                piece = bytes(b)
            if sink:
                self.up.sendall(piece)
            sent += len(piece)

    def slow_down(self, length, expect):
        if not expect:  # the body is on its way: take it in first
            self.forward_body(length, None, sink=False)
        reply = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: "
                 + str(len(SLOWDOWN_BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + SLOWDOWN_BODY)
        self.conn.sendall(reply)
        # Half-close and read what the client still sends (a body it began
        # before the answer came): closing now would reset the connection,
        # and the client would see "broken pipe" instead of the 503.
        self.conn.shutdown(socket.SHUT_WR)
        self.conn.settimeout(5)
        try:
            while self.conn.recv(1 << 16):
                pass
        except OSError:
            pass

    def serve(self):
        while True:
            head = self.read_head()
            lines = head.decode("latin-1").split("\r\n")
            method, path = (lines[0].split(" ") + ["", ""])[:2]
            fields = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
            length = int(fields.get("content-length", "0"))
            is_upload = method == "PUT" and length > 0
            if (is_upload and self.budget.take("slowdown")) or (method == "GET" and self.budget.take("slowdown_get")):
                self.budget.record("SLOWDOWN " + method + " " + path)
                self.slow_down(length, "100-continue" in fields.get("expect", "").lower())
                return
            flip = None
            if is_upload and self.budget.take("corrupt"):
                self.budget.record("CORRUPT " + method + " " + path)
                flip = length // 2
            self.up.sendall(head)
            if "transfer-encoding" in fields:
                self.up.sendall(self.buf)
                relay(self.conn, self.up)
                return
            self.forward_body(length, flip)

    def run(self):
        try:
            self.serve()
        except (EOFError, OSError, ValueError):
            pass
        for s in (self.conn, self.up):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True, help="HOST:PORT of the server")
    p.add_argument("--port-file", required=True)
    p.add_argument("--log")
    p.add_argument("--corrupt", type=int, default=0)
    p.add_argument("--slowdown", type=int, default=0)
    p.add_argument("--slowdown-get", type=int, default=0)
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    if host not in ("127.0.0.1", "localhost"):
        sys.exit("s3fault: loopback targets only")
    budget = Budget(a.corrupt, a.slowdown, a.slowdown_get, a.log)
    signal.signal(signal.SIGUSR1, lambda *_: budget.clear())
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    with open(a.port_file + ".tmp", "w") as f:
        f.write("%d\n" % lsock.getsockname()[1])
    os.replace(a.port_file + ".tmp", a.port_file)
    while True:
        conn, _ = lsock.accept()
        try:
            c = Client(conn, (host, int(port)), budget)
        except OSError:
            conn.close()
            continue
        threading.Thread(target=c.run, daemon=True).start()


if __name__ == "__main__":
    main()

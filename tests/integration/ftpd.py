#!/usr/bin/env python3
"""A small FTP server for the URL tests (tests/integration/url_lib.sh, start_ftpd).

pyftpdlib (Debian: python3-pyftpdlib) on 127.0.0.1, port 0 (the kernel picks a
free one, written to --port-file once the server listens), passive data ports
on 127.0.0.1 too (kernel-chosen), one user with a password, serving --root.
--rate paces each data connection at that many bytes/s (ThrottledDTPHandler,
with a smoother pacing than its default), so that no download is instantaneous.
--no-rest refuses REST, as servers without restart support do.

--log gets one line per event that the tests check, flushed at once:
    LOGIN user          LOGIN-FAILED user       (never a password)
    SIZE /path          MDTM /path
    REST offset         REST-REFUSED offset
    RETR /path rest=OFFSET
    SENT /path completed=0|1 bytes=N
"""
import argparse
import logging
import os
import sys
import time

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler
from pyftpdlib.servers import FTPServer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True,
                   help="file holding the password (not argv: ps shows argv)")
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--rate", type=int, default=0, help="bytes/s per data connection, 0 = unlimited")
    p.add_argument("--no-rest", action="store_true")
    a = p.parse_args()

    with open(a.password_file, encoding="utf-8") as f:
        password = f.read().strip()
    events = open(a.log, "a", buffering=1, encoding="utf-8")

    def event(line):
        events.write(line + "\n")
        events.flush()

    authorizer = DummyAuthorizer()
    authorizer.add_user(a.user, password, a.root, perm="elr")

    class DTP(ThrottledDTPHandler):
        write_limit = a.rate
        read_limit = 0
        _pace_t0 = None
        _pace_bytes = 0

        # pyftpdlib's own throttle lets write_limit bytes through at once
        # before it sleeps, so a 16 MiB file at 8 MiB/s leaves in a burst.
        # Pace every send instead: never ahead of RATE since the first byte.
        def _throttle_bandwidth(self, len_chunk, max_speed):
            now = time.monotonic()
            if self._pace_t0 is None:
                self._pace_t0 = now
            self._pace_bytes += len_chunk
            ahead = self._pace_bytes / float(max_speed) - (now - self._pace_t0)
            if ahead <= 0.002:
                return

            def unsleep():
                self.add_channel(events=self.ioloop.READ if self.receive else self.ioloop.WRITE)

            self.del_channel()
            self._cancel_throttler()
            self._throttler = self.ioloop.call_later(ahead, unsleep, _errback=self.handle_error)

    class Handler(FTPHandler):
        def on_login(self, username):
            event("LOGIN %s" % username)

        def on_login_failed(self, username, password):
            event("LOGIN-FAILED %s" % username)

        def ftp_SIZE(self, path):
            event("SIZE %s" % self.fs.fs2ftp(path))
            return super().ftp_SIZE(path)

        def ftp_MDTM(self, path):
            event("MDTM %s" % self.fs.fs2ftp(path))
            return super().ftp_MDTM(path)

        def ftp_REST(self, line):
            if a.no_rest:
                event("REST-REFUSED %s" % line)
                self.respond("502 Command not implemented.")
                return
            event("REST %s" % line)
            return super().ftp_REST(line)

        def ftp_RETR(self, file):
            # Logged once the file is open: a test that sees the line may
            # replace the file and know this transfer still reads the old one.
            rest = self._restart_position
            result = super().ftp_RETR(file)
            event("RETR %s rest=%d" % (self.fs.fs2ftp(file), rest))
            return result

        def log_transfer(self, cmd, filename, receive, completed, elapsed, bytes):
            if cmd == "RETR":
                event("SENT %s completed=%d bytes=%d" % (self.fs.fs2ftp(filename), 1 if completed else 0, bytes))

    Handler.authorizer = authorizer
    Handler.dtp_handler = DTP
    Handler.banner = "sesscp test ftpd"
    Handler.permit_foreign_addresses = False
    Handler.use_sendfile = False
    # Wrong passwords are answered at once (the default waits 3 s).
    Handler.auth_failed_timeout = 0

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    server = FTPServer(("127.0.0.1", 0), Handler)
    server.max_cons = 256
    port = server.socket.getsockname()[1]
    tmp = a.port_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("%d\n" % port)
    os.replace(tmp, a.port_file)
    print("ftpd: listening on 127.0.0.1:%d" % port, file=sys.stderr, flush=True)
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    main()

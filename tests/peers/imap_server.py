"""A real IMAP server for tests: Dovecot from Debian's packages, on 127.0.0.1.

Started in the foreground (``dovecot -F``) with a configuration of its own in a temporary
directory: one passwd-file user, a Maildir in the same directory, no TLS, plaintext login
allowed, logs to a file there. Nothing of the system's Dovecot (its config, its service)
is used. Test mail is delivered with IMAP APPEND, as a mail server's delivery agent would
put it in the mailbox.

As root (CI), the mail user is Dovecot's own system user, since Dovecot refuses to give
mail access with UID 0; otherwise everything runs as the current user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from imapclient import IMAPClient

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER = "hearth"
PASSWORD = "hearth-test-password"  # a test fixture's, on loopback only


def available() -> bool:
    return os.path.exists(DOVECOT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DovecotServer:
    """``with DovecotServer() as imap:`` a running server; ``imap.port``, ``imap.append()``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hearth-dovecot-"))
        self.port = 0
        self.host = "127.0.0.1"
        self.user, self.password = USER, PASSWORD
        self._proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        me = pwd.getpwuid(os.geteuid())
        if os.geteuid() == 0:
            mail = pwd.getpwnam("dovecot")
            internal, login = "dovecot", "dovenull"
        else:
            mail, internal, login = me, me.pw_name, me.pw_name
        home = self.dir / "home"
        home.mkdir()
        (self.dir / "run").mkdir()
        (self.dir / "state").mkdir()
        os.chown(home, mail.pw_uid, mail.pw_gid)
        (self.dir / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        if os.geteuid() == 0:
            # Dovecot's auth process runs as its own user and must read the passwd file.
            self.dir.chmod(0o711)
            (self.dir / "passwd").chmod(0o644)
        conf = self.dir / "dovecot.conf"
        conf.write_text(
            f"""
protocols = imap
listen = 127.0.0.1
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
ssl = no
verbose_proctitle = yes
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = {mail.pw_uid}
last_valid_uid = {mail.pw_uid}
mail_location = maildir:{home}/%u/Maildir
passdb {{
  driver = passwd-file
  args = {self.dir}/passwd
}}
userdb {{
  driver = static
  args = uid={mail.pw_uid} gid={mail.pw_gid} home={home}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""
        )
        return conf

    def start(self) -> Self:
        self.port = _free_port()
        conf = self._config()
        with open(self.dir / "stderr.log", "wb") as stderr:
            self._proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # waits for the server, not for time to pass
            if self._proc.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not answer on port {self.port}: {self.log()}")

    def log(self) -> str:
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            path = self.dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)

    def client(self) -> IMAPClient:
        c = IMAPClient(self.host, port=self.port, ssl=False, timeout=10)
        c.login(self.user, self.password)
        return c

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver one message into ``folder``, unread."""
        with self.client() as c:
            c.append(folder, raw)

    def messages(self, folder: str = "INBOX") -> list[tuple[int, tuple[bytes, ...]]]:
        """(uid, flags) of every message in ``folder``."""
        with self.client() as c:
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            flags = c.get_flags(uids) if uids else {}
            return [(uid, tuple(flags[uid])) for uid in sorted(uids)]

    def idling(self) -> bool:
        """Whether a client of this server waits in IDLE (Dovecot shows the command in its
        imap process's title, with verbose_proctitle)."""
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                title = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"dovecot/imap" in title and b"IDLE" in title and f"{os.getpid()}" != proc.name:
                return True
        return False

    def empty(self) -> None:
        """Delete every message in every folder (a test's clean mailbox)."""
        with self.client() as c:
            for _flags, _sep, name in c.list_folders():
                c.select_folder(name)
                uids = c.search("ALL")
                if uids:
                    c.delete_messages(uids)
                    c.expunge()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

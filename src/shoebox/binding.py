"""Where a server may listen: loopback freely, any other address only behind a key or a password.

Checked by each service's `__main__`, by `shoebox up` and `shoebox ui`, before anything heavy
(a model, a data dir) is touched, so a refusal is one line and a non-zero exit.
"""

from __future__ import annotations

import ipaddress
import sys

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for 0.0.0.0, ::, a LAN address or any other name."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def connect_host(host: str) -> str:
    """The address to reach a server bound to `host` from this machine (a wildcard is reached on loopback)."""
    host = host.strip().strip("[]")
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def refusal(host: str, *, secret_set: bool, insecure: bool, what: str, secret: str) -> str | None:
    """The one-line reason not to listen on `host`, or None when it is allowed.

    `what` names the server ("the ML service"), `secret` how to protect it ("SHOEBOX_API_KEY").
    """
    if is_loopback(host) or secret_set or insecure:
        return None
    return (
        f"refusing to listen on {host} without {secret}: {what} would answer anyone who can reach "
        f"this machine. Set {secret}, bind 127.0.0.1, or pass --insecure to accept that."
    )


def warn_if_open(host: str, *, secret_set: bool, what: str, prog: str) -> None:
    """The loud line `--insecure` earns: an unprotected server on a non-loopback address."""
    if not is_loopback(host) and not secret_set:
        print(
            f"{prog}: WARNING: INSECURE: {what} listens on {host} with no key (--insecure): "
            "anyone who can reach this port can use it.",
            file=sys.stderr,
            flush=True,
        )

"""Deterministic generator of a realistic syslog auth log, with the truth about what it wrote.

Mix (share of lines): OpenSSH failure forms (failed password for valid / invalid users, invalid user,
PAM auth failure, connection closed by authenticating user, failed publickey / none, maximum attempts,
not allowed, root refused, too many failures, PAM follow-ups), successes (publickey, password), other
sshd messages, and noise from CRON, systemd-logind, sudo, kernel, postfix. 10% of the sshd lines come
from ``sshd-session`` (OpenSSH >= 9.8). Sources: 3,000 IPv4 attackers and 400 IPv6 attackers in 150 /64s
(Zipf-like weights: a few heavy hitters, a long tail), 10% of IPv4 written IPv4-mapped (``::ffff:``),
40 internal addresses for the successful logins.

For every address the generator counts the failure lines it wrote, split by whether fail2ban's stock
sshd filter (normal mode) treats that form as a failure, so the benchmark can check both parsers.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
BAD_USERS = (
    "admin",
    "test",
    "oracle",
    "ubuntu",
    "user",
    "postgres",
    "git",
    "ftpuser",
    "guest",
    "pi",
    "support",
    "hadoop",
    "nagios",
    "steam",
    "jenkins",
    "www",
    "tomcat",
    "odoo",
    "x y",
    "",
)
GOOD_USERS = ("deploy", "alice", "bob", "backup")

# (weight, form, fail2ban-failure?) — fail2ban 1.0.2 sshd filter, mode normal, publickey=nofail; found by
# running fail2ban-regex over one line of each form. Our parser reports every form below that has an
# address; "ours" counts the same forms as fail2ban so that the two can be compared line for line.
FORMS: tuple[tuple[float, str, bool], ...] = (
    (22.0, "failed_password", True),
    (9.0, "failed_password_invalid", True),
    (10.0, "invalid_user", True),
    (9.0, "pam_auth_failure", False),  # NOFAIL helper in fail2ban; a follow-up for us
    (6.0, "closed_authenticating", False),  # NOFAIL in normal mode; counted per connection by us
    (1.0, "failed_publickey", False),
    (0.5, "failed_none", True),
    (2.0, "max_auth", True),
    (0.5, "not_allowed", True),
    (0.5, "root_refused", True),
    (0.5, "too_many", False),  # fail2ban's filter has no rule for the modern form
    (0.5, "pam_more", False),
    (0.5, "pam_error", True),
    (4.0, "disconnected_invalid", False),
    (4.0, "accepted_publickey", False),
    (1.0, "accepted_password", False),
    (4.0, "received_disconnect", False),
    (1.0, "closed_anonymous", False),
    (3.0, "session_opened", False),
    (6.0, "cron", False),
    (3.0, "systemd", False),
    (2.0, "sudo", False),
    (3.0, "kernel", False),
    (1.5, "postfix", False),
)
FAILURE_FORMS = {
    "failed_password",
    "failed_password_invalid",
    "invalid_user",
    "pam_auth_failure",
    "closed_authenticating",
    "failed_publickey",
    "failed_none",
    "max_auth",
    "not_allowed",
    "root_refused",
    "too_many",
    "pam_more",
    "pam_error",
    "disconnected_invalid",
}
NOISE_FORMS = {"cron", "systemd", "sudo", "kernel", "postfix"}

TEMPLATES: dict[str, str | tuple[str, ...]] = {
    "failed_password": "Failed password for {good} from {ip} port {port} ssh2",
    "failed_password_invalid": "Failed password for invalid user {bad} from {ip} port {port} ssh2",
    "invalid_user": "Invalid user {bad} from {ip} port {port}",
    "pam_auth_failure": "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
    "rhost={ip}{pamuser}",
    "closed_authenticating": "Connection closed by authenticating user {good} {ip} port {port} [preauth]",
    "failed_publickey": "Failed publickey for {good} from {ip} port {port} ssh2: RSA SHA256:{key}",
    "failed_none": "Failed none for invalid user {bad1} from {ip} port {port} ssh2",
    "max_auth": "error: maximum authentication attempts exceeded for {good} from {ip} port {port} ssh2 "
    "[preauth]",
    "not_allowed": "User {good} from {ip} not allowed because not listed in AllowUsers",
    "root_refused": "ROOT LOGIN REFUSED FROM {ip} port {port}",
    "too_many": "Disconnecting authenticating user {good} {ip} port {port}: Too many authentication "
    "failures [preauth]",
    "pam_more": "PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}  "
    "user={good}",
    "pam_error": "error: PAM: Authentication failure for {good} from {ip}",
    "disconnected_invalid": "Disconnected from invalid user {bad1} {ip} port {port} [preauth]",
    "accepted_publickey": "Accepted publickey for {ok} from {legit} port {port} ssh2: ED25519 SHA256:{key}",
    "accepted_password": "Accepted password for {ok} from {legit} port {port} ssh2",
    "received_disconnect": "Received disconnect from {ip} port {port}:11: Bye Bye [preauth]",
    "closed_anonymous": "Connection closed by {ip} port {port} [preauth]",
    "session_opened": "pam_unix(sshd:session): session opened for user {ok}(uid=1000) by (uid=0)",
    "cron": "pam_unix(cron:session): session {cron}",
    "systemd": (
        "New session {session} of user deploy.",
        "Session {session} logged out. Waiting for processes to exit.",
        "Removed session {session}.",
    ),
    "sudo": "  deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; "
    "COMMAND=/usr/bin/systemctl restart nginx{n}",
    "kernel": "[{uptime}] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56 SRC={src} DST=203.0.113.10 LEN=44 "
    "TTL=243 PROTO=TCP SPT={port} DPT=23",
    "postfix": "connect from unknown[{src}]",
}
OTHER_TAGS = {
    "cron": "CRON[{pid}]",
    "systemd": "systemd-logind[412]",
    "sudo": "sudo:",
    "kernel": "kernel",
    "postfix": "postfix/smtpd[{pid}]",
}


@dataclass
class Truth:
    """What was written: failure lines per (normalised) address."""

    lines: int = 0
    f2b_sshd: Counter[str] = field(default_factory=Counter)  # fail2ban forms under the `sshd` tag
    f2b_session: Counter[str] = field(default_factory=Counter)  # the same forms under `sshd-session`
    failures: Counter[str] = field(default_factory=Counter)  # every failure form, any tag
    forms: Counter[str] = field(default_factory=Counter)


def _ipv4(rnd: random.Random) -> str:
    return f"{rnd.randint(1, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"


def generate(path: Path, lines: int, seed: int = 20251124) -> Truth:
    """Write ``lines`` lines to ``path``; return the truth."""
    rnd = random.Random(seed)
    v4 = [_ipv4(rnd) for _ in range(3000)]
    prefixes = [f"2001:db8:{rnd.randint(0, 0xFFFF):x}:{rnd.randint(0, 0xFFFF):x}" for _ in range(150)]
    v6 = [f"{rnd.choice(prefixes)}::{rnd.randint(1, 0xFFFF):x}" for _ in range(400)]
    attackers = v4 + v6
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(attackers))]
    rnd.shuffle(weights)
    legit = [f"10.0.{rnd.randint(0, 3)}.{rnd.randint(2, 250)}" for _ in range(40)]
    form_weights = [f[0] for f in FORMS]
    form_names = [f[1] for f in FORMS]
    f2b_forms = {f[1] for f in FORMS if f[2]}
    truth = Truth()
    t = time.mktime((2025, 11, 20, 0, 0, 0, 0, 0, -1))
    session = 1000
    # pre-draw in bulk: random.choices per line dominates the generator's run time otherwise
    forms = rnd.choices(form_names, form_weights, k=lines)
    sources = rnd.choices(attackers, weights, k=lines)
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as out:
        for i in range(lines):
            t += rnd.expovariate(1 / 0.3)
            lt = time.localtime(t)
            stamp = (
                f"{MONTHS[lt.tm_mon - 1]} {lt.tm_mday:2d} {lt.tm_hour:02d}:{lt.tm_min:02d}:{lt.tm_sec:02d}"
            )
            form = forms[i]
            ip = sources[i]
            shown = f"::ffff:{ip}" if ":" not in ip and rnd.random() < 0.1 else ip
            # one process per connection, pids increasing (no reuse within the file): fail2ban joins the
            # lines of one pid (its multi-line id), so random pids would make it merge unrelated lines
            pid = 2000 + i
            port = rnd.randint(1024, 65535)
            tag = f"sshd-session[{pid}]" if rnd.random() < 0.1 else f"sshd[{pid}]"
            bad = rnd.choice(BAD_USERS)
            good = rnd.choice(("root", "root", "root", *GOOD_USERS))
            fields = {
                "good": good,
                "bad": bad,
                "bad1": bad or "nobody",
                "ip": shown,
                "port": port,
                "key": f"{rnd.getrandbits(128):032x}",
                "ok": rnd.choice(GOOD_USERS),
                "legit": rnd.choice(legit),
                "pamuser": f"  user={good}" if rnd.random() < 0.7 else "",
                "cron": rnd.choice(("opened for user root(uid=0) by (uid=0)", "closed for user root")),
                "session": session,
                "uptime": f"{i * 0.37:.6f}",
                "src": ip if ":" not in ip else "192.0.2.1",
                "n": pid % 7,
            }
            if form in ("accepted_publickey", "accepted_password"):
                ip = fields["legit"]
            elif form == "systemd":
                session += 1
                fields["session"] = session
            if form in OTHER_TAGS:
                tag = OTHER_TAGS[form].format(pid=pid)
            template = TEMPLATES[form]
            if isinstance(template, tuple):
                template = rnd.choice(template)
            msg = template.format(**fields)
            if tag.endswith(":"):
                out.write(f"{stamp} web01 {tag}{msg}\n")
            else:
                out.write(f"{stamp} web01 {tag}: {msg}\n")
            truth.lines += 1
            truth.forms[form] += 1
            if form in FAILURE_FORMS:
                truth.failures[ip] += 1
                if form in f2b_forms:
                    if tag.startswith("sshd-session"):
                        truth.f2b_session[ip] += 1
                    else:
                        truth.f2b_sshd[ip] += 1
    return truth

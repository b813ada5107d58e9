"""Catalogue of alarm (security event) classes: code, numeric type, name, default severity, ATT&CK phase.

Codes and numeric types follow the reference service so that operators moving over recognise them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["critical", "high", "medium", "low"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low")

AttackPhase = Literal[
    "reconnaissance",
    "initial_access",
    "execution",
    "persistence",
    "privilege_escalation",
    "defense_evasion",
    "credential_access",
    "command_and_control",
    "impact",
]


@dataclass(frozen=True)
class AlarmClass:
    """One kind of alarm as the console and the API show it."""

    code: str
    event_type: int
    name: str
    category: str
    severity: Severity
    phase: AttackPhase


_CLASSES = [
    AlarmClass("login_0001", 4002, "Brute-force attack", "login", "high", "credential_access"),
    AlarmClass("login_0002", 4002, "Brute-force attack succeeded", "login", "critical", "initial_access"),
    AlarmClass("login_1001", 4004, "Successful login", "login", "low", "initial_access"),
    AlarmClass("login_1002", 4004, "Abnormal login", "login", "high", "initial_access"),
    AlarmClass("login_1003", 4004, "Weak password", "login", "high", "credential_access"),
    AlarmClass("user_1001", 4014, "Account change", "user", "medium", "persistence"),
    AlarmClass("user_1002", 4006, "Unsafe account", "user", "high", "privilege_escalation"),
    AlarmClass("malware_0001", 3018, "Abnormal shell", "malware", "high", "defense_evasion"),
    AlarmClass("malware_0002", 1017, "Reverse shell", "malware", "critical", "command_and_control"),
    AlarmClass("malware_1001", 1001, "Malicious program", "malware", "critical", "execution"),
    AlarmClass("av_1002", 1002, "Virus", "malware", "critical", "execution"),
    AlarmClass("av_1003", 1003, "Worm", "malware", "critical", "execution"),
    AlarmClass("av_1004", 1004, "Trojan", "malware", "critical", "execution"),
    AlarmClass("av_1005", 1005, "Botnet", "malware", "critical", "command_and_control"),
    AlarmClass("av_1006", 1006, "Backdoor", "malware", "critical", "persistence"),
    AlarmClass("av_1010", 1010, "Rootkit", "malware", "critical", "defense_evasion"),
    AlarmClass("av_1011", 1011, "Ransomware", "malware", "critical", "impact"),
    AlarmClass("av_1012", 1012, "Hacker tool", "malware", "high", "execution"),
    AlarmClass("av_1015", 1015, "Webshell", "malware", "critical", "persistence"),
    AlarmClass("av_1016", 1016, "Mining", "malware", "high", "impact"),
    AlarmClass("webshell_0001", 1015, "Webshell", "malware", "critical", "persistence"),
    AlarmClass("network_1001", 1016, "Mining", "network", "high", "impact"),
    AlarmClass("fileprotect_0001", 3002, "File privilege escalation", "file", "high", "privilege_escalation"),
    AlarmClass("fileprotect_0002", 3004, "Important file change", "file", "medium", "defense_evasion"),
    AlarmClass("fileprotect_0003", 3004, "AuthorizedKeysFile path change", "file", "high", "persistence"),
    AlarmClass("fileprotect_0004", 3005, "File/directory change", "file", "medium", "defense_evasion"),
    AlarmClass("procdet_0001", 3007, "Abnormal process behaviour", "process", "medium", "execution"),
    AlarmClass(
        "procdet_0002", 3003, "Process privilege escalation", "process", "high", "privilege_escalation"
    ),
    AlarmClass("procreport_0001", 3015, "High-risk command", "process", "high", "execution"),
    AlarmClass("crontab_1001", 3027, "Suspicious crontab task", "persistence", "high", "persistence"),
    AlarmClass("ransomware_0001", 1011, "Ransomware bait file touched", "malware", "critical", "impact"),
    AlarmClass("ransomware_0002", 1011, "Ransomware encryption behaviour", "malware", "critical", "impact"),
    AlarmClass("wtp_0001", 3004, "Web page tampering", "file", "high", "impact"),
]

ALARM_CLASSES: dict[str, AlarmClass] = {c.code: c for c in _CLASSES}


def alarm_class(code: str) -> AlarmClass:
    """The catalogue entry for ``code``; raises KeyError for unknown codes."""
    return ALARM_CLASSES[code]

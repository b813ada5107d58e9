"""Generate ``src/hostward/content/weakpass/common.txt``: the default weak-password dictionary.

Written for hostward: hand-picked classics and vendor/default credentials, keyboard walks, digit
patterns, common words and names with the suffixes and capitalisation people add to satisfy policies,
and leetspeak variants. Ordered by how likely each entry is, so a time-bounded check tries the most
probable passwords first. Deterministic: re-running produces the same file.

    .venv/bin/python scripts/gen_weakpass_list.py [--limit 5000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "hostward" / "content" / "weakpass" / "common.txt"

CLASSICS = """
123456 password 123456789 12345678 12345 qwerty 1234567 111111 123123 abc123 1234567890 password1 1234
iloveyou 000000 qwerty123 admin root toor letmein welcome monkey dragon 654321 666666 888888 123321
1q2w3e4r admin123 root123 Passw0rd P@ssw0rd P@ssword P@ssw0rd1 P@ssword1 Password1 Password123
password123 Password1! changeme changeme123 test test123 testing guest guest123 default secret secret123
pass pass123 passw0rd p@ssw0rd p@ssword admin@123 Admin@123 Admin123 Admin123! root@123 Root@123 Root123
qwe123 Qwe123 qwe123!@# 1qaz2wsx 1qaz@WSX 1QAZ2wsx !QAZ2wsx Aa123456 aa123456 a123456 a12345678 abcd1234
Abcd1234 abcd@1234 Abc@123 Abc123 abc@123 abc123456 123qwe 123qweasd 123abc 1234qwer qwer1234 Qwer1234
asdf1234 zxcv1234 111111111 1111 11111111 12341234 123456a 123456aa 5201314 520520 147258 147258369
159753 159357 741852963 789456123 112233 121212 123654 987654321 123123123 1111111 0000 00000000
88888888 99999999 iloveyou1 sunshine princess football baseball master shadow superman batman trustno1
hello freedom whatever michael jordan hunter ranger buster soccer harley charlie starwars computer
internet server linux ubuntu debian centos redhat oracle mysql postgres postgresql mongodb redis elastic
kibana jenkins tomcat apache nginx docker kubernetes vagrant raspberry alpine pi admin1 admin12
administrator Administrator system manager operator support service backup ftp ftpuser user user123
user1 demo demo123 web webadmin www www-data deploy git gitlab svn dev developer devops hadoop spark
zabbix nagios cacti ansible puppet teamspeak minecraft steam ts3 huawei cisco juniper ubnt hikvision
dahua 12qwaszx 1q2w3e 1q2w3e4r5t 1q2w3e4r5t6y q1w2e3r4 q1w2e3r4t5 zaq12wsx zaq1xsw2 1qazxsw2 qazwsx
qazwsxedc qweasd qweasdzxc asdasd zxczxc qwaszx
""".split()  # noqa: SIM905 - a word list reads best as text

WALKS = """
qwertyuiop asdfghjkl zxcvbnm asdfgh zxcvbn qwert asdf zxcv qazxsw wsxedc edcrfv rfvtgb 1qaz 2wsx 3edc
4rfv 5tgb 1qa2ws3ed qwe asd zxc poiuytrewq lkjhgfdsa mnbvcxz 0987654321 09876543 098765 poiuyt
1qaz2wsx3edc 1qaz2wsx3edc4rfv qwertyu qwertyui asdfghj 3edc4rfv 2wsx3edc !qaz@wsx !@#$%^ !@#$%^&*
!@#$%^&*() 1234qwerasdf qweqwe asdasdasd zxcvbnm123 qwertyuiop123 1a2b3c 1a2b3c4d a1b2c3 a1b2c3d4
""".split()  # noqa: SIM905 - a word list reads best as text

WORDS = """
password admin welcome monkey dragon sunshine princess football baseball master shadow michael superman
batman hello freedom whatever jordan hunter ranger buster soccer harley andrew charlie thomas jessica
ashley daniel matthew robert william jennifer michelle summer winter spring autumn flower orange banana
apple cherry chocolate cookie pepper ginger tiger lion eagle falcon dolphin panther killer hacker ninja
pokemon naruto dragonball starwars matrix secret letmein login access server linux ubuntu debian centos
oracle mysql postgres system manager service support backup office company business money dollar love
lovely angel baby beauty happy lucky golden silver diamond purple yellow google yahoo facebook twitter
internet computer network security firewall database monitor cloud docker jenkins gitlab nginx apache
tomcat redis elastic hadoop zabbix spark kafka china beijing shanghai london paris berlin moscow tokyo
america canada newyork chelsea arsenal liverpool barcelona madrid juventus yankees lakers cowboys qwerty
asdfgh zxcvbn abc test guest user root toor changeme default hunter2 passwd pass mypass
""".split()  # noqa: SIM905 - a word list reads best as text

SUFFIXES = [
    "",
    "1",
    "123",
    "12",
    "!",
    "1234",
    "01",
    "@123",
    "123!",
    "2024",
    "2023",
    "2025",
    "2022",
    "2021",
    "2020",
    "1!",
    "12345",
    "007",
    "99",
    "88",
    "666",
    "888",
    "520",
    "#1",
    "321",
    "11",
    "00",
    "69",
    "2019",
]
LEET = str.maketrans({"a": "@", "o": "0", "e": "3", "i": "1", "s": "$"})
LEET_SOFT = str.maketrans({"a": "@", "o": "0"})


def digit_patterns() -> list[str]:
    out: list[str] = []
    for length in range(4, 11):
        out.append("".join(str((i + 1) % 10) for i in range(length)))  # 1234...
        out.append("".join(str(9 - i) for i in range(length)))  # 9876...
        out.extend(str(d) * length for d in range(10))
    for a in range(10):
        for b in range(10):
            if a != b:
                out.append(f"{a}{b}" * 3)
                out.append(f"{a}{b}" * 4)
    for year in range(1960, 2027):
        out.append(str(year))
        out.append(f"{year}{year}")
    for year in range(1970, 2011):
        for mmdd in ("0101", "1231", "0520", "1001", "0808", "1111", "1212"):
            out.append(f"{year}{mmdd}")
    return out


def word_variants() -> list[str]:
    out: list[str] = []
    # Suffix-major order: every word with the most common suffix before any word with a rarer one.
    for suffix in SUFFIXES:
        for word in WORDS:
            out.append(word + suffix)
            out.append(word.capitalize() + suffix)
        if suffix in ("", "1", "123", "!", "@123", "123!"):
            for word in WORDS:
                out.append(word.translate(LEET_SOFT) + suffix)
                out.append(word.capitalize().translate(LEET) + suffix)
                out.append(word.upper() + suffix)
    return out


def generate(limit: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for group in (CLASSICS, WALKS, [w.capitalize() for w in WALKS], digit_patterns(), word_variants()):
        for entry in group:
            entry = entry.strip()
            if entry and entry not in seen and len(entry) <= 64:
                seen.add(entry)
                out.append(entry)
                if len(out) >= limit:
                    return out
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=5000)
    args = parser.parse_args()
    entries = generate(args.limit)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# hostward default weak-password dictionary, generated by scripts/gen_weakpass_list.py\n"
        "# (written for hostward: classics, default credentials, keyboard walks, digit patterns,\n"
        "# common words with suffixes, capitalisation and leetspeak). Most likely first; one per line.\n"
    )
    OUT.write_text(header + "\n".join(entries) + "\n", encoding="utf-8")
    print(f"{len(entries)} entries -> {OUT}")


if __name__ == "__main__":
    main()

"""WTP configuration limits, exclusion logic and the scheduled unprotected windows."""

from __future__ import annotations

from datetime import datetime

import pytest

from hostward.agent.wtp import (
    ProtectedDir,
    Schedule,
    ScheduleError,
    Window,
    WtpConfig,
    WtpConfigError,
    is_unprotected,
    validate,
    validate_schedule,
)


def _cfg(**kw: object) -> WtpConfig:
    base: dict[str, object] = {"dirs": [ProtectedDir("/srv/www")], "backup_path": "/var/backup/wtp"}
    base.update(kw)
    return WtpConfig(**base)  # type: ignore[arg-type]


def test_valid_config_is_normalised() -> None:
    cfg = validate(_cfg(dirs=[ProtectedDir("/srv/www/", excluded_types=[".LOG", "pid"])]))
    assert cfg.dirs[0].path == "/srv/www"
    assert cfg.dirs[0].excluded_types == ["log", "pid"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"dirs": [ProtectedDir(f"/srv/s{i}") for i in range(51)]}, "at most 50"),
        ({"dirs": [ProtectedDir("srv/www")]}, "absolute path"),
        ({"dirs": [ProtectedDir("/etc")]}, "system directory"),
        ({"dirs": [ProtectedDir("/srv/a"), ProtectedDir("/srv/a/")]}, "listed twice"),
        ({"dirs": [ProtectedDir("/srv/www", excluded_subdirs=[f"d{i}" for i in range(11)])]}, "at most 10"),
        ({"dirs": [ProtectedDir("/srv/www", excluded_types=[f"t{i}" for i in range(11)])]}, "at most 10"),
        ({"dirs": [ProtectedDir("/srv/www", excluded_types=["lo g"])]}, "letters or digits"),
        ({"dirs": [ProtectedDir("/srv/www", excluded_types=["abcdefghijk"])]}, "letters or digits"),
        (
            {"dirs": [ProtectedDir("/srv/www", excluded_paths=[f"/srv/www/p{i}" for i in range(51)])]},
            "at most 50",
        ),
        ({"dirs": [ProtectedDir("/srv/www", excluded_paths=["/var/log/x"])]}, "not inside"),
        ({"backup_path": "/srv/www/.backup"}, "overlaps protected directory dirs[0] /srv/www"),
        ({"backup_path": "/srv"}, "overlaps"),
        ({"backup_path": "backup"}, "absolute"),
        ({"privileged": [f"/usr/bin/p{i}" for i in range(11)]}, "at most 10"),
        ({"privileged": ["rsync"]}, "absolute executable path"),
    ],
)
def test_invalid_config_names_the_problem(kw: dict[str, object], message: str) -> None:
    with pytest.raises(WtpConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(_cfg(**kw))


def test_backup_path_sharing_a_prefix_is_not_an_overlap() -> None:
    validate(_cfg(backup_path="/srv/www-backup"))


def test_exclusions() -> None:
    d = ProtectedDir(
        "/srv/www",
        excluded_subdirs=["logs", "/srv/www/tmp"],
        excluded_types=["log"],
        excluded_paths=["a/b.html"],
    )
    assert d.is_excluded("/srv/www/logs/x.html")
    assert d.is_excluded("/srv/www/logs")
    assert d.is_excluded("/srv/www/tmp/sess")
    assert d.is_excluded("/srv/www/app.log")
    assert d.is_excluded("/srv/www/a/b.html")
    assert not d.is_excluded("/srv/www/logsx/index.html")
    assert not d.is_excluded("/srv/www/index.html")
    assert not d.is_excluded("/srv/www")
    assert not d.is_excluded("/srv/other/app.log")


def test_dir_for_picks_the_deepest() -> None:
    cfg = validate(_cfg(dirs=[ProtectedDir("/srv/www"), ProtectedDir("/srv/www/blog")]))
    found = cfg.dir_for("/srv/www/blog/p.html")
    assert found is not None and found.path == "/srv/www/blog"
    assert cfg.dir_for("/srv/wwwx") is None


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ([Window("01:00", "01:04")], "shorter than 5"),
        ([Window("23:00", "01:00")], "same day"),
        ([Window("01:00", "02:00"), Window("01:30", "03:00")], "overlap"),
        ([Window("01:00", "02:00"), Window("02:03", "03:00")], "less than 5 minutes apart"),
        ([Window(f"0{i}:00", f"0{i}:10") for i in range(6)], "at most 5"),
        ([Window("24:00", "24:10")], "HH:MM"),
        ([Window("1:00", "2:00")], "HH:MM"),
    ],
)
def test_invalid_schedules(windows: list[Window], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        validate_schedule(Schedule(enabled=True, windows=windows))


def test_gap_rule_exempts_day_edges() -> None:
    validate_schedule(Schedule(True, [Window("00:00", "01:00"), Window("01:02", "02:00")]))
    validate_schedule(Schedule(True, [Window("22:00", "23:00"), Window("23:02", "23:59")]))
    validate_schedule(Schedule(True, [Window("01:00", "02:00"), Window("02:05", "03:00")]))
    with pytest.raises(ScheduleError, match="weekdays"):
        validate_schedule(Schedule(True, [], weekdays=[0, 8]))


def test_is_unprotected() -> None:
    sched = Schedule(True, [Window("02:00", "02:30"), Window("23:00", "23:59")], weekdays=[1, 3])
    monday, tuesday = datetime(2026, 11, 23, 2, 15), datetime(2026, 11, 24, 2, 15)
    assert is_unprotected(monday, sched)
    assert not is_unprotected(tuesday, sched)
    assert not is_unprotected(datetime(2026, 11, 23, 2, 30), sched)
    assert is_unprotected(datetime(2026, 11, 23, 1, 59, 59).replace(hour=2, minute=0), sched)
    assert is_unprotected(datetime(2026, 11, 23, 23, 59, 30), sched)
    assert not is_unprotected(monday, Schedule(False, sched.windows, sched.weekdays))

from __future__ import annotations

from pathlib import Path

import pytest

from hostward.agent.config import load_config
from hostward.core.errors import ConfigError


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    assert cfg.heartbeat_interval == 10
    assert cfg.max_outbox_events == 100_000
    assert cfg.budget.cpu_percent == 20.0 and cfg.budget.rss_mb == 150
    assert cfg.log_sources == [] and cfg.name is None
    assert cfg.db_path == tmp_path / "agent.db"


def test_file_values_and_command_line_overrides(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('name = "web-1"\nmax_outbox_events = 500\n[budget]\nrss_mb = 200\n')
    cfg = load_config(
        tmp_path, {"name": "override", "log_sources": ["/var/log/auth.log"], "manager_url": None}
    )
    assert cfg.name == "override" and cfg.max_outbox_events == 500 and cfg.budget.rss_mb == 200
    assert cfg.log_sources == ["/var/log/auth.log"]


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[budget]\ncpu_percnt = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.source == str(path) and info.value.key == "budget.cpu_percnt"
    assert info.value.reason == "unknown key"


def test_bad_value_names_the_key_and_reason(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text("max_outbox_events = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.key == "max_outbox_events" and "100" in info.value.reason
    assert str(tmp_path / "agent.toml") in str(info.value)


def test_command_line_error_is_attributed_to_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, {"manager_url": "http://insecure:1"})
    assert info.value.source == "command line" and info.value.key == "manager_url"


def test_syntax_error_and_state_dir_in_file(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text("name = \n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.key == "(syntax)"
    (tmp_path / "agent.toml").write_text('state_dir = "/x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.key == "state_dir"

"""``serve``: both servers in one real process, TLS where it must be, clean exit on SIGTERM."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hostward.core.errors import ConfigError
from hostward.manager.agentlink import pki
from hostward.manager.serve import check_settings, is_loopback
from hostward.manager.settings import ManagerSettings
from tests.conftest import free_port

_RUN = (
    "import sys, logging; from pathlib import Path;"
    "from hostward.manager.settings import load_settings; from hostward.manager.serve import serve;"
    "logging.basicConfig(level=logging.INFO);"
    "serve(load_settings(Path(sys.argv[1]), listen=sys.argv[2], agent_listen=sys.argv[3],"
    " plain_http=sys.argv[4] == '1'))"
)


def test_plain_http_only_on_loopback(tmp_path: Path) -> None:
    for listen in ("0.0.0.0:8443", "10.1.2.3:8443", "[::]:8443", "example.org:80"):
        with pytest.raises(ConfigError) as err:
            check_settings(ManagerSettings(data_dir=tmp_path, listen=listen, plain_http=True))
        assert err.value.key == "plain_http" and "loopback" in err.value.reason
    for listen in ("127.0.0.1:8443", "[::1]:8443", "localhost:8080", "127.0.0.2:1"):
        check_settings(ManagerSettings(data_dir=tmp_path, listen=listen, plain_http=True))
    check_settings(ManagerSettings(data_dir=tmp_path, listen="0.0.0.0:8443"))
    assert is_loopback("::1") and not is_loopback("example.org")


@pytest.mark.slow
@pytest.mark.parametrize("plain_http", [False, True], ids=["https", "plain-http-loopback"])
def test_serve_runs_both_servers_and_stops_on_sigterm(tmp_path: Path, plain_http: bool) -> None:
    settings = ManagerSettings(data_dir=tmp_path / "m")
    settings.data_dir.mkdir()
    pki.ensure_pki(settings)
    api_port, agent_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _RUN,
            str(settings.data_dir),
            f"127.0.0.1:{api_port}",
            f"127.0.0.1:{agent_port}",
            "1" if plain_http else "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tls = ssl.create_default_context(cafile=str(settings.ca_cert_path))
    api_url = f"{'http' if plain_http else 'https'}://127.0.0.1:{api_port}/api/v1/health"
    agent_url = f"https://127.0.0.1:{agent_port}/agent/v1/ca"
    try:
        with httpx.Client(verify=tls, timeout=2) as client:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, proc.communicate()[0]
                try:
                    health = client.get(api_url)
                    ca = client.get(agent_url)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "manager did not come up"
                    time.sleep(0.2)
            assert health.json()["status"] == "ok"
            assert ca.text == settings.ca_cert_path.read_text()
            if not plain_http:
                # The agent channel never speaks plain HTTP.
                with pytest.raises(httpx.TransportError):
                    httpx.get(f"http://127.0.0.1:{agent_port}/agent/v1/ca", timeout=2)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output

"""`pip install .` (not editable) into an empty virtualenv, then `chat-service`, serves it all.

The wheel must carry the top-level templates/, static/ and dashboards/ folders, and the
console script must start the real server from outside the checkout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests
from chatserver import REPO, ChatServer


def test_the_wheel_serves_pages_static_files_and_metrics(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
    )
    [wheel] = wheels.glob("observable_chat-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "pip", "install", "--quiet", str(wheel)], check=True)

    site = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import service, os; print(os.path.dirname(service.__file__))",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.strip()
    package = Path(site)
    assert package.is_relative_to(venv), "the import must come from the virtualenv, not the repo"
    for shipped in ("templates/login.html", "static/vendor/socket.io.min.js", "dashboards"):
        assert (package / shipped).exists(), shipped
    assert list((package / "dashboards").rglob("*.json")), "dashboards ship in the wheel"

    server = ChatServer(command=[str(venv / "bin" / "chat-service")], cwd=tmp_path).start()
    try:
        page = requests.get(server.url + "/login", timeout=5)
        assert page.status_code == 200 and 'name="csrf_token"' in page.text
        script = requests.get(server.url + "/static/vendor/socket.io.min.js", timeout=5)
        assert script.status_code == 200 and len(script.content) > 10_000
        metrics = requests.get(server.url + "/metrics", timeout=5).text
        assert 'chat_build_info{async_mode="eventlet",store="memory",version=' in metrics
    finally:
        assert server.stop() == 0, server.output()
    assert server.logged("service_stopping")
    server.assert_every_line_json()

"""A plain `git clone`, with nothing beside it, is complete: it depends on no file outside it.

The contract once lived in a folder beside the repository, so a clone could not run
`tests/test_docs_agree.py`. This clones the repository's committed HEAD into an empty
temporary folder and runs that file there, on the clone's own `service` package, with the same
interpreter; and no tracked file may point outside the clone again. A clone holds commits
only: locally this checks the last commit, not uncommitted changes (CI runs on a clean clone).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from chatserver import require_program

REPO = Path(__file__).resolve().parent.parent
GIT_TIMEOUT_S = 60.0
PYTEST_TIMEOUT_S = 300.0
# How a file pointed at the old contract beside the repository. Written as patterns, so that
# this file does not match them itself.
OUTSIDE_REFERENCES = re.compile(r"\.\./shared\b|parent\s*/\s*[\"']shared[\"']")


def git_env() -> dict[str, str]:
    """The environment without GIT_* variables (a hook's GIT_DIR must not redirect git)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [require_program("git"), *args],
        cwd=cwd,
        env=git_env(),
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"git {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def run_bounded(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run `command` in its own process group; past the timeout the whole group is killed
    (the servers a test run starts included) and the test fails with what was printed."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=PYTEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(command)} took over {PYTEST_TIMEOUT_S:.0f} s:\n{output}")
    return process.returncode, output


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed HEAD, cloned into a folder of its own (nothing beside it)."""
    require_program("git")
    if not (REPO / ".git").exists():
        reason = f"{REPO} is not a git checkout"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    target = tmp_path_factory.mktemp("alone") / "clone"
    git("clone", "--quiet", str(REPO), str(target), cwd=target.parent)
    assert sorted(path.name for path in target.parent.iterdir()) == ["clone"]
    head = git("rev-parse", "HEAD", cwd=REPO).strip()
    assert git("rev-parse", "HEAD", cwd=target).strip() == head
    return target


def clone_env(clone: Path) -> dict[str, str]:
    """The environment with `import service` and `python -m service` resolving to the clone."""
    env = {key: value for key, value in git_env().items() if not key.startswith("CHAT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(clone), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_no_tracked_file_points_outside_the_clone(clone: Path) -> None:
    offenders = []
    for name in git("ls-files", "-z", cwd=clone).split("\0"):
        path = clone / name
        if not name or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images, fonts: no paths in them
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_REFERENCES.search(line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "files refer outside the repository:\n" + "\n".join(offenders)


def test_the_docs_agree_in_a_bare_clone(clone: Path) -> None:
    env = clone_env(clone)
    where = subprocess.run(
        [sys.executable, "-c", "import service; print(service.__file__)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=True,
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(clone.resolve()), (
        f"`import service` found {where}, not the clone's copy"
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    status, output = run_bounded([*command, "tests/test_docs_agree.py"], clone, env)
    assert status == 0, f"tests/test_docs_agree.py fails in a bare clone:\n{output}"

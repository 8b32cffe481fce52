"""A real Hugging Face Hub read server on loopback for the tests: olah, serving local git repositories.

olah (a Hub mirror, from PyPI) is started as a subprocess in offline mode with no upstream: a model
repo ``org/name`` is the git repository ``<mirrors>/models/org/name``, and every branch, tag and
commit sha of it is a Hub revision. The unmodified ``huggingface_hub`` client talks to it through
``HF_ENDPOINT`` (set by ``conftest.py``), so downloads, revision resolution and error answers are
the real protocol. olah answers a missing file or revision with 401 "repo not found" where the Hub
says 404; otherwise it behaves like the Hub for everything the tests use.

:class:`GitRepo` writes those repositories with the ``git`` command line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

START_TIMEOUT_S = 20.0
GIT_IDENTITY = ("-c", "user.name=ae-zoo tests", "-c", "user.email=tests@ae-zoo.invalid",
                "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", "-c", "init.defaultBranch=main")
ACCESS_LINE = re.compile(r'"(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS) (\S+) HTTP/[\d.]+" (\d{3})')


def git(repo: Path, *args: str) -> str:
    """Run ``git -C repo ARGS`` with a fixed identity and return its stdout (stripped)."""
    result = subprocess.run(["git", *GIT_IDENTITY, "-C", str(repo), *args], capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout.strip()


class GitRepo:
    """One Hub model repo as a git repository in olah's mirrors folder."""

    def __init__(self, path: Path, repo_id: str) -> None:
        self.path = path
        self.repo_id = repo_id

    @classmethod
    def init(cls, mirrors: Path, repo_id: str) -> GitRepo:
        """An empty repository (unborn ``main``) for ``repo_id``."""
        path = mirrors / "models" / repo_id
        if path.exists():
            raise FileExistsError(f"repo {repo_id} already exists at {path}")
        path.mkdir(parents=True)
        git(path, "init", "--quiet", "--initial-branch=main")
        return cls(path, repo_id)

    def commit(self, files: Mapping[str, bytes | str | Path], message: str = "update", *, branch: str = "main",
               delete: tuple[str, ...] = ()) -> str:
        """Write ``files`` (bytes, text or a file to copy) on ``branch``, delete ``delete``, commit; return the sha.

        A branch that does not exist yet is created from the current ``main``.
        """
        self.checkout(branch)
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, target)
            elif isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        for name in delete:
            git(self.path, "rm", "--quiet", "-r", "--ignore-unmatch", "--", name)
        git(self.path, "add", "--all")
        git(self.path, "commit", "--quiet", "--allow-empty", "-m", message)
        sha = self.sha("HEAD")
        if branch != "main":
            self.checkout("main")
        return sha

    def commit_folder(self, folder: Path, message: str = "add model", *, branch: str = "main") -> str:
        """Commit every file of a model folder (config.json, model.safetensors, README.md)."""
        return self.commit({p.name: p for p in sorted(Path(folder).iterdir()) if p.is_file()}, message,
                           branch=branch)

    def checkout(self, branch: str) -> None:
        if not self.has_commits() or self.current_branch() == branch:
            if not self.has_commits() and branch != "main":
                raise ValueError(f"commit to main before creating branch {branch!r}")
            return
        if git(self.path, "branch", "--list", branch):
            git(self.path, "checkout", "--quiet", branch)
        else:
            git(self.path, "checkout", "--quiet", "-b", branch, "main")

    def tag(self, name: str, rev: str = "HEAD") -> None:
        git(self.path, "tag", name, rev)

    def branch(self, name: str, rev: str = "HEAD") -> None:
        git(self.path, "branch", name, rev)

    def sha(self, rev: str = "main") -> str:
        return git(self.path, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")

    def has_commits(self) -> bool:
        return subprocess.run(["git", "-C", str(self.path), "rev-parse", "--verify", "--quiet", "HEAD"],
                              capture_output=True).returncode == 0

    def current_branch(self) -> str:
        return git(self.path, "symbolic-ref", "--short", "HEAD")

    def file_at(self, rev: str, name: str) -> bytes:
        """A file's bytes at ``rev`` as git stores them."""
        return subprocess.run(["git", "-C", str(self.path), "show", f"{rev}:{name}"], capture_output=True,
                              check=True).stdout


class OlahServer:
    """olah on ``127.0.0.1:port``, serving the git repositories under ``root/mirrors``.

    ``start()`` waits (at most :data:`START_TIMEOUT_S`) until it answers HTTP and raises with its log
    if it does not; ``stop()`` ends the process it started, by pid. ``requests()`` parses olah's
    access log, so tests can count what the client really asked for.
    """

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.mirrors = root / "mirrors"
        self.log_dir = root / "logs"
        self.config = root / "olah.toml"
        self.output = root / "olah-output.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        for folder in (self.mirrors / "models", root / "repos", self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {port}\n"
            f'repos-path = "{root / "repos"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            "\n[accessibility]\n"
            "offline = true\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        executable = Path(sys.executable).parent / "olah-cli"
        if not executable.exists():
            raise RuntimeError(f"{executable} not found: install the dev extra (pip install -e '.[dev]'), "
                               f"which pins olah")
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen([str(executable), "--config", str(self.config), "--log-path",
                                          str(self.log_dir)], stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"olah exited with status {self.proc.returncode} while starting:\n{self.log_text()}")
            if self.answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"olah did not answer on {self.url} within {START_TIMEOUT_S:.0f} s:\n{self.log_text()}")

    def answers(self) -> bool:
        """Whether something answers HTTP on the port (any status code counts)."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/models/ae-zoo-probe/none/revision/main", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log_text(self, tail: int = 60) -> str:
        lines = self.output.read_text(errors="replace").splitlines() if self.output.exists() else []
        return "\n".join(lines[-tail:]) or "(olah wrote nothing)"

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request olah has logged since its folder was created."""
        found = []
        for log in sorted(self.log_dir.glob("*.log*")):
            for line in log.read_text(errors="replace").splitlines():
                match = ACCESS_LINE.search(line)
                if match:
                    found.append((match[1], match[2], int(match[3])))
        return found

    def repo(self, repo_id: str) -> GitRepo:
        """The repository for ``repo_id``, created empty if needed."""
        path = self.mirrors / "models" / repo_id
        return GitRepo(path, repo_id) if path.exists() else GitRepo.init(self.mirrors, repo_id)

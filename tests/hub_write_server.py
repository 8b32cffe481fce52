"""The Hub's write API, just enough of it, as a loopback server whose commits are real git commits.

No installable server implements the Hugging Face Hub's write routes (olah is read-only), so the
tests run this one on ``127.0.0.1`` in a background thread and point the unmodified client at it
with ``HfApi(endpoint=...)``. Every commit becomes a git commit in the repository that olah
(:mod:`hubserver`) serves, so what was uploaded is read back through a real read server.

Routes, as ``huggingface_hub`` (2.x) calls them for ``create_repo`` and ``upload_folder``:

``POST /api/repos/create``
    JSON ``{"name", "organization", "type", "visibility"?}``. Creates an empty repository (unborn
    ``main``) and answers ``{"url", "name"}``; if it exists, 409 with the ``url``, as the Hub does
    (``create_repo(exist_ok=True)`` accepts the 409 and reads that url).
``POST /api/validate-yaml``
    JSON ``{"content", "repoType"}``: the README.md about to be committed. Parses its front matter
    with PyYAML and answers ``{"errors": [], "warnings": []}``, or 400 with the parse error.
``POST /api/{type}s/{org}/{name}/preupload/{revision}``
    JSON ``{"files": [{"path", "sample", "size"}]}``. Answers ``uploadMode: "regular"`` for every
    file (so bytes come inline in the commit, never through LFS/Xet), ``shouldIgnore: false`` and
    ``oid``: the git blob sha of the file at that revision if it exists, which the client compares
    with its own to drop unchanged files from the commit.
``POST /api/{type}s/{org}/{name}/commit/{revision}``
    NDJSON: a ``header`` line (``summary``, ``description``, optional ``parentCommit``), then
    ``file`` lines (base64 ``content``), ``deletedFile`` and ``deletedFolder`` lines. Commits to
    ``revision`` (``main`` or an existing branch) and answers ``{"commitOid", "commitUrl"}``; 412 if
    ``parentCommit`` is not the branch head; 400 for ``lfsFile`` lines (never asked for).
``GET /api/{type}s/{org}/{name}/revision/{revision}``
    Repo info (``{"id", "sha", "siblings"}``): the client asks for it when a commit would be empty
    (every file unchanged) to report the current head instead.

Anything else is recorded in :attr:`HubWriteServer.unknown` and answered 404, so a client that
starts calling something new shows up in a test rather than being half-served.
"""

from __future__ import annotations

import base64
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from hubserver import GitRepo, git

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
TYPE_FOLDERS = {"model": "models", "dataset": "datasets", "space": "spaces"}


class HubError(Exception):
    """An error answer: status, Hub error code (``X-Error-Code`` header) and message."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class HubWriteServer:
    """The write routes on ``127.0.0.1:port`` (port 0: any free one), committing into ``mirrors``.

    ``requests`` lists ``(method, path)`` of every request; ``unknown`` those that no route served.
    """

    def __init__(self, mirrors: Path, port: int = 0) -> None:
        self.mirrors = Path(mirrors)
        self.requests: list[tuple[str, str]] = []
        self.unknown: list[tuple[str, str]] = []
        self.lock = threading.Lock()  # one commit at a time: git's index is not concurrent
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread: threading.Thread | None = None

    def start(self) -> HubWriteServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="hub-write-server", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread is not None:
            self.thread.join(timeout=10)

    # -- routes ------------------------------------------------------------------------------------

    def dispatch(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        parts = [unquote(p) for p in urlsplit(path).path.strip("/").split("/")]
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self.create_repo(json.loads(body or b"{}"))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self.validate_yaml(json.loads(body or b"{}"))
        if len(parts) == 6 and parts[0] == "api" and parts[1] in REPO_TYPES:
            repo_type, repo_id, action, revision = parts[1], f"{parts[2]}/{parts[3]}", parts[4], parts[5]
            if method == "POST" and action == "preupload":
                return self.preupload(self.repo(repo_type, repo_id), revision, json.loads(body or b"{}"))
            if method == "POST" and action == "commit":
                return self.commit(self.repo(repo_type, repo_id), revision, body)
            if method == "GET" and action == "revision":
                return self.repo_info(self.repo(repo_type, repo_id), revision)
        self.unknown.append((method, path))
        raise HubError(HTTPStatus.NOT_FOUND, f"the test Hub write server has no route for {method} {path}")

    def create_repo(self, payload: dict[str, Any]) -> dict[str, Any]:
        name, org = payload.get("name"), payload.get("organization")
        if not name or not org:
            raise HubError(HTTPStatus.BAD_REQUEST, "create a repo under an organization: ORG/NAME")
        folder = TYPE_FOLDERS.get(payload.get("type") or "model")
        if folder is None:
            raise HubError(HTTPStatus.BAD_REQUEST, f"unknown repo type {payload.get('type')!r}")
        repo_id = f"{org}/{name}"
        url = f"{self.url}/{repo_id}" if folder == "models" else f"{self.url}/{folder}/{repo_id}"
        with self.lock:
            if (self.mirrors / folder / repo_id).exists():
                # The Hub's 409 carries the url too: create_repo(exist_ok=True) returns it.
                raise HubError(HTTPStatus.CONFLICT, "You already created this repo", url=url)
            GitRepo.init(self.mirrors, repo_id) if folder == "models" else _init_other(self.mirrors / folder, repo_id)
        return {"url": url, "name": repo_id}

    def validate_yaml(self, payload: dict[str, Any]) -> dict[str, Any]:
        import yaml

        content = payload.get("content", "")
        if content.startswith("---"):
            front = content.split("---", 2)[1] if content.count("---") >= 2 else ""
            try:
                data = yaml.safe_load(front)
            except yaml.YAMLError as err:
                raise HubError(HTTPStatus.BAD_REQUEST, json.dumps({"errors": [{"message": str(err)}]})) from err
            if data is not None and not isinstance(data, dict):
                raise HubError(HTTPStatus.BAD_REQUEST,
                               json.dumps({"errors": [{"message": "metadata must be a YAML mapping"}]}))
        return {"errors": [], "warnings": []}

    def preupload(self, repo: GitRepo, revision: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            head = self.head(repo, revision)
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                      "oid": self.blob_oid(repo, head, f["path"]) if head else None}
                     for f in payload.get("files", [])]
        return {"files": files, "commitOid": head}

    def commit(self, repo: GitRepo, revision: str, body: bytes) -> dict[str, Any]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(HTTPStatus.BAD_REQUEST, "the first NDJSON line must be the commit header")
        header = lines[0]["value"]
        files: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(HTTPStatus.BAD_REQUEST, f"unsupported encoding {value.get('encoding')!r}")
                files[_safe_path(value["path"])] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(_safe_path(value["path"]))
            else:
                raise HubError(HTTPStatus.BAD_REQUEST, f"the test Hub write server does not accept {key!r} lines "
                                                       f"(it answered uploadMode 'regular' for every file)")
        with self.lock:
            head = self.head(repo, revision)
            if revision != "main" and head is None:
                raise HubError(HTTPStatus.NOT_FOUND, f"Invalid rev id: {revision}", "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent is not None and parent != head:
                raise HubError(HTTPStatus.PRECONDITION_FAILED,
                               f"A commit has happened since. Please refresh and try again. (head is {head})")
            message = header.get("summary") or "commit"
            if header.get("description"):
                message += "\n\n" + header["description"]
            oid = repo.commit(files, message, branch=revision, delete=tuple(deleted))
        return {"commitOid": oid, "commitUrl": f"{self.url}/{repo.repo_id}/commit/{oid}", "success": True,
                "hookOutput": "", "pullRequestUrl": None}

    def repo_info(self, repo: GitRepo, revision: str) -> dict[str, Any]:
        with self.lock:
            head = self.head(repo, revision)
            if head is None:
                raise HubError(HTTPStatus.NOT_FOUND, f"Invalid rev id: {revision}", "RevisionNotFound")
            names = git(repo.path, "ls-tree", "-r", "--name-only", head).splitlines()
        return {"id": repo.repo_id, "modelId": repo.repo_id, "sha": head, "private": False,
                "siblings": [{"rfilename": n} for n in names]}

    # -- helpers -----------------------------------------------------------------------------------

    def repo(self, repo_type: str, repo_id: str) -> GitRepo:
        if repo_type != "models":
            raise HubError(HTTPStatus.BAD_REQUEST, "the test Hub write server only hosts model repos")
        path = self.mirrors / "models" / repo_id
        if not (path / ".git").is_dir():
            raise HubError(HTTPStatus.NOT_FOUND, "Repository not found", "RepoNotFound")
        return GitRepo(path, repo_id)

    @staticmethod
    def head(repo: GitRepo, revision: str) -> str | None:
        """The commit ``revision`` names, or None (no such branch, or an empty repository)."""
        try:
            return repo.sha(revision)
        except RuntimeError:
            return None

    @staticmethod
    def blob_oid(repo: GitRepo, commit: str, path: str) -> str | None:
        try:
            return git(repo.path, "rev-parse", "--verify", "--quiet", f"{commit}:{path}") or None
        except RuntimeError:
            return None


def _safe_path(path: str) -> str:
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts or ".git" in parts:
        raise HubError(HTTPStatus.BAD_REQUEST, f"invalid path in repo: {path!r}")
    return path


def _init_other(root: Path, repo_id: str) -> None:
    path = root / repo_id
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch=main")


def _handler(server: HubWriteServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client expects from the Hub

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.handle_any("GET")

        def do_POST(self) -> None:  # noqa: N802
            self.handle_any("POST")

        def do_HEAD(self) -> None:  # noqa: N802
            self.handle_any("HEAD")

        def do_PUT(self) -> None:  # noqa: N802
            self.handle_any("PUT")

        def do_DELETE(self) -> None:  # noqa: N802
            self.handle_any("DELETE")

        def handle_any(self, method: str) -> None:
            server.requests.append((method, self.path))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, payload, code = HTTPStatus.OK, server.dispatch(method, self.path, body), None
            except HubError as err:
                status, code = err.status, err.code
                try:
                    payload = json.loads(err.message)
                    payload.setdefault("error", err.message)
                except ValueError:
                    payload = {"error": err.message}
                payload.update(err.extra)
            except Exception as err:  # a bug here must show up as a 500 in the test, not hang the client
                status, code = HTTPStatus.INTERNAL_SERVER_ERROR, None
                payload = {"error": f"{type(err).__name__}: {err}"}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code:
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", payload.get("error", ""))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            pass  # requests are recorded in server.requests

    return Handler


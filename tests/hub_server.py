"""A Hub-compatible HTTP server on 127.0.0.1, only as wide as the endpoints `huggingface_hub` calls to push and
pull a model folder: create a repo, create a branch, preupload (every file "regular"), validate a model
card's YAML, commit (NDJSON with base64 files), repo info and file tree at a revision, and resolve
(download) a file. Repos live in memory; a commit is a
full file map, so a revision pulls exactly what was pushed to it. Write endpoints need the server's token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class HubState:
    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, dict] = {}  # repo_id -> {"branches": {name: sha}, "commits": {sha: {path: bytes}}}
        self.lock = threading.Lock()

    def commit(self, repo_id: str, branch: str, files: dict[str, bytes], message: str) -> str:
        repo = self.repos[repo_id]
        sha = hashlib.sha1(f"{repo_id}{branch}{message}{len(repo['commits'])}".encode()).hexdigest()
        repo["commits"][sha] = files
        repo["branches"][branch] = sha
        return sha

    def resolve(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        sha = repo["branches"].get(revision, revision)
        return (sha, repo["commits"][sha]) if sha in repo["commits"] else None


def make_handler(state: HubState, endpoint: str):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def reply(self, status: int, body: dict | list | bytes | None = None, headers: dict | None = None) -> None:
            is_json = isinstance(body, (dict, list))
            data = json.dumps(body).encode() if is_json else (body or b"")
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if is_json else "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {state.token}":
                return True
            self.reply(401, {"error": "Invalid credentials in Authorization header"})
            return False

        def do_POST(self):
            path = unquote(urlparse(self.path).path)
            payload = self.body()
            if path == "/api/validate-yaml":  # the client checks a model card's metadata before committing it
                return self.reply(200, {"errors": [], "warnings": []})
            if not self.authorized():
                return
            with state.lock:
                if path == "/api/repos/create":
                    request = json.loads(payload)
                    repo_id = (
                        f"{request['organization']}/{request['name']}"
                        if request.get("organization")
                        else request["name"]
                    )
                    if repo_id in state.repos:
                        return self.reply(
                            409, {"error": "You already created this model repo", "url": f"{endpoint}/{repo_id}"}
                        )
                    state.repos[repo_id] = {"branches": {}, "commits": {}}
                    state.commit(repo_id, "main", {}, "initial commit")
                    return self.reply(200, {"url": f"{endpoint}/{repo_id}", "name": repo_id})
                parts = path.removeprefix("/api/models/").split("/")
                repo_id, action, revision = "/".join(parts[:2]), parts[2], "/".join(parts[3:])
                if repo_id not in state.repos:
                    return self.reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                if action == "preupload":
                    files = json.loads(payload)["files"]
                    return self.reply(200, {"files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]})  # fmt: skip
                if action == "branch":
                    start = (json.loads(payload) if payload else {}).get("startingPoint") or "main"
                    if revision in state.repos[repo_id]["branches"]:
                        return self.reply(409, {"error": "Reference already exists"})
                    resolved = state.resolve(repo_id, start)
                    state.repos[repo_id]["branches"][revision] = resolved[0]
                    return self.reply(200, {})
                if action == "commit":
                    resolved = state.resolve(repo_id, revision)
                    if resolved is None:
                        return self.reply(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
                    files, message = dict(resolved[1]), ""
                    for line in payload.splitlines():
                        item = json.loads(line)
                        if item["key"] == "header":
                            message = item["value"]["summary"]
                        elif item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        elif item["key"] == "deletedFile":
                            files.pop(item["value"]["path"], None)
                    sha = state.commit(repo_id, revision, files, message)
                    return self.reply(200, {"commitUrl": f"{endpoint}/{repo_id}/commit/{sha}", "commitOid": sha})
            self.reply(404, {"error": f"no endpoint {path}"})

        def do_GET(self):
            path = unquote(urlparse(self.path).path)
            with state.lock:
                if path.startswith("/api/models/"):
                    parts = path.removeprefix("/api/models/").split("/")
                    repo_id = "/".join(parts[:2])
                    revision = "/".join(parts[3:]) if len(parts) > 3 and parts[2] in ("revision", "tree") else "main"
                    if len(parts) > 2 and parts[2] == "refs":
                        repo = state.repos.get(repo_id)
                        if repo is None:
                            return self.reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                        branches = [
                            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                            for n, s in repo["branches"].items()
                        ]
                        return self.reply(200, {"branches": branches, "tags": [], "converts": []})
                    resolved = state.resolve(repo_id, revision)
                    if resolved is None:
                        code = "RepoNotFound" if repo_id not in state.repos else "RevisionNotFound"
                        return self.reply(404, {"error": code}, {"X-Error-Code": code})
                    sha, files = resolved
                    if parts[2:3] == ["tree"]:  # the file listing snapshot_download reads (one page, recursive)
                        return self.reply(200, [
                            {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                            for name, data in sorted(files.items())
                        ])  # fmt: skip
                    return self.reply(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                                            "siblings": [{"rfilename": name} for name in sorted(files)]})  # fmt: skip
                marker = "/resolve/"
                if marker in path:
                    repo_id, rest = path.lstrip("/").split(marker, 1)
                    revision, _, filename = rest.partition("/")
                    resolved = state.resolve(repo_id, revision)
                    if resolved is None or filename not in resolved[1]:
                        return self.reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                    sha, files = resolved
                    content = files[filename]
                    etag = f'"{hashlib.sha1(content).hexdigest()}"'
                    return self.reply(200, content, {"X-Repo-Commit": sha, "ETag": etag})
            self.reply(404, {"error": f"no endpoint {path}"})

        do_HEAD = do_GET

    return Handler


class HubServer:
    """`with HubServer(token) as server: server.endpoint` — a thread serving the Hub endpoints above."""

    def __init__(self, token: str = "hf_test_token") -> None:
        self.state = HubState(token)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), None)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.httpd.RequestHandlerClass = make_handler(self.state, self.endpoint)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

"""The annotation page: its label store and JSON API (in-process), and the page itself in a real headless browser."""

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from align.annotation import AnnotationError, read_annotations
from align.annotation_access import Caller, PageAccess, hosts_for
from align.annotation_page import AnnotationPageConfig, LabelStore, make_app
from align.data import load_preferences
from align.io import atomic_write_jsonl, read_jsonl
from conftest import browser, free_port, needs_browser


def write_batch(path: Path, size: int = 6) -> Path:
    """A comparison batch as a round writes it: every third prompt a safety prompt."""
    records = [
        {"id": f"p{i}", "prompt": [{"role": "user", "content": f"Question {i}?"}], "is_safety": i % 3 == 2,
         "response_a": f"First answer to {i}.", "response_b": f"Second answer to {i}.", "choice": None,
         "strength": None, "a_is_safe": None, "b_is_safe": None, "meta": {"a": {"temperature": 1.0}}}
        for i in range(size)
    ]  # fmt: skip
    atomic_write_jsonl(path, records)
    return path


def label(pair: dict, choice: str = "a", strength: str = "better", **extra) -> dict:
    safety = "preferred_only" if pair.get("is_safety") else None
    return {"id": pair["id"], "choice": choice, "strength": strength, "safety": safety, **extra}


def test_two_annotators_label_skip_undo_resume_and_export(tmp_path):
    batch = write_batch(tmp_path / "to_annotate.jsonl")
    store = LabelStore(batch, tmp_path / "labels", overlap=0.5, seed=1)
    assert len(store.double) == 3
    seen = {"ann": [], "bo": []}
    for _ in range(2):  # ann takes two pairs, bo two pairs, with no single-annotator pair given to both
        for name in seen:
            pair = store.next_pair(name)
            seen[name].append(pair["id"])
            store.add(name, label(pair, note=f"{name} was here"))
    singles = [pid for pid in seen["ann"] + seen["bo"] if pid not in store.double]
    assert len(singles) == len(set(singles))
    # A skip is not a label: the pair stays open for others; undo takes back the last label or skip.
    skipped = store.next_pair("ann")
    store.add("ann", {"id": skipped["id"], "skipped": True})
    assert store.undo("ann")["id"] == skipped["id"]
    assert store.next_pair("ann")["id"] == skipped["id"]  # shown again after the undo
    # Each label is on disk at once: a new store (a restarted server) resumes each annotator where they were.
    restarted = LabelStore(batch, tmp_path / "labels", overlap=0.5, seed=1)
    assert restarted.progress("ann")["mine"] == 2 and restarted.next_pair("ann")["id"] == skipped["id"]
    while (pair := restarted.next_pair("ann")) is not None:
        restarted.add("ann", label(pair, choice="b", strength="slightly_better"))
    while (pair := restarted.next_pair("bo")) is not None:
        restarted.add("bo", label(pair, choice="b", strength="slightly_better"))
    assert restarted.progress("ann")["complete"] == 6
    stats = restarted.stats()
    assert stats["double_annotated"] == 3 and 0 <= stats["choice_agreement"] <= 1
    assert sum(a["labelled"] for a in stats["annotators"].values()) == 6 + 3
    exported = restarted.export(tmp_path / "annotated.jsonl")
    assert exported == {"labelled": 6, "unlabelled": 0}
    records = read_jsonl(tmp_path / "annotated.jsonl")
    safety = next(r for r in records if r["is_safety"])
    other = "b" if safety["choice"] == "a" else "a"  # "only the preferred answer is safe"
    assert safety[f"{safety['choice']}_is_safe"] is True and safety[f"{other}_is_safe"] is False
    pairs = read_annotations(tmp_path / "annotated.jsonl")
    # On safety prompts the preferred answer is safe and the other not: every pair is kept.
    assert len(pairs["helpfulness"]) == 4 and len(pairs["safety"]) == 2
    atomic_write_jsonl(tmp_path / "helpfulness.jsonl", pairs["helpfulness"])
    assert len(load_preferences(str(tmp_path / "helpfulness.jsonl"))) == 4


def test_bad_labels_and_names_are_refused_with_what_was_expected(tmp_path):
    store = LabelStore(write_batch(tmp_path / "b.jsonl"), tmp_path / "labels")
    pair = store.next_pair("ann")
    for bad, expected in [
        ({"id": pair["id"], "choice": "c", "strength": "better"}, "choice: expected 'a' or 'b'"),
        ({"id": pair["id"], "choice": "a", "strength": "much"}, "strength: expected one of"),
        ({"id": "nope", "choice": "a", "strength": "better"}, "id 'nope' is not in"),
    ]:
        with pytest.raises(AnnotationError, match=expected):
            store.add("ann", bad)
    safety_pair = next(p for p in store.pairs if p["is_safety"])
    with pytest.raises(AnnotationError, match="safety: required on a safety prompt"):
        store.add("ann", {"id": safety_pair["id"], "choice": "a", "strength": "better"})
    for name in ("../etc", "", "a b", ".hidden"):
        with pytest.raises(AnnotationError, match="annotator"):
            store.next_pair(name)
    assert not list((tmp_path / "labels").iterdir())  # nothing written by a refused label
    with pytest.raises(ValueError, match="give --round N .* or --batch FILE"):
        AnnotationPageConfig()
    with pytest.raises(FileNotFoundError, match="batch: no file at .*round-2/collect/to_annotate.jsonl"):
        AnnotationPageConfig(round=2, runs_dir=str(tmp_path)).store()


OWNER_TOKEN = "owner-token-0123456789"
PAGE = "http://127.0.0.1:8765"


def test_the_json_api_with_names_typed_on_the_page(tmp_path):
    """Without --annotators the owner's link labels under the name the page sends (one person, or a trusted few)."""
    from starlette.testclient import TestClient

    store = LabelStore(write_batch(tmp_path / "b.jsonl", size=3), tmp_path / "labels", overlap=0)
    access = PageAccess(OWNER_TOKEN)
    client = TestClient(make_app(store, tmp_path / "annotated.jsonl", access), base_url=PAGE,
                        headers={"Authorization": f"Bearer {OWNER_TOKEN}"})  # fmt: skip
    page = client.get("/")
    assert "Llama 2 protocol" in page.text and page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert client.get("/api/session").json() == {"annotator": None, "owner": True, "names_fixed": False}
    first = client.get("/api/next", params={"annotator": "ann"}).json()
    assert first["progress"] == {"mine": 0, "complete": 0, "total": 3} and "meta" not in first["pair"]
    refused = client.post("/api/label", json={"annotator": "ann", "label": {"id": first["pair"]["id"], "choice": "x"}})
    assert refused.status_code == 400 and "choice" in refused.json()["error"]
    after = client.post("/api/label", json={"annotator": "ann", "label": label(first["pair"])}).json()
    assert after["progress"]["mine"] == 1 and after["pair"]["id"] != first["pair"]["id"]
    undone = client.post("/api/undo", json={"annotator": "ann"}).json()
    assert undone["pair"]["previous"]["choice"] == "a" and undone["progress"]["mine"] == 0
    assert client.post("/api/export", json={}).json()["unlabelled"] == 3
    assert client.get("/api/stats").json()["double_annotated"] == 0
    assert client.get("/api/next", params={"annotator": "../x"}).status_code == 400


def test_tokens_hosts_and_origins():
    access = PageAccess.create(OWNER_TOKEN, ("maria", "li"), "127.0.0.1", ["labels.example"])
    maria, li = access.annotator_token("maria"), access.annotator_token("li")
    assert access.caller(maria) == Caller("maria") and access.caller(OWNER_TOKEN) == Caller(None)
    assert access.caller(maria[:-1]) is None and access.caller(None) is None and maria != li
    # A given token keeps every link across restarts; without one each start makes new ones.
    assert PageAccess.create(OWNER_TOKEN, ("maria",), "127.0.0.1", []).annotator_token("maria") == maria
    fresh = [PageAccess.create(None, ("maria",), "127.0.0.1", []) for _ in range(2)]
    assert fresh[0].token != fresh[1].token and len(fresh[0].token) >= 32
    links = dict(access.links("http://127.0.0.1:8765/"))
    assert links["maria"] == f"http://127.0.0.1:8765/?token={maria}" and len(links) == 3
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LABELS.example", "127.0.0.1"):
        assert access.host_allowed(host), host
    for host in ("evil.example", "evil.example:8765", "127.0.0.2:8765", "", None):
        assert not access.host_allowed(host), host
    assert PageAccess.create(OWNER_TOKEN, (), "127.0.0.1", ["*"]).host_allowed("anything.example")
    assert "192.0.2.1" not in hosts_for("127.0.0.1", []) and socket.gethostname().lower() in hosts_for("0.0.0.0", [])
    assert access.origin_allowed(None, "127.0.0.1:8765")  # not a cross-site browser request
    assert access.origin_allowed("http://127.0.0.1:8765", "127.0.0.1:8765")
    assert access.origin_allowed("https://labels.example", "labels.example")  # behind a TLS proxy
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "null", "http://localhost:8765"):
        assert not access.origin_allowed(origin, "127.0.0.1:8765"), origin
    for bad in ({"token": "short"}, {"token": "has space in it and more"}, {"annotators": "maria,../li"},
                {"annotators": "maria,maria"}, {"allowed_hosts": "http://x.example"}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            AnnotationPageConfig(batch="b.jsonl", **bad)


class InProcessTransport:
    """Requests to the app in process (starlette's TestClient)."""

    def __init__(self, app) -> None:
        from starlette.testclient import TestClient

        self.client = TestClient(app, base_url=PAGE)

    def send(self, method: str, path: str, headers: dict, body: bytes | None = None) -> tuple[int, dict]:
        reply = self.client.request(method, path, headers=headers, content=body)
        return reply.status_code, reply.json() if "json" in reply.headers.get("content-type", "") else {}


class UvicornTransport:
    """Raw HTTP requests (every header as given, the Host included) to the app served by uvicorn on 127.0.0.1."""

    def __init__(self, app) -> None:
        self.server = PageServer(app)

    def send(self, method: str, path: str, headers: dict, body: bytes | None = None) -> tuple[int, dict]:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in {"Host": f"127.0.0.1:{self.server.port}", **headers}.items():
                connection.putheader(name, value)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            reply = connection.getresponse()
            data = reply.read()
            return reply.status, json.loads(data) if "json" in (reply.getheader("content-type") or "") else {}
        finally:
            connection.close()


@pytest.mark.parametrize("transport", [InProcessTransport, UvicornTransport])
def test_refused_requests_get_their_4xx_and_change_no_label(tmp_path, transport):
    """Per-annotator links: without a token, with another site's Origin or Host, as text/plain, with another
    annotator's link, the owner's link, an oversized note or body, or any malformed label, a request is refused
    with its 4xx and one line, and no file under collect/labels/ (nor the export) changes."""
    store = LabelStore(write_batch(tmp_path / "collect" / "to_annotate.jsonl"), tmp_path / "collect" / "labels")
    access = PageAccess.create(OWNER_TOKEN, ("maria", "li"), "127.0.0.1", [])
    maria, li = (f"Bearer {access.annotator_token(name)}" for name in ("maria", "li"))
    page = transport(make_app(store, tmp_path / "collect" / "annotated.jsonl", access))
    as_json = {"Content-Type": "application/json"}

    def post(path: str, body, authorization: str = maria, **headers) -> tuple[int, dict]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return page.send("POST", path, {**as_json, "Authorization": authorization, **headers}, raw)

    try:
        status, first = page.send("GET", "/api/next", {"Authorization": maria})
        assert status == 200
        pair = first["pair"]
        assert post("/api/label", {"label": label(pair)})[0] == 200  # maria's label, which no one may touch
        status, li_next = page.send("GET", "/api/next", {"Authorization": li})
        assert status == 200 and li_next["pair"]["id"] != pair["id"]
        before = {path.name: path.read_bytes() for path in (tmp_path / "collect").rglob("*") if path.is_file()}

        own_origin = f"http://127.0.0.1:{page.server.port}" if transport is UvicornTransport else PAGE
        good = label(li_next["pair"])
        refused = [
            ("GET", "/api/next", {}, None, 401, "no valid token"),
            ("GET", "/api/stats", {"Authorization": "Bearer not-a-token"}, None, 401, "no valid token"),
            ("POST", "/api/undo", {**as_json, "Authorization": "Basic eDp5"}, b"{}", 401, "no valid token"),
            ("POST", "/api/label", {**as_json, "Authorization": li, "Origin": "http://evil.example"},
             json.dumps({"label": good}).encode(), 403, "origin 'http://evil.example' is not this page's"),
            ("POST", "/api/label", {**as_json, "Authorization": li, "Origin": "http://127.0.0.1:1"},
             json.dumps({"label": good}).encode(), 403, "origin"),  # another web page on this machine
            ("POST", "/api/export", {**as_json, "Authorization": li, "Host": "evil.example"}, b"{}", 403,
             "host 'evil.example' is not this page's"),  # DNS rebinding
            ("GET", "/api/stats", {"Authorization": li, "Host": "evil.example:8765"}, None, 403, "host"),
            ("POST", "/api/label", {"Authorization": li, "Content-Type": "text/plain"},
             json.dumps({"label": good}).encode(), 415, "expected Content-Type application/json, got 'text/plain'"),
            ("POST", "/api/label", {"Authorization": li}, json.dumps({"label": good}).encode(), 415, "got 'none'"),
            ("POST", "/api/label", {**as_json, "Authorization": li}, json.dumps(
                {"annotator": "maria", "label": {**label(pair), "choice": "b"}}).encode(), 403,
             "this link labels as li, not as 'maria'"),
            ("POST", "/api/undo", {**as_json, "Authorization": li}, b'{"annotator": "maria"}', 403, "labels as li"),
            ("POST", "/api/label", {**as_json, "Authorization": f"Bearer {OWNER_TOKEN}"},
             json.dumps({"annotator": "maria", "label": good}).encode(), 403, "the owner's link does not label"),
            ("POST", "/api/label", {**as_json, "Authorization": li},
             json.dumps({"label": {**good, "note": "x" * 20_000}}).encode(), 400, "note: at most 4000 characters"),
            ("POST", "/api/label", {**as_json, "Authorization": li},
             json.dumps({"label": {**good, "note": "x" * 20_000_000}}).encode(), 413, "the body is over 65536 bytes"),
            ("POST", "/api/label", {**as_json, "Authorization": li}, b"not json", 400, "not a JSON object"),
            ("POST", "/api/label", {**as_json, "Authorization": li}, b"\xff\xfe{}", 400, "not a JSON object"),
            ("POST", "/api/label", {**as_json, "Authorization": li}, b"[" * 50_000, 400, "not a JSON object"),
            ("POST", "/api/label", {**as_json, "Authorization": li}, b"[1, 2]", 400, "not a JSON object"),
        ]  # fmt: skip
        malformed = [
            ("a list", ["a"], "label: expected an object, got ['a']"),
            ("text", "a", "label: expected an object, got 'a'"),
            ("missing", None, "label: expected an object, got None"),
            ("a list as the safety answer", {**good, "safety": ["both_safe"]}, "safety: expected one of"),
            ("an object as the choice", {**good, "choice": {"a": 1}}, "choice: expected 'a' or 'b'"),
            ("a number as the strength", {**good, "strength": 2}, "strength: expected one of"),
            ("a number as the note", {**good, "note": 5}, "note: expected text"),
            ("a list as the id", {**good, "id": [good["id"]]}, "label: id ["),
            ("true as the id", {**good, "id": True}, "label: id True is not in"),
            ("an unknown id", {**good, "id": "p99"}, "label: id 'p99' is not in"),
            ("skipped as text", {"id": good["id"], "skipped": "yes"}, "skipped: expected true or false"),
            ("an unknown field", {**good, "annotator": "maria"}, "unknown field 'annotator'"),
            ("no strength", {"id": good["id"], "choice": "a"}, "strength: expected one of"),
        ]
        refused += [("POST", "/api/label", {**as_json, "Authorization": li}, json.dumps({"label": bad}).encode(), 400,
                     expected) for _, bad, expected in malformed]  # fmt: skip
        for method, path, headers, body, status, expected in refused:
            got, reply = page.send(method, path, headers, body)
            assert (got, expected in reply.get("error", "")) == (status, True), (method, path, headers, got, reply)
            assert "\n" not in reply["error"]
        after = {path.name: path.read_bytes() for path in (tmp_path / "collect").rglob("*") if path.is_file()}
        assert after == before and "annotated.jsonl" not in after

        # li's own undo takes back nothing of maria's; the owner's link exports and sees the agreement.
        assert post("/api/undo", {}, authorization=li)[1]["pair"] is None
        assert read_jsonl(tmp_path / "collect" / "labels" / "maria.jsonl")[0]["choice"] == "a"
        status, exported = post("/api/export", {}, authorization=f"Bearer {OWNER_TOKEN}", Origin=own_origin)
        assert status == 200 and exported["labelled"] == 1
        assert read_jsonl(tmp_path / "collect" / "annotated.jsonl")[0]["annotator"] == "maria"
    finally:
        if transport is UvicornTransport:
            page.server.stop()


def test_the_recipe_exports_or_says_what_is_wrong_in_one_line(tmp_path):
    import subprocess
    import sys

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "annotate.py"
    batch = write_batch(tmp_path / "runs" / "mine" / "round-2" / "collect" / "to_annotate.jsonl", size=2)
    LabelStore(batch, batch.parent / "labels").add("ann", label(read_jsonl(batch)[0]))
    args = [sys.executable, str(recipe), "--round", "2", "--name", "mine", "--runs_dir", str(tmp_path / "runs")]
    done = subprocess.run([*args, "--export_only", "true"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"1 labelled pairs, 1 not yet, in {batch.parent / 'annotated.jsonl'}" in done.stdout
    assert read_jsonl(batch.parent / "annotated.jsonl")[0]["annotator"] == "ann"
    for extra, expected in [(["--round", "3"], "batch: no file at"), (["--overlap", "2"], "overlap: expected a share"),
                            (["--batch", str(batch)], "give --round N (with --name) or --batch FILE")]:  # fmt: skip
        failed = subprocess.run([*args, *extra], capture_output=True, text=True)
        assert failed.returncode == 2 and expected in failed.stderr, failed.stderr[-2000:]
        assert len(failed.stderr.strip().splitlines()) == 1


# -- the page in a browser ------------------------------------------------------------------------------------------


class PageServer:
    """An app served by uvicorn on 127.0.0.1 (a free port), in a thread, until `stop`."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "the annotation page did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def label_with_keys(driver, keys: str) -> None:
    """Press each key on the page, as an annotator does (a, b, 1-4, q/w/e, Enter, k, u)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    actions = ActionChains(driver)
    for key in keys:
        actions.send_keys(Keys.ENTER if key == "\n" else key)
    actions.perform()


def wait_for(driver, condition, what: str, seconds: float = 20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition(driver)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"the page never showed {what}: {driver.find_element('tag name', 'body').text[:500]}")


def shown_pair(driver) -> str:
    return driver.find_element("id", "prompt").text


class AnnotateCommand:
    """`align annotate` (recipes/annotate.py) run as a user runs it, in a process; `links` are the ones it printed
    (who -> link), `warning` what it printed on stderr before serving."""

    def __init__(self, *args: str, token: str | None = None, port: int | None = None) -> None:
        import os
        import subprocess
        import sys

        recipe = Path(__file__).resolve().parents[1] / "recipes" / "annotate.py"
        environment = {name: value for name, value in os.environ.items() if name != "ALIGN_ANNOTATE_TOKEN"}
        if token is not None:
            environment["ALIGN_ANNOTATE_TOKEN"] = token  # as a user keeps it out of the process list
        self.port = port or free_port()
        self.process = subprocess.Popen([sys.executable, str(recipe), *args, "--port", str(self.port)], text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)  # fmt: skip
        names = args[args.index("--annotators") + 1].split(",") if "--annotators" in args else []
        first = self.process.stdout.readline()
        assert "comparisons in" in first, first + self.process.stderr.read()[-2000:]
        self.links: dict[str, str] = {}
        while len(self.links) < 1 + len(names):  # the owner's link, then one per annotator
            who, _, link = self.process.stdout.readline().strip().partition(": ")
            assert link, self.process.stderr.read()[-2000:]
            self.links[who] = link
        deadline = time.time() + 60
        while True:  # uvicorn listens a moment after the links are printed
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.process.poll() is None and time.time() < deadline, self.process.stderr.read()[-2000:]
                time.sleep(0.1)

    def stop(self) -> str:
        """Stop the server as Ctrl-C does; returns what it printed on stderr."""
        import signal

        self.process.send_signal(signal.SIGINT)
        try:
            _, stderr = self.process.communicate(timeout=30)
        except Exception:
            self.process.kill()
            _, stderr = self.process.communicate()
        return stderr


def test_the_command_prints_one_link_each_and_warns_beyond_this_machine(tmp_path):
    """On every interface: one link per annotator, which works from this machine, and a warning saying what the
    tokens protect and that the traffic is not encrypted; on 127.0.0.1: no warning."""
    import urllib.error
    import urllib.request

    batch = write_batch(tmp_path / "to_annotate.jsonl", size=2)
    command = AnnotateCommand("--batch", str(batch), "--annotators", "maria,li", "--host", "0.0.0.0",
                              token=OWNER_TOKEN)  # fmt: skip
    try:
        assert set(command.links) == {"owner (export, agreement)", "maria", "li"}
        maria_token = command.links["maria"].split("?token=")[1]
        assert maria_token == PageAccess(OWNER_TOKEN).annotator_token("maria")  # the same link after a restart
        request = urllib.request.Request(f"http://127.0.0.1:{command.port}/api/session",
                                         headers={"Authorization": f"Bearer {maria_token}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert json.loads(reply.read())["annotator"] == "maria"
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(f"http://127.0.0.1:{command.port}/api/session", timeout=30)
    finally:
        stderr = command.stop()
    assert "warning: listening on 0.0.0.0, beyond this machine" in stderr and "not encrypted" in stderr
    assert "Traceback" not in stderr

    command = AnnotateCommand("--batch", str(batch))
    try:
        ((who, link),) = command.links.items()
        assert who == "annotators (each types a name)"
        assert link.startswith(f"http://127.0.0.1:{command.port}/?token=")
        assert len(link.split("?token=")[1]) >= 32  # a random token, as none was given
    finally:
        stderr = command.stop()
    assert "warning" not in stderr and "Traceback" not in stderr


@needs_browser
def test_the_page_in_a_browser_labels_resumes_and_feeds_the_round(tmp_path, user_models):
    """A round on the user's data stops with its batch; `align annotate --annotators ann` prints ann's link; ann
    opens it in headless chromium and labels three pairs with the keyboard, closes the tab (and the server
    stops), reopens the same link (the same token, given in the environment) and resumes at the fourth, labels
    the rest; the owner's link exports; the export loads with `load_preferences` and the same round command
    trains the round's reward models on it."""
    from test_annotation import annotated_round, pytest_raises_annotation_needed

    config, run_round = annotated_round(tmp_path, user_models)
    pytest_raises_annotation_needed(run_round)
    page = AnnotationPageConfig(round=1, name=config.name, runs_dir=config.runs_dir, overlap=0)
    batch = read_jsonl(page.batch_path)
    args = ("--round", "1", "--name", config.name, "--runs_dir", config.runs_dir, "--overlap", "0",
            "--annotators", "ann")  # fmt: skip

    command, driver = AnnotateCommand(*args, token=OWNER_TOKEN), browser()
    link = command.links["ann"]
    try:
        driver.get(link)
        first = wait_for(driver, shown_pair, "a pair")
        assert driver.find_element("id", "who").text == "ann" and "token" not in driver.current_url
        keys = {False: "a2\n", True: "b1q\n"}  # helpfulness: A, better; safety: B, significantly, only B safe
        for number in range(3):
            progress = f"you: {number} labelled"
            wait_for(driver, lambda d, p=progress: p in d.find_element("id", "progress").text, progress)
            label_with_keys(driver, keys[batch[number]["is_safety"]])
        wait_for(driver, lambda d: "you: 3 labelled" in d.find_element("id", "progress").text, "3 labelled")
    finally:
        driver.quit()  # the tab is closed...
        command.stop()  # ...and the server stopped: nothing of the three labels may be lost
    assert len(read_jsonl(page.labels_dir / "ann.jsonl")) == 3

    command, driver = AnnotateCommand(*args, token=OWNER_TOKEN, port=command.port), browser()
    assert command.links["ann"] == link
    try:
        driver.get(link)
        wait_for(driver, lambda d: "you: 3 labelled" in d.find_element("id", "progress").text, "the resumed count")
        assert batch[3]["prompt"][-1]["content"] in shown_pair(driver) and shown_pair(driver) != first
        for number in range(3, len(batch)):
            progress = f"you: {number} labelled"
            wait_for(driver, lambda d, p=progress: p in d.find_element("id", "progress").text, progress)
            label_with_keys(driver, keys[batch[number]["is_safety"]])
        wait_for(driver, lambda d: d.find_element("id", "finished").is_displayed(), "the end of the batch")
        driver.get(command.links["owner (export, agreement)"])
        wait_for(driver, lambda d: d.find_element("id", "owner").is_displayed(), "the owner's page")
        driver.find_element("id", "export").click()
        wait_for(driver, lambda d: f"{len(batch)} labelled, 0 not" in d.find_element("id", "exported").text, "export")
    finally:
        driver.quit()
        command.stop()

    exported = read_jsonl(page.export_path)
    for record, original in zip(exported, batch):
        assert record["choice"] == ("b" if original["is_safety"] else "a") and record["annotator"] == "ann"
    pairs = read_annotations(page.export_path)
    for target, rows in pairs.items():
        atomic_write_jsonl(tmp_path / f"{target}.jsonl", rows)
        assert len(load_preferences(str(tmp_path / f"{target}.jsonl"), target=target)) == len(rows) > 0
    manifest = run_round()
    trained = manifest["rounds"]["1"]["reward_model_helpfulness"]
    done = json.loads((Path(trained["final"]).parent / "DONE.json").read_text())
    assert done["own_pairs"] == len(pairs["helpfulness"])

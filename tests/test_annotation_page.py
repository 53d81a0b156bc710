"""The annotation page: its label store and JSON API (in-process), and the page itself in a real headless browser."""

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from align.annotation import AnnotationError, read_annotations
from align.annotation_page import AnnotationPageConfig, LabelStore, make_app
from align.data import load_preferences
from align.io import atomic_write_jsonl, read_jsonl
from conftest import browser, needs_browser


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


def test_the_json_api(tmp_path):
    from starlette.testclient import TestClient

    store = LabelStore(write_batch(tmp_path / "b.jsonl", size=3), tmp_path / "labels", overlap=0)
    client = TestClient(make_app(store, tmp_path / "annotated.jsonl"))
    assert "Llama 2 protocol" in client.get("/").text
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

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PageServer:
    """The page's app served by uvicorn on the loopback interface, in a thread, until `stop`."""

    def __init__(self, config: AnnotationPageConfig) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(make_app(config.store(), config.export_path), host=config.host,
                                                    port=config.port, log_level="warning"))  # fmt: skip
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


@needs_browser
def test_the_page_in_a_browser_labels_resumes_and_feeds_the_round(tmp_path, user_models):
    """A round on the user's data stops with its batch; an annotator labels three pairs with the keyboard in
    headless chromium, closes the tab (and the server stops), reopens and resumes at the fourth, labels the rest;
    the export loads with `load_preferences` and the same round command trains the round's reward models on it."""
    from test_annotation import annotated_round, pytest_raises_annotation_needed

    config, run_round = annotated_round(tmp_path, user_models)
    pytest_raises_annotation_needed(run_round)
    page = AnnotationPageConfig(round=1, name=config.name, runs_dir=config.runs_dir, port=free_port(), overlap=0)
    batch = read_jsonl(page.batch_path)
    url = f"http://127.0.0.1:{page.port}/"

    server, driver = PageServer(page), browser()
    try:
        driver.get(url)
        driver.find_element("id", "name").send_keys("ann\n")
        first = wait_for(driver, shown_pair, "a pair")
        keys = {False: "a2\n", True: "b1q\n"}  # helpfulness: A, better; safety: B, significantly, only B safe
        for number in range(3):
            progress = f"you: {number} labelled"
            wait_for(driver, lambda d, p=progress: p in d.find_element("id", "progress").text, progress)
            label_with_keys(driver, keys[batch[number]["is_safety"]])
        wait_for(driver, lambda d: "you: 3 labelled" in d.find_element("id", "progress").text, "3 labelled")
    finally:
        driver.quit()  # the tab is closed...
        server.stop()  # ...and the server stopped: nothing of the three labels may be lost
    assert len(read_jsonl(page.labels_dir / "ann.jsonl")) == 3

    server, driver = PageServer(page), browser()
    try:
        driver.get(url)
        driver.find_element("id", "name").send_keys("ann\n")
        wait_for(driver, lambda d: "you: 3 labelled" in d.find_element("id", "progress").text, "the resumed count")
        assert batch[3]["prompt"][-1]["content"] in shown_pair(driver) and shown_pair(driver) != first
        for number in range(3, len(batch)):
            progress = f"you: {number} labelled"
            wait_for(driver, lambda d, p=progress: p in d.find_element("id", "progress").text, progress)
            label_with_keys(driver, keys[batch[number]["is_safety"]])
        wait_for(driver, lambda d: d.find_element("id", "finished").is_displayed(), "the end of the batch")
        driver.find_element("id", "export").click()
        wait_for(driver, lambda d: f"{len(batch)} labelled, 0 not" in d.find_element("id", "exported").text, "export")
    finally:
        driver.quit()
        server.stop()

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

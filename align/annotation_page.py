"""The annotation page: a round's comparison batch labelled in a browser with Llama 2's protocol (docs/method.md §5).

For each prompt an annotator sees two answers and answers the paper's three questions (§3.2.1): which answer is
better, how much better (significantly better, better, slightly better, negligibly better / unsure), and the
safety of the two (the preferred one safe and the other not, both safe, both unsafe). Every choice has a key;
a free-text note, skip and undo are there too.

`LabelStore` keeps each annotator's labels in `<labels_dir>/<annotator>.jsonl`, rewritten atomically at every
label, so a closed tab or a killed server loses nothing and an annotator who comes back resumes at the next pair
they have not seen. Pairs go to one annotator each, except a seeded share (`overlap`) that goes to two different
annotators, for agreement. `export` writes the batch with the labels filled in (the first label of a pair; the
notes of all) as the file the round reads (`round-N/collect/annotated.jsonl`, `align.annotation`), and `stats`
gives the agreement on double-annotated pairs and each annotator's strength histogram.

`make_app` serves it all as a small ASGI app (Starlette: one HTML page with plain JavaScript, and a JSON API);
`recipes/annotate.py` runs it with uvicorn. The web packages are the optional extra `align-rlhf[annotate]`. Every API
call needs a token of the page's links, from the page's own host and origin (`align.annotation_access`), and
takes only a JSON object of at most `MAX_BODY_BYTES`; anything else is a 4xx with its reason, never a 500.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .annotation import SAFETY_ANSWERS, AnnotationError, safety_labels
from .annotation_access import ANY_ADDRESS, PageAccess, check_token, is_loopback, link_host
from .config import check_field_types
from .io import atomic_write_jsonl, read_jsonl

# The paper's four answers to "how much better" (§3.2.1); the last one stands for "negligibly better / unsure".
PAGE_STRENGTHS = ("significantly_better", "better", "slightly_better", "negligibly_better")
ANNOTATOR_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
CLAIM_SECONDS = 600  # a pair shown to one annotator is not shown to another for this long (unless double)
MAX_NOTE_CHARS = 4000  # a note is a sentence or a paragraph; a longer one is refused, not stored
MAX_BODY_BYTES = 64 * 1024  # the largest label (a full note in 4-byte characters, JSON-escaped) fits in this
LABEL_KEYS = {"id", "choice", "strength", "safety", "note", "skipped"}


@dataclass
class AnnotationPageConfig:
    """Which batch the page serves, where labels go, and where the page listens."""

    round: int | None = field(default=None, metadata={"help": "the round whose batch to label (with --name)"})
    name: str = field(default="demo", metadata={"help": "run name: the batch is <runs_dir>/<name>/round-N/collect/"})
    runs_dir: str = field(default="runs", metadata={"help": "folder of all runs"})
    batch: str | None = field(
        default=None, metadata={"help": "a comparison batch file instead of a round's (to_annotate.jsonl)"}
    )
    out: str | None = field(
        default=None, metadata={"help": "where the export goes (default: annotated.jsonl beside the batch)"}
    )
    overlap: float = field(default=0.1, metadata={"help": "share of pairs labelled by two annotators (agreement)"})
    seed: int = field(default=0, metadata={"help": "seed of which pairs are double-annotated"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on (0.0.0.0: every interface)"})
    port: int = field(default=8765, metadata={"help": "port to listen on"})
    annotators: str | None = field(
        default=None,
        metadata={"help": "comma-separated names (maria,li): one link each, and a label counts for the link it "
                  "came from; without it, annotators type their name on the page"},
    )  # fmt: skip
    token: str | None = field(
        default=None,
        metadata={"help": "the owner's access token (16+ URL-safe characters; or $ALIGN_ANNOTATE_TOKEN); keeps "
                  "every link valid across restarts (default: a new random one at each start)"},
    )  # fmt: skip
    allowed_hosts: str | None = field(
        default=None,
        metadata={"help": "comma-separated host names the page also answers to (a DNS name, a reverse proxy's); "
                  "'*': any (default: the bound address and, on 0.0.0.0, this machine's names)"},
    )  # fmt: skip
    export_only: bool = field(default=False, metadata={"help": "write the export and exit, without serving"})

    def __post_init__(self) -> None:
        check_field_types(self)
        if (self.round is None) == (self.batch is None):
            raise ValueError("round / batch: give --round N (with --name) or --batch FILE, one of them")
        if self.round is not None and self.round < 1:
            raise ValueError(f"round: must be at least 1, got {self.round}")
        if not 0 <= self.overlap <= 1:
            raise ValueError(f"overlap: expected a share between 0 and 1, got {self.overlap}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port: expected 1-65535, got {self.port}")
        if self.token is not None:
            check_token(self.token)
        names = self.annotator_names
        for name in names:
            try:
                check_annotator(name)
            except AnnotationError as error:
                raise ValueError(f"annotators: {str(error).removeprefix('annotator: ')}") from None
        if len(set(names)) != len(names):
            raise ValueError(f"annotators: a name is given twice in {self.annotators!r}")
        for host in self.extra_hosts:
            if host != "*" and (not host or set(host) & set("/:@ ?#")):
                raise ValueError(f"allowed_hosts: expected host names without scheme or port, got {host!r}")

    @property
    def annotator_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.annotators.split(",")) if self.annotators else ()

    @property
    def extra_hosts(self) -> list[str]:
        return [host.strip() for host in self.allowed_hosts.split(",")] if self.allowed_hosts else []

    @property
    def listens_beyond_this_machine(self) -> bool:
        return self.host in ANY_ADDRESS or not is_loopback(self.host)

    @property
    def base_url(self) -> str:
        return f"http://{link_host(self.host)}:{self.port}/"

    def access(self) -> PageAccess:
        """The page's tokens and allowed hosts (a new random owner token unless one is given)."""
        return PageAccess.create(self.token, self.annotator_names, self.host, self.extra_hosts)

    @property
    def batch_path(self) -> Path:
        if self.batch is not None:
            return Path(self.batch)
        return Path(self.runs_dir) / self.name / f"round-{self.round}" / "collect" / "to_annotate.jsonl"

    @property
    def labels_dir(self) -> Path:
        return self.batch_path.parent / "labels"

    @property
    def export_path(self) -> Path:
        return Path(self.out) if self.out else self.batch_path.parent / "annotated.jsonl"

    def store(self) -> LabelStore:
        if not self.batch_path.is_file():
            hint = " (a round on your data writes it when it has no annotated files)" if self.batch is None else ""
            raise FileNotFoundError(f"batch: no file at {self.batch_path}{hint}")
        return LabelStore(self.batch_path, self.labels_dir, self.overlap, self.seed)


def check_annotator(name: Any) -> str:
    """An annotator's name, which also names their labels file: letters, digits, '_', '-', '.'."""
    if not isinstance(name, str) or not name or len(name) > 64 or not set(name) <= ANNOTATOR_NAME_CHARS:
        raise AnnotationError(f"annotator: expected 1-64 letters, digits, '_', '-' or '.', got {name!r}")
    if name.startswith("."):
        raise AnnotationError(f"annotator: must not start with '.', got {name!r}")
    return name


class LabelStore:
    """The labels of one batch, by annotator, on disk; see the module docstring."""

    def __init__(self, batch_path: str | Path, labels_dir: str | Path, overlap: float = 0.1, seed: int = 0) -> None:
        if not 0 <= overlap <= 1:
            raise AnnotationError(f"overlap: expected a share between 0 and 1, got {overlap}")
        self.batch_path, self.labels_dir = Path(batch_path), Path(labels_dir)
        if not self.batch_path.is_file():
            raise FileNotFoundError(f"batch: no file at {self.batch_path}")
        self.pairs = read_jsonl(self.batch_path)
        for number, record in enumerate(self.pairs, start=1):
            missing = [key for key in ("id", "prompt", "response_a", "response_b") if not record.get(key)]
            if missing:
                raise AnnotationError(f"{self.batch_path}: line {number}: field {missing[0]!r}: missing")
        self.by_id = {str(record["id"]): record for record in self.pairs}
        if len(self.by_id) != len(self.pairs):
            raise AnnotationError(f"{self.batch_path}: repeated ids; each comparison needs its own id")
        ids = sorted(self.by_id)
        self.double = set(random.Random(seed).sample(ids, round(overlap * len(ids))))
        self.labels: dict[str, list[dict[str, Any]]] = {}
        self.claims: dict[str, tuple[str, float]] = {}
        self.lock = threading.Lock()
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.labels_dir.glob("*.jsonl")):
            self.labels[path.stem] = read_jsonl(path)

    # -- what an annotator sees next --------------------------------------------------------------------------

    def wanted(self, pair_id: str) -> int:
        """How many annotators label this pair: two for the overlap share, one otherwise."""
        return 2 if pair_id in self.double else 1

    def label_counts(self) -> Counter[str]:
        """How many annotators labelled each pair (a skip is not a label; an annotator labels a pair once)."""
        return Counter(label["id"] for labels in self.labels.values() for label in labels if not label.get("skipped"))

    def next_pair(self, annotator: str) -> dict[str, Any] | None:
        """The next pair for `annotator` (the batch's order), claimed for them; None when none is left."""
        annotator = check_annotator(annotator)
        with self.lock:
            seen = {label["id"] for label in self.labels.get(annotator, [])}
            counts, now = self.label_counts(), time.time()
            for record in self.pairs:
                pair_id = str(record["id"])
                if pair_id in seen or counts[pair_id] >= self.wanted(pair_id):
                    continue
                holder, since = self.claims.get(pair_id, (annotator, now))
                if holder != annotator and now - since < CLAIM_SECONDS and self.wanted(pair_id) == 1:
                    continue
                self.claims[pair_id] = (annotator, now)
                return record
            return None

    def progress(self, annotator: str) -> dict[str, int]:
        """Pairs this annotator labelled, pairs with every label they need, and the batch size."""
        counts = self.label_counts()
        done = sum(counts[pair_id] >= self.wanted(pair_id) for pair_id in self.by_id)
        mine = sum(not label.get("skipped") for label in self.labels.get(annotator, []))
        return {"mine": mine, "complete": done, "total": len(self.pairs)}

    # -- labels -----------------------------------------------------------------------------------------------

    def add(self, annotator: str, label: dict[str, Any]) -> dict[str, Any]:
        """Check and save one label (or a skip: `{"id", "skipped": true}`) of `annotator`; returns it."""
        annotator = check_annotator(annotator)
        if not isinstance(label, dict):
            raise AnnotationError(f"label: expected an object, got {_short(label)}")
        if unknown := sorted(set(label) - LABEL_KEYS):
            raise AnnotationError(f"label: unknown field {unknown[0]!r}; expected {sorted(LABEL_KEYS)}")
        pair_id = label.get("id")
        if not isinstance(pair_id, (str, int)) or isinstance(pair_id, bool) or str(pair_id) not in self.by_id:
            raise AnnotationError(f"label: id {_short(pair_id)} is not in {self.batch_path}")
        pair_id = str(pair_id)
        skipped = label.get("skipped", False)
        if not isinstance(skipped, bool):
            raise AnnotationError(f"label: skipped: expected true or false, got {_short(skipped)}")
        record = {"id": pair_id, "at": round(time.time(), 3)}
        if skipped:
            record["skipped"] = True
        else:
            record.update(self.check_answers(label, bool(self.by_id[pair_id].get("is_safety"))))
        with self.lock:
            labels = [old for old in self.labels.get(annotator, []) if old["id"] != pair_id] + [record]
            atomic_write_jsonl(self.labels_dir / f"{annotator}.jsonl", labels)
            self.labels[annotator] = labels
            self.claims.pop(pair_id, None)
        return record

    @staticmethod
    def check_answers(label: dict[str, Any], is_safety: bool) -> dict[str, Any]:
        choice, strength, safety = label.get("choice"), label.get("strength"), label.get("safety")
        if not isinstance(choice, str) or choice not in ("a", "b"):
            raise AnnotationError(f"label: choice: expected 'a' or 'b', got {_short(choice)}")
        if not isinstance(strength, str) or strength not in PAGE_STRENGTHS:
            raise AnnotationError(f"label: strength: expected one of {list(PAGE_STRENGTHS)}, got {_short(strength)}")
        if safety is None and is_safety:
            raise AnnotationError(
                "label: safety: required on a safety prompt (preferred_only, both_safe, both_unsafe)"
            )
        if safety is not None and (not isinstance(safety, str) or safety not in SAFETY_ANSWERS):
            raise AnnotationError(f"label: safety: expected one of {list(SAFETY_ANSWERS)}, got {_short(safety)}")
        note = label.get("note") or ""
        if not isinstance(note, str):
            raise AnnotationError(f"label: note: expected text, got {_short(note)}")
        if len(note) > MAX_NOTE_CHARS:
            raise AnnotationError(f"label: note: at most {MAX_NOTE_CHARS} characters, got {len(note)}")
        return {"choice": choice, "strength": strength, "safety": safety, "note": note.strip()}

    def undo(self, annotator: str) -> dict[str, Any] | None:
        """Remove `annotator`'s last label (or skip) and return its pair, shown again; None when there is none."""
        annotator = check_annotator(annotator)
        with self.lock:
            labels = self.labels.get(annotator, [])
            if not labels:
                return None
            last = labels[-1]
            atomic_write_jsonl(self.labels_dir / f"{annotator}.jsonl", labels[:-1])
            self.labels[annotator] = labels[:-1]
            self.claims[last["id"]] = (annotator, time.time())
            return {**self.by_id[last["id"]], "previous": last}

    # -- the file the round reads, and agreement --------------------------------------------------------------

    def export(self, path: str | Path) -> dict[str, int]:
        """Write the batch with its labels (each pair's first label; every note) to `path` atomically; returns
        how many pairs are labelled and unlabelled."""
        first: dict[str, tuple[float, str, dict[str, Any]]] = {}
        notes: dict[str, list[str]] = {}
        for name, labels in self.labels.items():
            for label in labels:
                if label.get("skipped"):
                    continue
                if label["id"] not in first or label["at"] < first[label["id"]][0]:
                    first[label["id"]] = (label["at"], name, label)
                if label.get("note"):
                    notes.setdefault(label["id"], []).append(f"{name}: {label['note']}")
        records = []
        for record in self.pairs:
            pair_id = str(record["id"])
            if pair_id in first:
                _, name, label = first[pair_id]
                record = {**record, "choice": label["choice"], "strength": label["strength"],
                          **safety_labels(label["choice"], label["safety"]), "annotator": name,
                          "notes": notes.get(pair_id, [])}  # fmt: skip
            records.append(record)
        atomic_write_jsonl(path, records)
        return {"labelled": len(first), "unlabelled": len(self.pairs) - len(first)}

    def stats(self) -> dict[str, Any]:
        """Agreement on the pairs two annotators labelled (same choice; same choice and strength) and each
        annotator's strength histogram and skips."""
        by_pair: dict[str, list[dict[str, Any]]] = {}
        for labels in self.labels.values():
            for label in labels:
                if not label.get("skipped"):
                    by_pair.setdefault(label["id"], []).append(label)
        doubles = [labels[:2] for labels in by_pair.values() if len(labels) >= 2]
        same_choice = sum(a["choice"] == b["choice"] for a, b in doubles)
        same_both = sum(a["choice"] == b["choice"] and a["strength"] == b["strength"] for a, b in doubles)
        annotators = {}
        for name, labels in sorted(self.labels.items()):
            counts = Counter(label["strength"] for label in labels if not label.get("skipped"))
            annotators[name] = {
                "labelled": sum(counts.values()),
                "skipped": sum(bool(label.get("skipped")) for label in labels),
                "strengths": {strength: counts.get(strength, 0) for strength in PAGE_STRENGTHS},
            }
        return {
            "double_annotated": len(doubles),
            "choice_agreement": same_choice / len(doubles) if doubles else None,
            "choice_and_strength_agreement": same_both / len(doubles) if doubles else None,
            "annotators": annotators,
        }


def _short(value: Any) -> str:
    """`value` for an error message, cut to 60 characters (a refused field may be megabytes)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def shown(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the page shows of a pair: never how the answers were sampled (`meta`), which could bias."""
    if record is None:
        return None
    keys = ("id", "prompt", "is_safety", "response_a", "response_b", "previous")
    return {key: record[key] for key in keys if key in record}


class RequestRefused(Exception):
    """A request the page answers with a 4xx status and one line saying why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def make_app(store: LabelStore, export_path: str | Path, access: PageAccess) -> Any:
    """The ASGI app of the page (see the module docstring): `/` the page, `/api/*` its JSON calls, open to the
    holders of `access`'s tokens from the page's own host and origin."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    # The links carry tokens: no page may frame this one, no request sends its URL on, nothing is cached.
    private = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY",
               "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}  # fmt: skip

    def checked_origin(request: Request) -> None:
        host = request.headers.get("host")
        if not access.host_allowed(host):
            raise RequestRefused(403, f"host {host!r} is not this page's (align annotate --allowed_hosts NAME)")
        if not access.origin_allowed(request.headers.get("origin"), host):
            raise RequestRefused(403, f"origin {request.headers.get('origin')!r} is not this page's")

    def checked_caller(request: Request) -> Any:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        caller = access.caller(token.strip() if scheme.lower() == "bearer" else None)
        if caller is None:
            raise RequestRefused(401, "no valid token: open the link align annotate printed")
        return caller

    async def json_body(request: Request) -> dict[str, Any]:
        if request.method != "POST":
            return dict(request.query_params)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise RequestRefused(415, f"expected Content-Type application/json, got {kind or 'none'!r}")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise RequestRefused(413, f"the body is over {MAX_BODY_BYTES} bytes")
        raw = bytearray()
        async for chunk in request.stream():  # a chunked body declares no length: count it as it comes
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise RequestRefused(413, f"the body is over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
            raise RequestRefused(400, "the body is not a JSON object") from None
        if not isinstance(body, dict):
            raise RequestRefused(400, "the body is not a JSON object")
        return body

    def annotator_of(caller: Any, body: dict[str, Any]) -> str:
        """The annotator a call acts for: the one its link fixes, else (names typed on the page) the body's."""
        named = body.get("annotator")
        if caller.annotator is not None:
            if named is not None and named != caller.annotator:
                raise RequestRefused(403, f"this link labels as {caller.annotator}, not as {_short(named)}")
            return caller.annotator
        if access.annotators:
            raise RequestRefused(403, "the owner's link does not label; each annotator uses their own link")
        return check_annotator(named)

    def api(handler: Any) -> Any:
        """An API endpoint: the checks (host, origin, token, body) in that order, then `handler(caller, body)`."""

        async def endpoint(request: Request) -> Response:
            try:
                checked_origin(request)
                caller = checked_caller(request)
                return JSONResponse(handler(caller, await json_body(request)), headers=private)
            except RequestRefused as refused:
                return JSONResponse({"error": str(refused)}, status_code=refused.status, headers=private)
            except AnnotationError as error:
                return JSONResponse({"error": str(error)}, status_code=400, headers=private)

        return endpoint

    def answer(annotator: str, pair: dict[str, Any] | None) -> dict[str, Any]:
        return {"pair": shown(pair), "progress": store.progress(annotator)}

    def session(caller: Any, body: dict[str, Any]) -> dict[str, Any]:
        fixed = bool(access.annotators)
        return {"annotator": caller.annotator, "owner": caller.annotator is None, "names_fixed": fixed}

    def next_pair(caller: Any, body: dict[str, Any]) -> dict[str, Any]:
        annotator = annotator_of(caller, body)
        return answer(annotator, store.next_pair(annotator))

    def label(caller: Any, body: dict[str, Any]) -> dict[str, Any]:
        annotator = annotator_of(caller, body)
        store.add(annotator, body.get("label"))
        return answer(annotator, store.next_pair(annotator))

    def undo(caller: Any, body: dict[str, Any]) -> dict[str, Any]:
        annotator = annotator_of(caller, body)
        return answer(annotator, store.undo(annotator))

    def export(caller: Any, body: dict[str, Any]) -> dict[str, Any]:
        return {**store.export(export_path), "path": str(export_path)}

    async def page(request: Request) -> Response:
        try:
            checked_origin(request)
        except RequestRefused as refused:
            return Response(str(refused), status_code=refused.status, media_type="text/plain", headers=private)
        return HTMLResponse(PAGE_HTML, headers=private)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/session", api(session)),
            Route("/api/next", api(next_pair)),
            Route("/api/label", api(label), methods=["POST"]),
            Route("/api/undo", api(undo), methods=["POST"]),
            Route("/api/export", api(export), methods=["POST"]),
            Route("/api/stats", api(lambda caller, body: store.stats())),
        ]
    )
    return app


PAGE_HTML = (Path(__file__).parent / "annotation_page.html").read_text(encoding="utf-8")

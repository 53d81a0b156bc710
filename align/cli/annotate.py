"""Label a round's comparison batch in the browser, with Llama 2's questions (docs/method.md §5;
docs/annotation.md; align.annotation_page).

    pip install -e ".[annotate]"
    align annotate --round 2 --name 7b            # then open the printed link (one tab per annotator)
    align annotate --round 2 --name 7b --annotators maria,li --host 0.0.0.0 --overlap 0.2
                                                  # a team: one link each, labels tied to their link
    align annotate --round 2 --name 7b --export_only                  # write annotated.jsonl, exit
    python recipes/annotate.py --round 2 --name 7b                    # the same, as a script

Every call of the page needs the token of a printed link (a new one at each start unless --token or
$ALIGN_ANNOTATE_TOKEN gives it), from the page's own host and origin; see docs/annotation.md, "A team".

Serves `runs/<name>/round-N/collect/to_annotate.jsonl` (what a round on your data writes when it has no
annotated files); each annotator's labels are saved at once under `collect/labels/`, and "Export" (or
`--export_only`) writes `collect/annotated.jsonl`, which the same round command then reads.
"""

import sys

from align.annotation import AnnotationError
from align.annotation_page import AnnotationPageConfig, make_app
from align.config import ONE_LINE_ERRORS, exit_with_error, parse_config


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    config = parse_config(AnnotationPageConfig, argv, prog, description=__doc__)
    try:
        store = config.store()
        if config.export_only:
            counts = store.export(config.export_path)
            print(f"{counts['labelled']} labelled pairs, {counts['unlabelled']} not yet, in {config.export_path}")
            return
        try:
            import uvicorn
        except ImportError:
            raise ValueError('the annotation page needs its extra: pip install -e ".[annotate]"') from None
    except (*ONE_LINE_ERRORS, AnnotationError) as error:
        exit_with_error(str(error), prog)
    access = config.access()
    print(f"{len(store.pairs)} comparisons in {config.batch_path}; labels in {config.labels_dir}")
    for who, link in access.links(config.base_url):
        print(f"  {who}: {link}")
    if config.listens_beyond_this_machine:
        names = "" if config.annotator_names else " under any name (give --annotators for one link each)"
        print(f"warning: listening on {config.host}, beyond this machine: whoever holds a link can label{names}; "
              "the tokens keep everyone else out, but the traffic is plain HTTP, not encrypted: on a network you "
              "do not trust, put the page behind TLS (docs/annotation.md, 'A team')", file=sys.stderr)  # fmt: skip
    sys.stdout.flush()
    app = make_app(store, config.export_path, access)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")


if __name__ == "__main__":
    main()

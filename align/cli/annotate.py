"""Label a round's comparison batch in the browser, with Llama 2's questions (docs/method.md §5;
docs/annotation.md; align.annotation_page).

    pip install -e ".[annotate]"
    align annotate --round 2 --name 7b            # then open http://127.0.0.1:8765 (one tab each)
    align annotate --round 2 --name 7b --host 0.0.0.0 --overlap 0.2   # a team on the network
    align annotate --round 2 --name 7b --export_only                  # write annotated.jsonl, exit
    python recipes/annotate.py --round 2 --name 7b                    # the same, as a script

Serves `runs/<name>/round-N/collect/to_annotate.jsonl` (what a round on your data writes when it has no
annotated files); each annotator's labels are saved at once under `collect/labels/`, and "Export" (or
`--export_only`) writes `collect/annotated.jsonl`, which the same round command then reads.
"""

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
    print(f"{len(store.pairs)} comparisons in {config.batch_path}; labels in {config.labels_dir}; "
          f"open http://{config.host}:{config.port}", flush=True)  # fmt: skip
    uvicorn.run(make_app(store, config.export_path), host=config.host, port=config.port, log_level="warning")


if __name__ == "__main__":
    main()

"""`asif tune` on the Flickr8k anchors, against the choice made on the calibration data.

    python benchmarks/tune_flickr8k.py [--rows FILE]

The tune's scoring (asif_vdb.maths.tune.tune, what ``asif tune`` runs on a store's anchors) on the
30,455 Flickr8k-train pairs, grouped by image, 1,000 images held out; the table as ``asif tune``
prints it. Then both choices, the tune's and benchmarks/default_method_search.py's (CIFAR-10
calibration slice + Flickr8k val, the library default), are evaluated densely on the report data:
CIFAR-10 top-1 on the 9,000 held-out images, Flickr8k test R@10 both ways. ``--rows`` reads the
tune's rows from an earlier run's JSON instead of computing them (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asif_vdb import AsifClient, AsifParams  # noqa: E402
from asif_vdb.cli.tune import table  # noqa: E402
from asif_vdb.features.templates import fill, load_templates  # noqa: E402
from asif_vdb.maths.tune import Row, tune  # noqa: E402
from asif_vdb.schema.params import FitOptions  # noqa: E402
from asif_vdb.schema.results import TuneReport, TuneRow  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.common import finish  # noqa: E402
from benchmarks.lite2 import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    client = AsifClient(location=":memory:")
    emb = datasets.embeddings(client)
    f8k = datasets.load_flickr8k()
    train = f8k.names("train")
    ir, cr, payloads = datasets.anchor_pairs(f8k, train)
    if args.rows is not None:
        rows = [Row(k=r["k"], p=r["p"], image_whiten=r["image_whiten"], text_whiten=r["text_whiten"],
                    figures={k: v for k, v in r.items() if k not in ("k", "p", "image_whiten", "text_whiten")})
                for r in json.loads(args.rows.read_text())]
    else:
        rows = tune(emb["flickr_images"][ir], emb["flickr_captions"][cr], [p["image"] for p in payloads],
                    candidate_k=AsifParams().candidate_k, progress=lambda m: print(m, flush=True))
    as_rows = [TuneRow(k=r.k, p=r.p, image_whiten=r.image_whiten, text_whiten=r.text_whiten, **r.figures) for r in rows]
    best = rows[0]
    default = AsifParams()
    chosen = default.model_copy(update={"k": best.k, "p": best.p, "candidate_k": None,
                                        "image_fit": FitOptions(power=0.5, whiten=best.image_whiten),
                                        "text_fit": FitOptions(whiten=best.text_whiten)})
    current = next((r for r in as_rows if (r.k, r.p, r.image_whiten, r.text_whiten) ==
                    (default.k, default.p, default.image_fit.whiten, default.text_fit.whiten)), None)
    report = TuneReport(anchors=len(ir), held_out_groups=1000, rows=as_rows, chosen=as_rows[0], current=current,
                        params=chosen.model_dump(mode="json"), applied=False)
    print(table(report), flush=True)
    _, all_labels = datasets.load_cifar10()
    held = ~datasets.cifar_calibration_mask(all_labels)
    prompts = client.encode_texts([fill(t, c) for c in datasets.CIFAR_CLASSES for t in load_templates("default")])
    sub = {**emb, "cifar_images": emb["cifar_images"][held]}
    figures = {}
    for name, params in (("tune_choice", chosen), ("calibration_choice_default", default)):
        figures[name] = {"params": params.describe(), "image_whiten": params.image_fit.whiten,
                         "text_whiten": params.text_fit.whiten,
                         **evaluate(sub, prompts, f8k, all_labels[held], True, train, params)}
        print(name, figures[name], flush=True)
    finish("tune_flickr8k", {"table": table(report).splitlines(), "tune": report.to_dict(), **figures,
                             "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()

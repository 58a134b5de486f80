"""Fine-tuning against the exact integer model: accuracy recovered where post-training quantization loses it,
and what the activity regularizer does to spikes, synaptic operations and accuracy.

Writes ``bench/results/finetune.json``. On the digits test split (360 images), for the bundled model
(``digits_srif_t4.pt``, SRIF+MPR, T = 4):

* precision rows: the full 8-bit range, and reduced weight precisions emulated with
  ``QuantizationOptions.weight_fill`` (the largest |weight| of a layer fills that fraction of
  the range, and the fine-tuned weights stay inside it, or inside the compiled weights' reach
  when the grid's rounding gives one more step): fill 0.016 (|W_int| <= 2: 5 levels) and 0.012
  (the row's ``weight_levels`` counts the distinct integers per synapse);
* activity rows: the 8-bit grid fine-tuned with activity weights 0, 1 and 4; the fine-tuned
  checkpoint is compiled and its report's activity tier (spikes, synaptic ops per sample) and
  energy tiers measured on the test split.

* bits rows (``--parts bits``): real fewer-bit synapses (``--weight-bits`` 3 and 2), the
  fine-tuned checkpoint compiled at its recorded width (synaptic memory, activity, energy);
* residual rows (``--parts residual``): the trained ResNet8 of ``bench_quantization``
  (``bench/models/resnet8_digits32_t4.pt``, identity and projection shortcuts) on digits32, at
  the full 8-bit range and a reduced precision.

Each row gives the float accuracy, the post-training fixed-point accuracy (the compiler's own
scales), the accuracy on the power-of-two grid before fine-tuning, after fine-tuning (the
fixed-point network = the fine-tuned float model, bit for bit), and the spike rates.

    python -m bench.bench_finetune [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import peak_rss_mib, write_result
from inflor_deploy.compiler import compile_checkpoint
from inflor_deploy.data import load_dataset
from inflor_deploy.finetuning import FinetuneConfig, finetune, save_finetuned
from inflor_deploy.ir import nodes as n
from inflor_deploy.passes.base import QuantizationOptions
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy.report import report_from_graph

PRECISIONS = [("8-bit range (weight_fill 1)", 1.0), ("weight_fill 0.016 (|W_int| <= 2)", 0.016),
              ("weight_fill 0.012", 0.012)]  # fmt: skip
#: Fewer-bit synapses (--weight-bits): the checkpoint records the width and compiles to it.
BITS = [("--weight-bits 3", 3), ("--weight-bits 2", 2)]
RESIDUAL = Path(__file__).resolve().parent / "models" / "resnet8_digits32_t4.pt"
RESIDUAL_PRECISIONS = [("8-bit range (weight_fill 1)", 1.0, None), ("weight_fill 0.03 (|W_int| <= 3)", 0.03, None),
                       ("--weight-bits 4", 1.0, 4)]  # fmt: skip
ACTIVITY_WEIGHTS = [0.0, 1.0, 4.0]


def _activity(path: Path, data: str = "digits") -> dict:
    """The compiled checkpoint's activity and energy on ``data``'s test split (the report's tiers)."""
    compiled = compile_checkpoint(path, "loihi2-sim", probe_samples=2)
    report = report_from_graph(compiled.fixed_graph, load_dataset(data, "test").images, compiled.target,
                               data_name=f"{data}/test").to_dict()  # fmt: skip
    totals = report["activity"]["totals"]
    resources = report["resources"]
    return {
        "cores": resources["total_cores"],
        "synapse_bytes": sum(layer["synapse_bytes"] for layer in resources["layers"]),
        "weight_bits": sorted({s.weight_bits for s in compiled.fixed_graph.of_type(n.FixedPointSynapse)}),
        "spikes_per_sample": totals["spikes_per_sample"],
        "synops_per_sample": totals["synops_per_sample"],
        "synops_nonzero_per_sample": totals["synops_nonzero_per_sample"],
        "energy": report.get("energy"),
    }


def _row(label: str, fill: float, activity_weight: float, epochs: int, folder: Path, with_activity: bool,
         checkpoint: Path = Path(DEFAULT_MODEL), data: str = "digits", bits: int | None = None) -> dict:  # fmt: skip
    start = time.perf_counter()
    result = finetune(checkpoint, "loihi2-sim", data=data,
                      config=FinetuneConfig(epochs=epochs, activity_weight=activity_weight),
                      quantization=QuantizationOptions(weight_fill=fill, weight_bits=bits), progress=True)  # fmt: skip
    path = save_finetuned(result, folder / f"tuned_{checkpoint.stem}_{fill}_{bits}_{activity_weight}.pt")
    row = {
        "setting": label,
        "weight_fill": fill,
        "activity_weight": activity_weight,
        "weight_bits": bits,
        "epochs": epochs,
        "accuracy": result.accuracy,
        "spike_rate": result.spike_rate,
        "layer_scales": result.grid["layer_scales"],
        "train_seconds": result.seconds,
        "seconds": time.perf_counter() - start,
    }
    row["weight_levels"] = _levels(result)
    if bits is not None:
        row["after"] = _activity(path, data)  # compiled from the checkpoint: its recorded width sets the memory
    if with_activity:
        row["after"] = _activity(path)
    print(label, activity_weight, row["accuracy"], row["spike_rate"], flush=True)
    return row


def _levels(result) -> dict[str, int]:
    """Distinct integer weights per synapse after fine-tuning."""
    net = result.network
    return {s.name: int(net.integer_weight(k).detach().unique().numel()) for k, s in net.synapses.items()}


def _save(data: dict) -> Path:
    """Merge ``data`` into bench/results/finetune.json (each part is written as soon as it is measured)."""
    from bench.common import RESULTS

    path = RESULTS / "finetune.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.pop("machine", None)
    return write_result("finetune", {**old, **data, "peak_rss_mib": peak_rss_mib()})


def _existing(part: str) -> list[dict]:
    """Rows of ``part`` already in bench/results/finetune.json (a run of some rows keeps the others)."""
    from bench.common import RESULTS

    path = RESULTS / "finetune.json"
    return json.loads(path.read_text()).get(part, []) if path.exists() else []


def main(epochs: int = 3, parts: tuple[str, ...] = ("precision", "activity"),
         activity_weights: tuple[float, ...] = tuple(ACTIVITY_WEIGHTS)) -> None:  # fmt: skip
    header = {"model": "digits_srif_t4.pt (SRIF+MPR, T=4)", "data": "digits/test (360 images)"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "activity" in parts:
            rows = [r for r in _existing("activity") if r["activity_weight"] not in activity_weights]
            before = _activity(Path(DEFAULT_MODEL))
            for weight in activity_weights:
                rows.append(_row(PRECISIONS[0][0], 1.0, weight, epochs, folder, with_activity=True))
                _save({**header, "activity_epochs": epochs, "activity_before_finetune": before, "activity": rows})
        if "precision" in parts:
            rows = []
            for label, fill in PRECISIONS:
                rows.append(_row(label, fill, 0.0, epochs, folder, with_activity=False))
                _save({**header, "precision_epochs": epochs, "precision": rows})
        if "bits" in parts:
            rows = [_row(label, 1.0, 0.0, epochs, folder, with_activity=False, bits=bits) for label, bits in BITS]
            _save({**header, "bits_epochs": epochs, "bits": rows})
        if "residual" in parts:
            rows = []
            for label, fill, bits in RESIDUAL_PRECISIONS:
                rows.append(_row(label, fill, 0.0, epochs, folder, with_activity=False, checkpoint=RESIDUAL,
                                 data="digits32", bits=bits))  # fmt: skip
                _save({"residual_model": "bench/models/resnet8_digits32_t4.pt (ResNet8, SRIF+MPR, T=4)",
                       "residual_data": "digits32/test (360 images)", "residual_epochs": epochs, "residual": rows})
    print(f"wrote {RESULTS_FILE}")


RESULTS_FILE = "bench/results/finetune.json"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--parts", default="precision,activity", help="precision, activity, bits, residual (comma-separated)")
    parser.add_argument("--activity-weights", default=",".join(map(str, ACTIVITY_WEIGHTS)))
    args = parser.parse_args()
    main(args.epochs, tuple(args.parts.split(",")), tuple(float(w) for w in args.activity_weights.split(",")))

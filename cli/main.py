"""`inflor-deploy`: a thin click layer over the library, one command per library call.

Errors a user can act on (:class:`inflor_deploy.errors.InflorError`) print
as one message and exit with status 1; verification failures exit with 2;
Ctrl-C, SIGTERM and SIGHUP print one line and exit with 128 + the signal.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from inflor_deploy import interrupts
from inflor_deploy.errors import InflorError

EXIT_USER_ERROR = 1
EXIT_VERIFICATION_FAILED = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT; a SIGTERM exits 143, a SIGHUP 129


def _user_errors(command):
    """Turn InflorError into a clean message and a non-zero exit (no traceback).

    Ctrl-C, SIGTERM and SIGHUP unwind the command as an exception (every
    ``finally`` runs: Lava workers stopped, shared memory freed, staging
    directories removed), then print one line and exit ``128 + signum``.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        with interrupts.signals_raise():
            try:
                result = command(*args, **kwargs)
                interrupts.check()  # a signal whose exception a library dropped
                return result
            except InflorError as err:
                click.echo(f"error: {err}", err=True)
                sys.exit(EXIT_USER_ERROR)
            except KeyboardInterrupt as err:
                with interrupts.deferred():  # a second Ctrl-C must not turn this into a traceback
                    stray = interrupts.reap_children()
                    if stray:
                        err.add_note(f"stopped {stray} other child processes")
                    click.echo(f"error: {interrupts.describe(err)}", err=True)
                    sys.exit(getattr(err, "exit_status", EXIT_INTERRUPTED))

    return wrapper


trust_pickle_option = click.option(
    "--trust-pickle",
    is_flag=True,
    help="Allow loading a checkpoint that holds pickled Python objects. This EXECUTES CODE "
    "from the file: use only for files whose origin you trust.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="inflor-deploy")
def cli():
    """Deploy InfLoR soft-reset spiking networks from PyTorch to Loihi 2 fixed point."""


@cli.command()
@click.option("--arch", default="digits_cnn", show_default=True, help="Architecture to train.")
@click.option("--data", "data_spec", default="digits", show_default=True,
              help="digits | digits32 | cifar10:FOLDER | FILE.npz (x_train, y_train, x_test, y_test; or x, y: a seeded 20 % "
                   "is held out as the test split; x [N, T, C, H, W] trains on event sequences)")
@click.option("--timesteps", "-T", default=4, show_default=True, type=int, help="T (event data: the data's T).")
@click.option("--neuron", type=click.Choice(["srif", "if", "lif"]), default="srif", show_default=True)
@click.option("--mpr/--no-mpr", default=True, show_default=True, help="Membrane Potential Rectifier (SRIF only).")
@click.option("--epochs", default=30, show_default=True, type=int)
@click.option("--lr", default=3e-3, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@_user_errors
def train(arch, data_spec, timesteps, neuron, mpr, epochs, lr, seed, output, force):
    """Train a model with surrogate gradients and save a checkpoint."""
    from inflor_deploy.checkpoint import save_checkpoint
    from inflor_deploy.data import load_train_test
    from inflor_deploy.data.conform import as_unit_pixels
    from inflor_deploy.memory import training_estimate
    from inflor_deploy.nn.models import ModelConfig, build_model
    from inflor_deploy.outputs import check_output_path
    from inflor_deploy.train import TrainConfig
    from inflor_deploy.train import train as run_training

    if os.path.exists(output) and not force:  # os.path: a too-long name is reported below, not raised here
        raise InflorError(f"{output} exists; pass --force to overwrite it")
    # The test split is never trained on (an .npz with only x, y holds out a seeded 20 %).
    train_data, test_data, test_split = load_train_test(data_spec)
    train_data, test_data = as_unit_pixels(train_data), as_unit_pixels(test_data)
    sequence = train_data.is_sequence
    if sequence:  # event data [N, T, C, H, W]: the model runs T = the data's steps
        timesteps = train_data.images.shape[1]
    channels, size = train_data.images.shape[-3], train_data.images.shape[-2]
    try:
        model_config = ModelConfig(
            arch=arch,
            num_classes=train_data.num_classes,
            in_channels=channels,
            image_size=size,
            timesteps=timesteps,
            neuron=neuron,
            mpr=mpr and neuron == "srif",
        )
        train_config = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    except ValueError as err:
        raise InflorError(str(err)) from err
    # Before the work: a checkpoint that cannot be written, or a T the machine cannot hold.
    model = build_model(model_config)
    checkpoint_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values()) + (1 << 20)
    check_output_path(output, need_bytes=checkpoint_bytes, what="checkpoint")
    training_estimate(model, timesteps, train_config.batch_size, sequence=sequence).require()
    result = run_training(model_config, train_data, test_data, train_config)
    save_checkpoint(
        output,
        result.model,
        {
            "dataset": data_spec,
            "input_encoding": "sequence" if sequence else "direct",
            "test_accuracy": result.test_accuracy,
            "test_split": test_split,
            "test_samples": len(test_data),
            "train_accuracy": result.train_accuracy,
            "train_seconds": round(result.seconds, 1),
            "epochs": epochs,
            "lr": lr,
            "seed": seed,
        },
    )
    click.echo(
        f"{arch} T={timesteps} {neuron}{'+MPR' if model_config.mpr else ''}: "
        f"test accuracy {result.test_accuracy:.4f} ({len(test_data)} samples: {test_split}), "
        f"train accuracy {result.train_accuracy:.4f}, trained in {result.seconds:.1f} s -> {output}"
    )


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--target", "-t", default="loihi2-sim", show_default=True, help="Target name (see `inflor-deploy targets`).")
@click.option("--data", "data_spec", default="digits", show_default=True,
              help="digits | digits32 | cifar10:FOLDER | FILE.npz: the data the model was trained on (its train split).")
@click.option("--epochs", default=5, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--activity-weight", default=0.0, show_default=True, type=float,
              help="Weight of the activity penalty: the mean spike count per neuron-step of every spiking layer.")
@click.option("--weight-fill", default=1.0, show_default=True, type=float,
              help="Fraction of the weight range the weights may use (below 1: a reduced weight precision).")
@click.option("--weight-bits", type=int, default=None, metavar="BITS",
              help="Weight mantissa bits, 2..8 (Lava num_weight_bits): fine-tune on that grid; a compile of the "
                   "result keeps it [default: the target's 8].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@_user_errors
def finetune(checkpoint, target, data_spec, epochs, lr, activity_weight, weight_fill, weight_bits, seed, output, force):
    """Fine-tune a checkpoint against the exact integer model the target runs (quantization-aware).

    Compiling the result reproduces its forward bit for bit (docs/finetune.md).
    """
    from inflor_deploy.api import finetune as run_finetune

    result = run_finetune(checkpoint, target, output=output, epochs=epochs, data=data_spec, lr=lr,
                          activity_weight=activity_weight, seed=seed, weight_fill=weight_fill, weight_bits=weight_bits,
                          force=force, progress=True)  # fmt: skip
    acc, rate = result.accuracy, result.spike_rate
    click.echo(
        f"{result.model.config.arch} on {target}: test accuracy float {acc['float']:.4f}, fixed point "
        f"{acc['fixed_ptq']:.4f} (post-training), {acc['fixed_grid']:.4f} on the grid -> {acc['fixed_finetuned']:.4f} "
        f"fine-tuned (its float forward: {acc['float_finetuned']:.4f}); spikes per neuron-step {rate['before']:.4f} "
        f"-> {rate['after']:.4f}; {result.seconds:.1f} s -> {output}"
    )


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data_spec", default="digits", show_default=True, help="digits | digits32 | cifar10:FOLDER | FILE.npz")
@click.option("--samples", type=int, default=None, help="Evaluate only the first N test samples.")
@trust_pickle_option
@_user_errors
def evaluate(checkpoint, data_spec, samples, trust_pickle):
    """Accuracy of a checkpoint's float PyTorch model on a dataset's test split."""
    from inflor_deploy.checkpoint import load_checkpoint
    from inflor_deploy.data import load_dataset
    from inflor_deploy.data.conform import as_unit_pixels
    from inflor_deploy.train import evaluate as run_evaluation

    loaded = load_checkpoint(checkpoint, trust_pickle=trust_pickle)
    data = as_unit_pixels(load_dataset(data_spec, "test").take(samples))  # uint8 pixels as trained: p / 255
    accuracy, _ = run_evaluation(loaded.model, data)
    click.echo(f"{loaded.config.arch} on {data.name}: accuracy {accuracy:.4f} ({len(data)} samples)")


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@trust_pickle_option
@_user_errors
def info(checkpoint, trust_pickle):
    """Print a checkpoint's config and metadata as JSON."""
    from inflor_deploy.checkpoint import load_checkpoint
    from inflor_deploy.nn.models import count_parameters

    loaded = load_checkpoint(checkpoint, trust_pickle=trust_pickle)
    summary = {
        "config": loaded.config.to_dict(),
        "parameters": count_parameters(loaded.model),
        "metadata": loaded.metadata,
    }
    click.echo(json.dumps(summary, indent=2))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the full rows as JSON.")
@_user_errors
def targets(as_json):
    """List the hardware targets in hw_targets/ (bit widths, limits, energy sources)."""
    from inflor_deploy.targets import list_targets, targets_dir

    rows = [t.summary_row() for t in list_targets()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"targets in {targets_dir()}:")
    for row in rows:
        click.echo(
            f"  {row['name']:<12} {row['kind']:<10} run: {row['run_config']:<14} "
            f"reset interval: {row['reset_interval']:<10} max delay: {row['max_delay']:<3} "
            f"usable cores/chip: {row['usable_cores']:<4} limits: {row['limits']}"
        )
        click.echo(f"  {'':<12} {row['description']}")


def _input_shape(text: str | None):
    if text is None:
        return None
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not 1 <= len(shape) <= 3 or any(s < 1 for s in shape):
        raise InflorError(f"--input-shape must be one sample's shape as positive integers C,H,W (e.g. 1,8,8); got {text!r}")
    return shape


def _compile(model, target, output, force, *, stop_after=None, trust_pickle=False, input_scale=None,
             headroom="probe", overflow="warn", timesteps=None, probe_samples=None, factory=None, model_args=(),
             input_shape=None, time_mode=None, input_range=None, input_mean=None, input_std=None,
             input_encoding=None, nir_read=None, weight_bits=None, prune=0.0, plain_layers=False):  # fmt: skip
    from inflor_deploy.artifact import reserve_output, write_artifact
    from inflor_deploy.compiler import compile_checkpoint, compile_factory
    from inflor_deploy.outputs import estimate_artifact_bytes
    from inflor_deploy.passes.base import QuantizationOptions

    nir_read = {k: v for k, v in (nir_read or {}).items() if v is not None}
    if model.suffix.lower() == ".nir":
        return _compile_nir(model, target, output, force, nir_read, stop_after=stop_after, input_scale=input_scale,
                            headroom=headroom, overflow=overflow, timesteps=timesteps, probe_samples=probe_samples,
                            factory=factory, model_args=model_args, input_shape=input_shape, time_mode=time_mode,
                            trust_pickle=trust_pickle, input_range=input_range, input_mean=input_mean,
                            input_std=input_std, input_encoding=input_encoding, weight_bits=weight_bits, prune=prune,
                            plain_layers=plain_layers)  # fmt: skip
    if nir_read:
        raise InflorError(f"--{next(iter(nir_read)).replace('_', '-')} says how a NIR graph is read; MODEL "
                          f"{model} is not a .nir file")
    if factory is None and (model_args or input_shape or time_mode):
        raise InflorError("--model-arg, --input-shape and --time-mode describe a model given with --model MODULE:FACTORY; "
                          "a checkpoint records its own architecture")  # fmt: skip
    if factory is not None and (input_shape is None or timesteps is None):
        raise InflorError("--model needs --input-shape C,H,W and -T N (one sample's shape and the timesteps)")
    shape = _input_shape(input_shape)
    need = estimate_artifact_bytes(model) if model.is_file() else 0
    # Refuse before spending time on the compile; hold the output so a second compile fails at once.
    with reserve_output(output, force, need_bytes=need):
        options = QuantizationOptions(input_grade_scale=input_scale, headroom=headroom, overflow=overflow,
                                      weight_bits=weight_bits, prune=prune, plain_layers=plain_layers)  # fmt: skip
        declared = dict(input_range=input_range, input_mean=input_mean, input_std=input_std, input_encoding=input_encoding)
        if factory is not None:
            from inflor_deploy.frontends.user_model import FactorySpec

            result = compile_factory(
                model, FactorySpec.parse(factory, model_args), input_shape=shape, timesteps=timesteps, target=target,
                time_mode=time_mode, quantization=options, stop_after=stop_after, probe_samples=probe_samples,
                **declared,
            )  # fmt: skip
        else:
            result = compile_checkpoint(
                model, target, trust_pickle=trust_pickle, quantization=options, stop_after=stop_after,
                timesteps=timesteps, probe_samples=probe_samples, **declared,
            )  # fmt: skip
        write_artifact(result, output, force=force)
    return result


def _compile_nir(model, target, output, force, nir_read, *, stop_after, input_scale, headroom, overflow, timesteps,
                 probe_samples, factory, model_args, input_shape, time_mode, trust_pickle, input_range, input_mean,
                 input_std, input_encoding, weight_bits, prune, plain_layers):  # fmt: skip
    """``compile MODEL.nir -T N``: the NIR front end (docs/nir.md), then the same passes."""
    from inflor_deploy.artifact import reserve_output, write_artifact
    from inflor_deploy.compiler import compile_nir
    from inflor_deploy.outputs import estimate_artifact_bytes
    from inflor_deploy.passes.base import QuantizationOptions

    if factory is not None or model_args or time_mode or trust_pickle:
        raise InflorError("--model, --model-arg, --time-mode and --trust-pickle describe PyTorch models; a .nir file "
                          "is read with nir.read (data only): drop them")
    if timesteps is None:
        raise InflorError("a NIR graph states no number of timesteps: pass -T N (the T the model was trained with)")
    need = estimate_artifact_bytes(model) if model.is_file() else 0  # a .nir holds at least the weights, as a checkpoint
    # Refuse before spending time on the compile; hold the output so a second compile fails at once.
    with reserve_output(output, force, need_bytes=need):
        options = QuantizationOptions(input_grade_scale=input_scale, headroom=headroom, overflow=overflow,
                                      weight_bits=weight_bits, prune=prune, plain_layers=plain_layers)  # fmt: skip
        result = compile_nir(
            model, timesteps=timesteps, target=target, input_shape=_input_shape(input_shape), quantization=options,
            stop_after=stop_after, probe_samples=probe_samples, input_range=input_range, input_mean=input_mean,
            input_std=input_std, input_encoding=input_encoding, **nir_read,
        )  # fmt: skip
        write_artifact(result, output, force=force)
    return result


def _span(value) -> str:
    """A quantization-report integer, or ``lo..hi`` for a per-channel list."""
    return f"{min(value)}..{max(value)}" if isinstance(value, list) else str(value)


def _print_compile_summary(result, output) -> None:
    source, conventions = result.source, result.conventions
    if source.config is not None:
        config = source.config
        what = f"{config['arch']}, T={result.graph.timesteps}, {config['neuron']}{'+MPR' if config['mpr'] else ''}"
    elif source.route == "nir":
        read = conventions["reading"]
        what = (f"NIR graph, T={result.graph.timesteps}, read as {read['convention']}: dt {read['dt']}, fires on "
                f"{read['compare']}, reset {read['reset']}, {read['reset_timing'].replace('_', ' ')}")
    else:
        what = f"{source.model_class}, T={result.graph.timesteps}, {conventions.get('time_mode')}-step"
    click.echo(f"compiled {source.label} ({what}) for {result.target.name} in {result.seconds:.1f} s")
    if source.route == "nir":
        read = conventions["reading"]
        click.echo(f"  convention: {read['evidence']}")
        for note in conventions.get("notes", []):
            click.echo(f"  note: {note}")
        if read["reset"].startswith("zero"):
            click.echo("  NIR states no reset mode: every neuron resets to v_reset, as NIR defines it. A model trained "
                       "with a subtractive reset (snnTorch's default 'subtract', SpikingJelly's v_reset=None) needs "
                       "--reset subtract")
    click.echo(f"contracts (probe: {result.probe_source}):")
    for contract in result.contracts:
        click.echo(f"  {'ok  ' if contract.ok else 'FAIL'} {contract.pass_name:<27} [{contract.kind}] {contract.summary}")
    if result.quantization_report:
        click.echo("quantization (weight units per float unit; headroom = limit / worst case; probe v = limit / the "
                   "v range the probe's spikes need):")
        for row in result.quantization_report:
            threshold = (
                f"theta {_span(row['threshold']):>6} reset {_span(row['reset_mant']):>6}" if "threshold" in row
                else f"{'(readout: ' + row.get('readout', 'mean_current') + ')':<25}"
            )  # fmt: skip
            warn = "  WARNING: v can saturate in the worst case" if row["can_saturate_v"] else ""
            # The probe guard's room: v's range over what the probe's spikes need (headroom probe).
            needed = row.get("v_needed_headroom")
            probe = f"  probe v {needed:>6.2f}x" if needed is not None else ""
            click.echo(
                f"  {row['layer']:<22} scale {row['scale']:>10.2f} ({row['scale_limited_by']:<15}) {threshold} "
                f"u headroom {row['u_headroom']:>6.2f}x  v headroom {row['v_headroom']:>6.2f}x{probe}{warn}"
            )
            for warning in row.get("rounding_warnings", []):
                click.echo(f"    WARNING: {warning}")
    if result.fixed_graph is not None:
        from inflor_deploy.frontends.input_spec import input_spec_of

        spec = input_spec_of(result.steps[0][1], result.fixed_graph.input.grade_scale)
        low, high = spec["value_range"]
        norm = ", normalized per channel (folded into the first synapses)" if spec["normalization"] else ""
        wraps = [row["layer"] for row in result.quantization_report if row.get("wrap_possible")]
        click.echo(
            f"input: {spec['kind']} in [{low:g}, {high:g}], {spec['encoding']} encoding{norm}; the chip receives "
            f"{spec['chip_receives']}; Lava wraps possible within this range: {', '.join(wraps) or 'none'} "
            "(inputs outside it are refused)"
        )
    schedule = result.graph.schedule
    if schedule is not None:
        click.echo(f"schedule: latency {schedule.latency} steps, reset interval {schedule.reset_interval}")
    if result.fixed_graph is not None:
        from inflor_deploy.report import report_from_graph, short_summary

        # The short report on the probe inputs; `inflor-deploy report OUT --data ...` runs a dataset.
        probe_report = report_from_graph(result.fixed_graph, result.probe, result.target, data_name=result.probe_source)
        click.echo(short_summary(probe_report))
    click.echo(f"artifact: {output}")


compile_options = [
    click.option("--target", "-t", default="loihi2-sim", show_default=True, help="Target name (see `inflor-deploy targets`)."),
    click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Artifact directory [default: artifacts/<model>-<target>]."),
    click.option("--force", is_flag=True, help="Replace an existing artifact directory."),
    click.option("--stop-after", default=None, help="Stop after this pass and save what exists so far."),
    click.option("--input-scale", type=float, default=None,
                 help="Integer grades per unit of input [default: 255 for pixels in [0, 1], 1 for raw pixels, "
                      "255 / max(|LO|, |HI|) for a range]."),
    click.option("--input-range", default=None, metavar="LO,HI",
                 help="Range of the input data [default 0,1: pixels at 1/255]; 0,255 declares raw 8-bit pixels; "
                      "e.g. -2.5,2.5 a signed range. Inputs outside it are refused."),
    click.option("--input-mean", default=None, metavar="M1,M2,...",
                 help="Per-channel mean the model's inputs were normalized with ((x - mean) / std) before the "
                      "model; folded into the first synapses, so the chip receives the raw pixels. (A --model "
                      "whose forward normalizes its input itself needs none.)"),
    click.option("--input-std", default=None, metavar="S1,S2,...", help="Per-channel std of that normalization."),
    click.option("--input-encoding", type=click.Choice(["direct", "sequence"]), default=None,
                 help="direct: the frame at every step; sequence: [T, C, H, W] event frames, one per step (a "
                      "multi-step --model is called on [T, B, C, H, W]) [default: the checkpoint's, else direct]."),
    click.option("--headroom", type=click.Choice(["u", "probe", "uv"]), default="probe", show_default=True,
                 help="Bounds the scales must respect: u never wraps (u; always); probe: also no v saturation "
                      "that would change a spike on the compile probe (one bit of margin); uv: v never saturates "
                      "whatever the input (coarser weights)."),
    click.option("--overflow", type=click.Choice(["warn", "error"]), default="warn", show_default=True,
                 help="A layer whose v can saturate in the worst case, or whose threshold or reset amount rounds "
                      "with more than 1 % relative error (QuantizeFixedPoint's stated bound): warn, or refuse to "
                      "compile."),
    click.option("--weight-bits", type=int, default=None, metavar="BITS",
                 help="Weight mantissa bits, 2..8 (Lava num_weight_bits): fewer bits, less synaptic memory "
                      "[default: the target's, 8]."),
    click.option("--prune", type=float, default=0.0, show_default=True, metavar="FRACTION",
                 help="Remove this fraction of each synapse's connections, smallest |weight| first (magnitude "
                      "pruning); pruned synapses run as Lava Sparse and count only their kept connections."),
    click.option("--plain-layers", is_flag=True, default=False,
                 help="Plain Loihi layers: no bias source neurons, bias_exp 6, no negative weight exponents (the "
                      "layout `export --format netx` holds); the bias and headroom ranges then cap some layers' "
                      "precision (docs/quantization.md)."),
    click.option("-T", "--timesteps", type=int, default=None,
                 help="Timesteps T: overrides a checkpoint's; required with --model."),
    click.option("--probe-samples", type=int, default=None,
                 help="Inputs the pass contracts run on [default: 16, fewer (>= 2) for very large nets]."),
    click.option("--lava-smoke/--no-lava-smoke", default=True, show_default=True,
                 help="On a runnable target, run one probe sample through Lava fixed_pt and check it bit-exact."),
]


nir_options = [
    click.option("--reset", "nir_reset", type=click.Choice(["zero", "subtract"]), default=None,
                 help="MODEL.nir: zero = NIR's reset to v_reset; subtract = subtract v_threshold on a spike "
                      "(SpikingJelly's soft reset, snnTorch's 'subtract') [default: NIR's, or the mode inflor-deploy "
                      "recorded in the file]."),
    click.option("--dt", "nir_dt", type=float, default=None, metavar="SECONDS",
                 help="MODEL.nir: the step the model was trained with; LIF leak 1 - dt/tau, gain dt*r/tau "
                      "[default: the detected exporter's: 1e-4 for SpikingJelly and snnTorch]."),
    click.option("--compare", "nir_compare", type=click.Choice([">", ">="]), default=None,
                 help="MODEL.nir: fire on v > v_threshold (NIR, snnTorch) or >= (SpikingJelly) [default: the "
                      "convention's]."),
    click.option("--convention", "nir_convention",
                 type=click.Choice(["auto", "nir", "spikingjelly", "snntorch", "norse"]), default=None,
                 help="MODEL.nir: whose discretization to reproduce (docs/nir.md) [default: auto, detected from how "
                      "the file was written]."),
]


def _with_options(options):
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _default_output(model: Path, target: str) -> Path:
    return Path("artifacts") / f"{model.stem}-{target}"


model_options = [
    click.option("--model", "factory", default=None, metavar="MODULE:FACTORY",
                 help="Your own model: MODULE (importable name or path/to/file.py) and FACTORY (a callable in it "
                      "returning the nn.Module). MODEL is then a plain state_dict. Naming it runs that code."),
    click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
                 help="Keyword argument for FACTORY (a Python literal, else a string); repeatable."),
    click.option("--input-shape", default=None, metavar="C,H,W", help="One input sample's shape (with --model)."),
    click.option("--time-mode", type=click.Choice(["multi", "single"]), default=None,
                 help="multi: the model is called once on [T, B, ...]; single: once per step [default: from the neurons]."),
]


@cli.command(name="compile")
@click.argument("model", type=click.Path(path_type=Path))
@_with_options(compile_options)
@_with_options(model_options)
@_with_options(nir_options)
@trust_pickle_option
@_user_errors
def compile_command(model, target, output, force, stop_after, input_scale, input_range, input_mean, input_std,
                    input_encoding, headroom, overflow, weight_bits, prune, plain_layers, timesteps, probe_samples,
                    lava_smoke, factory, model_args, input_shape, time_mode, nir_reset, nir_dt, nir_compare,
                    nir_convention, trust_pickle):  # fmt: skip
    """Compile MODEL to Loihi 2 fixed point and write an artifact directory.

    MODEL is an inflor-deploy checkpoint, or, with --model MODULE:FACTORY, a
    plain state_dict of your own network (torch.save(model.state_dict(), path)),
    or a NIR graph (MODEL.nir, with -T N; --reset/--dt/--compare/--convention
    say how it is read: docs/nir.md).
    Exits with status 2 if the Lava smoke run is not bit-exact with the simulator.
    """
    output = output or _default_output(model, target)
    result = _compile(
        model, target, output, force, stop_after=stop_after, trust_pickle=trust_pickle, input_scale=input_scale,
        headroom=headroom, overflow=overflow, timesteps=timesteps, probe_samples=probe_samples, factory=factory,
        model_args=model_args, input_shape=input_shape, time_mode=time_mode, input_range=input_range,
        input_mean=input_mean, input_std=input_std, input_encoding=input_encoding, weight_bits=weight_bits, prune=prune,
        plain_layers=plain_layers,
        nir_read={"reset": nir_reset, "dt": nir_dt, "compare": nir_compare, "convention": nir_convention},
    )  # fmt: skip
    _print_compile_summary(result, output)
    if lava_smoke:
        _lava_smoke(result)


def _lava_smoke(result) -> None:
    """One probe sample through Lava's Loihi2SimCfg(fixed_pt), compared bit-exactly with the simulator."""
    if result.fixed_graph is None or not result.target.runnable:
        return
    from inflor_deploy.backends.lava.network import compare_with_simulator

    parity = compare_with_simulator(result.fixed_graph, result.probe[:1])
    click.echo(f"lava smoke run (1 sample, Loihi2SimCfg fixed_pt): {parity.summary()}")
    if not parity.ok:
        click.echo("error: Lava and the fixed-point simulator disagree (first divergence above)", err=True)
        sys.exit(EXIT_VERIFICATION_FAILED)


def _artifact_for(model: Path, target, output, force, trust_pickle):
    """An artifact directory as given; for a checkpoint, its artifact: reused when it matches, else compiled."""
    from inflor_deploy.artifact import load_artifact
    from inflor_deploy.artifact_reuse import decide_reuse
    from inflor_deploy.checkpoint import load_checkpoint
    from inflor_deploy.compiler import requested_options
    from inflor_deploy.targets import load_target

    if model.is_dir():
        return load_artifact(model)
    output = output or _default_output(model, target)
    if not force and model.is_file() and os.path.lexists(output):
        # What `_compile` below would record (the input encoding defaults to the checkpoint's).
        loaded_target = load_target(target)
        request = requested_options(load_checkpoint(model, trust_pickle=trust_pickle), loaded_target)
        decision = decide_reuse(output, model, loaded_target, request)
        if decision.action == "reuse":
            click.echo(decision.reason)
            return decision.artifact
        if decision.action == "rebuild":
            click.echo(decision.reason)
            force = True
        if decision.action == "refuse":
            raise InflorError(decision.reason)
    result = _compile(model, target, output, force, trust_pickle=trust_pickle)
    _print_compile_summary(result, output)
    return load_artifact(output)


def _print_ladder(ladder) -> None:
    click.echo("parity ladder:")
    for level in ladder.levels:
        status = {True: "PASS", False: "FAIL", None: "skip"}[level.ok]
        click.echo(f"  {level.level}  {status}  {level.name:<52} [{level.kind}] {level.summary}")
        if level.first_divergence and (level.ok is False or level.kind == "statistical"):
            where = ", ".join(f"{k}={v}" for k, v in level.first_divergence.items())
            click.echo(f"           first divergence: {where}")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", "data_spec", default="digits", show_default=True, help="digits | digits32 | cifar10:FOLDER | FILE.npz")
@click.option("--samples", type=int, default=None, help="Use the first N test samples (default: all).")
@click.option("--reference-samples", type=int, default=8, show_default=True,
              help="Samples the slow integer reference checks the simulator on (level 2).")
@click.option("--lava-samples", type=int, default=2, show_default=True,
              help="Samples run through Lava for level 3 (0 skips it; Lava runs ~1000 steps/s).")
@click.option("--target", "-t", default="loihi2-sim", show_default=True)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Artifact directory when MODEL is a checkpoint [default: artifacts/<model>-<target>].")
@click.option("--force", is_flag=True, help="Replace an existing artifact directory.")
@click.option("--max-accuracy-drop", type=click.FloatRange(0, 100), default=1.0, show_default=True,
              help="Level 4 fails when fixed-point accuracy is more than this many percentage points below float.")
@click.option("--min-spike-agreement", type=click.FloatRange(0, 1), default=None,
              help="Level 4 fails when a layer's float/fixed spike agreement, teacher-forced (each layer fed the "
                   "float spikes), is below this fraction [default: 0.90; see the README].")
@click.option("--reference-model", default=None, metavar="MODULE:FACTORY",
              help="An artifact compiled from NIR: the module that was exported (your code builds it; naming it runs "
                   "it), so level 1 compares the framework's own forward pass [default: the NIR graph evaluated as "
                   "NIR defines it].")
@click.option("--reference-weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Its state_dict (loaded with weights_only=True).")
@click.option("--reference-arg", "reference_args", multiple=True, metavar="KEY=VALUE",
              help="Keyword argument for the reference FACTORY; repeatable.")
@click.option("--reference-time-mode", type=click.Choice(["single", "multi"]), default="single", show_default=True,
              help="single: the module is called once per step on [B, C, H, W] (snnTorch init_hidden, SpikingJelly "
                   "step_mode 's'); multi: once on [T, B, C, H, W] (SpikingJelly step_mode 'm').")
@trust_pickle_option
@_user_errors
def verify(model, data_spec, samples, reference_samples, lava_samples, target, output, force, max_accuracy_drop,
           min_spike_agreement, reference_model, reference_weights, reference_args, reference_time_mode,
           trust_pickle):  # fmt: skip
    """Run the parity ladder; MODEL is a checkpoint (compiled first) or an artifact directory.

    First checks the sha256 of the artifact's files and of the checkpoint (or
    NIR file) it was compiled from. Level 0 recompiles it and compares bit for
    bit. Exits with status 2 when a level fails (level 4: accuracy drop or
    spike agreement beyond the limits).
    """
    from inflor_deploy.data import load_dataset
    from inflor_deploy.verify import MIN_SPIKE_AGREEMENT, run_ladder

    if reference_samples < 1 or lava_samples < 0:
        raise InflorError("--reference-samples must be >= 1 and --lava-samples >= 0")
    if (reference_model is None) != (reference_weights is None) or (reference_args and reference_model is None):
        raise InflorError("--reference-model MODULE:FACTORY and --reference-weights W.pt go together (with "
                          "--reference-arg for the factory)")
    artifact = _artifact_for(model, target, output, force, trust_pickle)
    artifact.check_sources()  # a checkpoint replaced after compiling is named before anything runs
    reference = None
    if reference_model is not None:
        reference = _framework_reference(artifact, reference_model, reference_weights, reference_args,
                                         reference_time_mode)  # fmt: skip
    data = load_dataset(data_spec, "test").take(samples)
    ladder = run_ladder(
        artifact, data, reference_samples=reference_samples, lava_samples=lava_samples,
        trust_pickle=trust_pickle, progress=lambda message: click.echo(f"  ... {message}", err=True),
        max_accuracy_drop=max_accuracy_drop / 100,
        min_spike_agreement=MIN_SPIKE_AGREEMENT if min_spike_agreement is None else min_spike_agreement,
        model=reference,
    )  # fmt: skip
    _print_ladder(ladder)
    try:
        path = artifact.write_json("verify.json", {"data": data.name, **ladder.to_dict()})
        click.echo(f"ladder written to {path}")
    except InflorError as err:  # a read-only artifact still gets its ladder printed, and the exit code
        click.echo(f"warning: the ladder above was not saved: {err}", err=True)
    if not ladder.ok:
        failed = ", ".join(str(level.level) for level in ladder.failed)
        click.echo(f"error: parity level(s) {failed} failed (see the summary and first divergence above)", err=True)
        sys.exit(EXIT_VERIFICATION_FAILED)


def _framework_reference(artifact, spec, weights, args, time_mode):
    """Level 1's reference for a NIR artifact: the exported module, built afresh by its factory for every batch."""
    from inflor_deploy.frontends.nir.reference import FrameworkReference
    from inflor_deploy.frontends.user_model import FactorySpec, model_from_factory

    route = (artifact.manifest["source"].get("model") or {}).get("route", "checkpoint")
    if route != "nir":
        raise InflorError(f"--reference-model is for artifacts compiled from a NIR graph; {artifact.path} was compiled "
                          f"from a {route} (level 1 rebuilds that model itself)")
    factory = FactorySpec.parse(spec, args)
    model_from_factory(factory, weights)  # a factory that raises or weights that do not fit: named now
    return FrameworkReference(lambda: model_from_factory(factory, weights), time_mode=time_mode)


@cli.command()
@click.argument("artifact", type=click.Path(file_okay=False, path_type=Path))
@click.option("--data", "data_spec", default="digits", show_default=True,
              help="digits | digits32 | cifar10:FOLDER | FILE.npz (its test split is simulated)")
@click.option("--samples", type=click.IntRange(min=1), default=None, help="Use only the first N test samples.")
@click.option("--target", "-t", default=None, help="Limits and energy constants of this target instead of the artifact's.")
@click.option("--progress/--no-progress", default=False, show_default=True, help="Show a progress bar while simulating.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the report files here instead of ARTIFACT/report (e.g. for a read-only artifact).")
@_user_errors
def report(artifact, data_spec, samples, target, progress, output_dir):
    """Simulate ARTIFACT over a dataset; write ARTIFACT/report/report.{json,md,html} (spikes, synops, energy, cores)."""
    from inflor_deploy.artifact import load_artifact
    from inflor_deploy.outputs import OutputError, check_output_path
    from inflor_deploy.report import REPORT_DIR, build_report, short_summary, write_report

    art = load_artifact(artifact)
    directory = output_dir or artifact / REPORT_DIR
    try:
        check_output_path(directory, what="report")  # before simulating: a read-only artifact fails now
    except OutputError as err:
        raise OutputError(f"{err}; or pass --output-dir DIR to write the report elsewhere") from err
    result = build_report(art, data_spec, samples=samples, progress=progress, target=target)
    paths = write_report(result, artifact, directory=directory)
    click.echo(short_summary(result))
    for kind, path in paths.items():
        click.echo(f"  {kind}: {path}")
    if result.status == "error":
        click.echo("error: the model exceeds the target's enforced resource limits (see the violations above)", err=True)
        sys.exit(EXIT_USER_ERROR)


def _predict(graph, images, backend: str, chunk: int, soft_reset: str):
    """Accumulator readouts per sample from the chosen backend, with progress on stderr."""
    import numpy as np

    if backend == "sim":
        from inflor_deploy.backends.sim.fixed_point import simulate

        return simulate(graph, images, view="pipelined", progress=True).accumulator
    from inflor_deploy.backends.lava.network import run_lava

    parts = []
    for start in range(0, len(images), chunk):
        run = run_lava(graph, images[start : start + chunk], soft_reset=soft_reset)
        parts.append(run.accumulator)
        click.echo(
            f"  ... lava: {min(start + chunk, len(images))}/{len(images)} samples "
            f"({run.steps} steps in {run.run_seconds:.1f} s, {run.steps / max(run.run_seconds, 1e-9):.0f} steps/s)",
            err=True,
        )
    return np.concatenate(parts)


@cli.command(name="run")
@click.argument("artifact", type=click.Path(file_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["sim", "lava"]), default="sim", show_default=True,
              help="sim: the bit-exact simulator (pipelined view); lava: Lava's Loihi2SimCfg(fixed_pt).")
@click.option("--data", "data_spec", default="digits", show_default=True, help="digits | digits32 | cifar10:FOLDER | FILE.npz")
@click.option("--samples", type=click.IntRange(min=1), default=None, help="Use the first N test samples.")
@click.option("--chunk", type=click.IntRange(min=1), default=50, show_default=True,
              help="Samples per Lava run (progress is reported per chunk).")
@click.option("--soft-reset", type=click.Choice(["process", "recurrent"]), default="process", show_default=True,
              help="Lava route for soft reset: our SoftResetLIF process, or stock CUBA LIF + self-inhibitory synapse.")
@click.option("--show", type=click.IntRange(min=0), default=10, show_default=True, help="Predictions to print.")
@_user_errors
def run_command(artifact, backend, data_spec, samples, chunk, soft_reset, show):
    """Run a compiled artifact on a dataset; print predictions and accuracy."""
    from inflor_deploy.artifact import load_artifact
    from inflor_deploy.data import load_dataset

    from inflor_deploy.data.conform import conform_dataset

    art = load_artifact(artifact)
    graph = art.fixed_graph
    data = load_dataset(data_spec, "test").take(samples)
    data = conform_dataset(data, graph.input, classes=graph.output.shape[0], timesteps=graph.timesteps)
    readout = _predict(graph, data.images, backend, chunk, soft_reset)
    predicted = readout.argmax(1)
    for i in range(min(show, len(data))):
        click.echo(f"  sample {i:>4}: predicted {int(predicted[i])}  label {int(data.labels[i])}")
    accuracy = float((predicted == data.labels).mean())
    click.echo(f"{backend}: accuracy {accuracy:.4f} on {len(data)} samples of {data.name}")


def _export_netx(art, output, *, force, check, data_spec, allow_inexact) -> None:
    """``export --format netx``: lava-dl NetX HDF5 (stock CUBA blocks), checked in Lava before it is kept."""
    from inflor_deploy.backends.netx.export import NetxCheckFailed, export_netx

    graph = art.fixed_graph
    images = None
    if check:
        from inflor_deploy.data import load_dataset

        data = load_dataset(data_spec, "test").take(check)
        if tuple(data.images.shape[1:]) != tuple(graph.input.shape):
            raise InflorError(
                f"{data.name} images are {tuple(data.images.shape[1:])}; the model expects {tuple(graph.input.shape)}"
            )
        images = data.images
    elif allow_inexact:
        raise InflorError(
            "--allow-inexact needs --check N >= 1: an inexact file is only written with its measured agreement"
        )
    source = {
        "artifact": str(art.path.resolve()),
        "fixed_point_ir_sha256": art.manifest["integrity"]["files"].get(art.manifest["files"]["fixed_point_ir"]),
        "target": art.manifest["target"]["name"],
    }
    try:
        result = export_netx(
            graph, output, check_images=images, allow_inexact=allow_inexact, force=force, source=source
        )
    except NetxCheckFailed as failed:
        click.echo(failed.check.summary())
        click.echo(f"error: the NetX file does not run bit-exactly in Lava; {output} was not written", err=True)
        sys.exit(EXIT_VERIFICATION_FAILED)
    plan = result.plan
    click.echo(f"NetX HDF5 ({len(plan.blocks)} CUBA blocks, {'exact' if plan.exact else 'INEXACT'}):")
    for index, block in enumerate(plan.blocks):
        role = "readout" if block.is_readout else f"vThMant {block.vth}"
        click.echo(
            f"  {index}: {block.synapse.kind:<5} {block.synapse.name} -> {block.layer.name} {tuple(block.shape)} {role}"
            + (f"  INEXACT: {block.inexact}" if block.inexact else "")
        )
    args = ", ".join(f"{k}={v}" for k, v in plan.load_arguments.items())
    click.echo(f"load: lava.lib.dl.netx.hdf5.Network(net_config={str(output)!r}, {args})")
    meta = plan.metadata()
    inp, readout = meta["input"], meta["readout"]
    click.echo(f"input: {plan.input_encoding}, {inp['frames']}; Network.inp is {inp['network_inp']}")
    click.echo(f"readout: {readout['read']}; score = v / (64 * {readout['scale']:.6g} * {readout['divisor']})")
    for warning in plan.warnings:
        click.echo(f"  WARNING: {warning}")
    if result.check is not None:
        click.echo(result.check.summary())
    click.echo(f"written: {result.path} (sha256 {result.sha256[:16]}...)")


def _export_nir(art, output, *, force, check, data_spec, allow_inexact) -> None:
    """``export --format nir``: the float IR after the float passes as NIR, the reset NIR cannot state in metadata."""
    from inflor_deploy.backends.nir import NirCheckFailed, export_nir
    from inflor_deploy.nir_semantics import EXPORT_DT

    if allow_inexact:
        raise InflorError("--allow-inexact applies to --format netx; a NIR file states every float neuron exactly")
    graph = art.float_graph
    images = None
    if check:
        from inflor_deploy.data import load_dataset
        from inflor_deploy.data.conform import conform_dataset

        from inflor_deploy.ir import infer_shapes

        data = load_dataset(data_spec, "test").take(check)
        classes = infer_shapes(graph)[graph.output.name][0]
        images = conform_dataset(data, graph.input, classes=classes, timesteps=graph.timesteps).images
    passes = art.manifest["passes"]
    step = art.manifest["files"]["ir_steps"][passes.index("QuantizeFixedPoint") if "QuantizeFixedPoint" in passes
                                             else len(passes)]  # fmt: skip
    source = {"artifact": str(art.path.resolve()), "float_ir": step, "target": art.manifest["target"]["name"],
              "float_ir_sha256": art.manifest["integrity"]["files"].get(step, "")}  # fmt: skip
    try:
        result = export_nir(graph, output, force=force, source=source, check_images=images)
    except NirCheckFailed as failed:
        click.echo(f"check: {failed.check.name}: {failed.check.summary}")
        click.echo(f"error: the written NIR graph, evaluated as NIR defines it, does not give the float IR's spikes; "
                   f"{output} was not written", err=True)
        sys.exit(EXIT_VERIFICATION_FAILED)
    click.echo(f"NIR graph ({len(result.nodes)} nodes, dt {EXPORT_DT:g} s) of the float IR after the float passes "
               "(the input of QuantizeFixedPoint):")
    for name, kind in result.nodes.items():
        click.echo(f"  {kind:<10} {name}" + (f"  (metadata: {', '.join(result.unstated[name])})"
                                             if name in result.unstated else ""))  # fmt: skip
    if result.unstated:
        click.echo(
            "WARNING: NIR has no reset mode. Every consumer other than inflor-deploy (snnTorch, SpikingJelly, Norse, "
            "sinabs, Lava, ...) reads each IF/LIF node as reset to v_reset (0 here) and fires on v > v_threshold; "
            f"what NIR cannot state about {len(result.unstated)} layer(s) (listed above) is kept only in the nodes' "
            "metadata ('inflor_deploy'), which only inflor-deploy reads. Such consumers will not reproduce these "
            "layers' spikes."
        )
    if result.check is not None:
        click.echo(f"check: {result.check.name}: {result.check.summary}")
    click.echo(f"written: {result.path} (sha256 {result.sha256[:16]}...); nir.read accepts it, and inflor-deploy "
               "reads it back as the same float IR, bit for bit")


#: ``export --format`` -> the writer; a new format adds its function here.
_EXPORTERS = {"netx": _export_netx, "nir": _export_nir}


@cli.command()
@click.argument("artifact", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(sorted(_EXPORTERS)), required=True,
              help="netx: lava-dl NetX HDF5, which lava.lib.dl.netx.hdf5.Network loads (Loihi 2; stock CUBA layers). "
                   "nir: the float IR after the float passes as a NIR graph (nir.read loads it; the reset mode NIR "
                   "cannot state is kept in metadata only inflor-deploy reads).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The file to write.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--check", type=click.IntRange(min=0), default=2, show_default=True,
              help="Run N test samples through the written file in its consumer before keeping it and compare with "
                   "the simulator (netx: lava-dl on Loihi2SimCfg fixed_pt, bit for bit; nir: the graph evaluated as "
                   "NIR defines it vs the float IR, spike for spike, near-ties counted; exit 2 if not). 0 skips.")
@click.option("--data", "data_spec", default="digits", show_default=True,
              help="Samples for --check: digits | cifar10:FOLDER | FILE.npz")
@click.option("--allow-inexact", is_flag=True,
              help="netx: write soft-reset layers as stock hard-reset layers instead of refusing; prints the "
                   "measured spike and class agreement with the simulator (needs --check >= 1).")
@_user_errors
def export(artifact, fmt, output, force, check, data_spec, allow_inexact):
    """Write a compiled ARTIFACT in an exchange format (the artifact's files are checked first).

    Refusals (a layer the format cannot express exactly) exit with status 1 and
    write nothing; a --check that is not bit-exact exits with status 2 and writes nothing.
    """
    from inflor_deploy.artifact import load_artifact

    art = load_artifact(artifact)
    _EXPORTERS[fmt](art, output, force=force, check=check, data_spec=data_spec, allow_inexact=allow_inexact)


@cli.command()
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("artifacts/demo"), show_default=True)
@_user_errors
def demo(output):
    """The README's main job: compile the bundled digits model for loihi2-sim."""
    from inflor_deploy.pretrained import DEFAULT_MODEL

    result = _compile(DEFAULT_MODEL, "loihi2-sim", output, force=True)
    _print_compile_summary(result, output)
    _lava_smoke(result)


if __name__ == "__main__":
    cli()

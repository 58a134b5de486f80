"""Whether an existing artifact is what compiling a checkpoint would give now, so it can be reused.

``inflor-deploy verify model.pt`` compiles into a default directory first.
Run twice, the second run found that directory and refused to overwrite
it. Now the artifact is compared with the request, by content:

* the artifact itself must be intact: :func:`~inflor_deploy.artifact.load_artifact`
  checks the manifest's shape and the sha256 of every file compile wrote
  (``integrity.files``). A tampered artifact is never reused, nor silently
  replaced: the command stops, names what changed, and ``--force`` rebuilds it;
* its sources (``integrity.sources``): the checkpoint (same path and
  sha256 as the request's), the target file (same path and sha256 as the
  requested target's), and every other recorded source still as it was;
* the compile options, the manifest's one record of them
  (``compile_options``, :func:`inflor_deploy.compiler.compile_options`):
  target, T, probe size, quantization and the resolved input declaration
  (range, normalization, encoding), the same dict level 0 rebuilds from;
* the inflor-deploy version, and a complete compile (no ``--stop-after``).

All equal: the artifact is reused. Any different: it is rebuilt, and the
message says which differed. A directory that is not an artifact is never
touched (that still needs ``--force``).
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inflor_deploy.artifact import Artifact, ArtifactError, json_default, load_artifact
from inflor_deploy.integrity import ManifestError, TamperError, sha256
from inflor_deploy.targets import Target

__all__ = ["ReuseDecision", "decide_reuse"]


@dataclass(frozen=True)
class ReuseDecision:
    """What to do with an existing output directory.

    Attributes:
        action: ``"compile"`` (nothing there), ``"reuse"``, ``"rebuild"`` (an
            artifact of something else) or ``"refuse"`` (not an artifact, or
            one changed after compiling).
        reason: One line for the user.
        artifact: The artifact to reuse (``"reuse"`` only).
    """

    action: str
    reason: str
    artifact: Artifact | None = None


def _short(digest: str | None) -> str:
    return f"{digest[:12]}..." if digest else "none recorded"


def _source_differences(sources: list[dict[str, str]], wanted: dict[str, Path]) -> list[str]:
    """How the recorded sources differ from the request's (``wanted``: role -> file) and from the disk."""
    differences = []
    for role, path in wanted.items():
        entry = next((s for s in sources if s["role"] == role), None)
        digest = sha256(path)
        if entry is None:
            differences.append(f"no {role} recorded")
        elif entry["sha256"] != digest:
            differences.append(f"{role} sha256 {_short(entry['sha256'])} there, {_short(digest)} now")
        elif Path(entry["path"]) != path.resolve():
            differences.append(f"{role} compiled from {entry['path']}, this is {path.resolve()}")
    for entry in sources:
        if entry["role"] in wanted:
            continue
        path = Path(entry["path"])
        if not path.is_file():
            differences.append(f"its {entry['role']} {path} is gone")
        elif sha256(path) != entry["sha256"]:
            differences.append(f"its {entry['role']} {path} changed since")
    return differences


def decide_reuse(out: Path, checkpoint: Path, target: Target, options: dict[str, Any]) -> ReuseDecision:
    """Compare the artifact at ``out`` with compiling ``checkpoint`` for ``target`` with ``options``.

    Args:
        out: The output directory.
        checkpoint: The checkpoint file to compile.
        target: The loaded target.
        options: What :func:`inflor_deploy.compiler.requested_options` gives
            for the request (the ``compile_options`` its compile would record).
    """
    if not out.exists():
        return ReuseDecision("compile", f"compiling {checkpoint.name} into {out}")
    try:
        artifact = load_artifact(out)  # checks the manifest's shape and every file's sha256
    except TamperError as err:
        return ReuseDecision("refuse", f"{out} will not be reused: {err} (or pass --force to recompile it)")
    except (ArtifactError, ManifestError) as err:
        return ReuseDecision("refuse", f"{out} exists and is not a usable artifact ({err}); pass --force to replace it")
    manifest = artifact.manifest
    wanted = {"checkpoint": Path(checkpoint)}
    if target.path is not None:
        wanted["target"] = Path(target.path)
    differences = _source_differences(manifest["integrity"]["sources"], wanted)
    recorded = manifest["compile_options"]
    requested = json.loads(json.dumps(options, default=json_default))  # as the manifest stores it
    if recorded != requested:
        changed = sorted(k for k in recorded.keys() | requested.keys() if recorded.get(k) != requested.get(k))
        differences.append(
            "compile options differ: " + "; ".join(f"{k} {recorded.get(k)} there, {requested.get(k)} now" for k in changed)
        )
    version = importlib.metadata.version("inflor-deploy")
    if (manifest.get("versions") or {}).get("inflor-deploy") != version:
        differences.append(f"inflor-deploy {(manifest.get('versions') or {}).get('inflor-deploy')} there, {version} now")
    if not manifest.get("complete"):
        differences.append("that compile stopped early (--stop-after)")
    if differences:
        return ReuseDecision("rebuild", f"recompiling {out}: it does not match this request ({'; '.join(differences)})")
    return ReuseDecision(
        "reuse",
        f"reusing {out}: compiled from this checkpoint (sha256 {_short(sha256(checkpoint))}) for {target.name} with "
        "the same options, its files as compile wrote them",
        artifact,
    )


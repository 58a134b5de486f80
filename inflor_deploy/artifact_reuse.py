"""Whether an existing artifact is what compiling a checkpoint would give now, so it can be reused.

``inflor-deploy verify model.pt`` compiles into a default directory first.
Run twice, the second run found that directory and refused to overwrite
it. Now the manifest is compared with the request: the checkpoint's
sha256, the target (name and the sha256 of its file), the compile options
and the inflor-deploy version. All equal: the artifact is reused. Any
different: it is rebuilt, and the message says which differed. A
directory that is not an artifact is never touched (that still needs
``--force``).

The comparison is by content, not by time stamps: the sha256 of the
checkpoint file, not its modification time, decides.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inflor_deploy.artifact import Artifact, ArtifactError, json_default, load_artifact, sha256
from inflor_deploy.targets import Target

__all__ = ["ReuseDecision", "decide_reuse"]


@dataclass(frozen=True)
class ReuseDecision:
    """What to do with an existing output directory.

    Attributes:
        action: ``"compile"`` (nothing there), ``"reuse"``, ``"rebuild"`` (an
            artifact of something else) or ``"refuse"`` (not an artifact).
        reason: One line for the user.
        artifact: The artifact to reuse (``"reuse"`` only).
    """

    action: str
    reason: str
    artifact: Artifact | None = None


def _short(digest: str | None) -> str:
    return f"{digest[:12]}..." if digest else "none recorded"


def decide_reuse(out: Path, checkpoint: Path, target: Target, options: dict[str, Any]) -> ReuseDecision:
    """Compare the artifact at ``out`` with compiling ``checkpoint`` for ``target`` with ``options``.

    Args:
        out: The output directory.
        checkpoint: The checkpoint file to compile.
        target: The loaded target.
        options: :func:`inflor_deploy.compiler.compile_options` of the request.
    """
    if not out.exists():
        return ReuseDecision("compile", f"compiling {checkpoint.name} into {out}")
    try:
        artifact = load_artifact(out)
    except ArtifactError as err:
        return ReuseDecision("refuse", f"{out} exists and is not a usable artifact ({err}); pass --force to replace it")
    manifest = artifact.manifest
    source = manifest.get("source") or {}
    recorded_target = manifest.get("target") or {}
    digest = sha256(checkpoint)
    version = importlib.metadata.version("inflor-deploy")
    differences = []
    if source.get("sha256") != digest:
        differences.append(f"checkpoint sha256 {_short(source.get('sha256'))} there, {_short(digest)} now")
    if recorded_target.get("name") != target.name:
        differences.append(f"target {recorded_target.get('name')!r} there, {target.name!r} now")
    elif target.path is not None and recorded_target.get("sha256") != sha256(Path(target.path)):
        differences.append(f"target file {target.path} changed since")
    if "compile_options" not in manifest:
        differences.append("its compile options were not recorded")
    elif manifest["compile_options"] != json.loads(json.dumps(options, default=json_default)):  # as stored
        differences.append(f"compile options {manifest['compile_options']} there, {options} now")
    if (manifest.get("versions") or {}).get("inflor-deploy") != version:
        differences.append(f"inflor-deploy {(manifest.get('versions') or {}).get('inflor-deploy')} there, {version} now")
    if not manifest.get("complete"):
        differences.append("that compile stopped early (--stop-after)")
    if differences:
        return ReuseDecision("rebuild", f"recompiling {out}: it does not match this request ({'; '.join(differences)})")
    return ReuseDecision(
        "reuse",
        f"reusing {out}: compiled from this checkpoint (sha256 {_short(digest)}) for {target.name} with the same options",
        artifact,
    )

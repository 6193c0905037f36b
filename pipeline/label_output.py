"""What a batch-labelling run writes and what it keeps to check a rerun against, for every engine.

A run's outputs are the sentence file, its summary, its rejects and `<output>.run.json` (the settings it was
written with). Work in progress lives in `<output>.partial/`, whose `manifest.json` holds the same settings:
a rerun with other settings is refused there, and (unless `label.overwrite`) over a finished output too,
rather than mixing rows labelled under different settings.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError
from pipeline.config_sections import LABEL_OUTPUT_FORMATS, LabelConfig, SegmentConfig
from pipeline.io.atomic import write_text_atomic
from pipeline.labelling import ModelInfo

EXIT_ALL_LABELLED = 0
EXIT_SOME_REJECTED = 3
MANIFEST = "manifest.json"
_FORMAT_VERSION = 2  # 2: document facts as columns, strategy as a list


@dataclass(frozen=True)
class LabelResult:
    """Counts and paths of a finished labelling run; `exit_code` is what the CLI returns."""

    documents: int  # input items seen: documents and reader rejects
    labelled: int  # documents with rows in the output
    sentences: int
    rejected: int  # documents listed in the rejects file and absent from the output
    warnings: int  # documents labelled only in part (truncated), listed in the rejects file as warnings
    output: Path
    summary: Path
    rejects: Path
    resumed_chunks: int = 0  # chunks found committed by an earlier, interrupted run
    quantization_disagreement: float | None = None  # measured on the check sample when quantizing
    precision: str = "float32"  # what the model ran in: float32, int8 or bf16 (see SentenceModel.precisions)
    # where the time went, in seconds: read, segment, tokenise, infer, rows, write, other, total (pipeline.timing)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when every document was labelled in full; 3 when the rejects file lists anything."""
        return EXIT_SOME_REJECTED if self.rejected or self.warnings else EXIT_ALL_LABELLED


class LabelRunMismatch(ConfigError):
    """An interrupted or finished run with other arguments (or another input) is where this one would write.

    A refusal of the arguments, not a failure: the CLI prints the one line and exits 2.
    """


@dataclass(frozen=True)
class LabelPaths:
    output: Path
    summary: Path
    rejects: Path
    partial: Path
    record: Path  # the arguments a finished output was written with

    @classmethod
    def for_config(cls, cfg: LabelConfig) -> LabelPaths:
        output = Path(cfg.output)
        if output.suffix.lower() not in LABEL_OUTPUT_FORMATS:
            raise ValueError(
                f"label.output {str(output)!r}: unknown format {output.suffix or '(no extension)'!r}; "
                f"use one of {', '.join(LABEL_OUTPUT_FORMATS)}"
            )
        return cls(
            output=output,
            summary=output.with_name(f"{output.stem}.summary{output.suffix}"),
            rejects=Path(cfg.rejects) if cfg.rejects else output.with_name(f"{output.stem}.rejects.jsonl"),
            partial=output.with_name(f"{output.name}.partial"),
            record=output.with_name(f"{output.name}.run.json"),
        )


def run_settings(cfg: LabelConfig, info: ModelInfo, segment_cfg: SegmentConfig) -> dict[str, Any]:
    """Everything that changes the rows (the engine included; not where it writes or how Spark runs)."""
    return {
        "format": _FORMAT_VERSION,
        "model": asdict(info),
        "label": cfg.model_dump(mode="json", exclude={"output", "rejects", "threads", "overwrite", "spark"}),
        "segment": segment_cfg.model_dump(mode="json", exclude={"input", "output", "rejects"}),
    }


def setting_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted names of the settings that differ between two runs' records (`label.max_chars`)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in setting_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def check_finished_output(paths: LabelPaths, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse to replace a finished output written with other arguments, unless asked to."""
    if overwrite or not (paths.output.exists() and paths.record.is_file()) or paths.partial.exists():
        return
    stored = json.loads(paths.record.read_text(encoding="utf-8"))
    changed = setting_differences(stored, settings)
    if changed:
        raise LabelRunMismatch(
            f"{paths.output}: already written by a run with other arguments (differs in {', '.join(changed)}); "
            "pass --overwrite (label.overwrite=true) to replace it, or choose another --output"
        )


def open_work_folder(partial: Path, settings: dict[str, Any]) -> None:
    """Create `<output>.partial/` with its manifest, or check that the one there has the same settings."""
    manifest = partial / MANIFEST
    if manifest.is_file():
        stored = json.loads(manifest.read_text(encoding="utf-8"))
        changed = setting_differences(stored, settings)
        if changed:
            raise LabelRunMismatch(
                f"{partial}: an interrupted run with other arguments is there (differs in {', '.join(changed)}); "
                f"rerun with the arguments it was started with, or delete {partial} to start over"
            )
        return
    if partial.exists():  # killed before its manifest was written: nothing in it was committed
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_text_atomic(manifest, json.dumps(settings, indent=2, sort_keys=True))

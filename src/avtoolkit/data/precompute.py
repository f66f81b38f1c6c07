"""Fill the caches a training config's datamodule reads, ahead of training, from that datamodule itself.

The caches are keyed by every setting their values depend on, so they must be filled with the very settings the
training run uses. Rather than repeating them, build the datamodule from the training config
(:func:`datamodule_from_config`, or in Python construct it as the config does) and give it to
:func:`compute_features`: it fills exactly what that datamodule's ``prepare_data`` would, once, so that a
multi-GPU job starts with complete caches (``avtoolkit data features EXPERIMENT.yaml`` does both)::

    datamodule = datamodule_from_config(["configs/experiment/favs_s4_224.yaml", "local.yaml"])
    print(compute_features(datamodule).format())
"""

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser
from torch import nn

from avtoolkit.data.datamodules import BaseAVDataModule, SegmentationDataModule, SeparationDataModule
from avtoolkit.data.features import CacheReport, Layout, VGGishEmbeddingCache

__all__ = ["CacheReport", "FeatureSummary", "compute_features", "datamodule_from_config"]


@dataclass
class FeatureSummary:
    """The caches of one datamodule's tree after :func:`compute_features`."""

    layout: Layout
    root: Path
    caches: list[CacheReport] = field(default_factory=list)

    def format(self) -> str:
        """A few lines for people: one per cache."""
        lines = [f"{self.layout} tree {self.root}:"]
        for cache in self.caches:
            lines.append(
                f"  {cache.name}: {cache.entries} entries, {cache.computed} computed now, "
                f"{cache.entries - cache.computed} already cached — {cache.folder}"
            )
        return "\n".join(lines)


def compute_features(
    datamodule: SegmentationDataModule | SeparationDataModule,
    *,
    vggish: nn.Module | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> FeatureSummary:
    """Fill the caches the datamodule reads, once, before training (so DDP ranks do not each compute them).

    - :class:`~avtoolkit.data.datamodules.SegmentationDataModule` (``cache_dir`` set): the log-mel of every clip
      of every split; with ``vggish``, also its embeddings of them (for analyses:
      :class:`~avtoolkit.data.features.VGGishEmbeddingCache`, in the same ``cache_dir``).
    - :class:`~avtoolkit.data.datamodules.SeparationDataModule` (with a ``visual_encoder`` and/or a
      ``mixture_encoder``): the frame embeddings of every clip, the embeddings of the fixed mixtures.

    These are what the datamodule's ``prepare_data`` fills, with the same keys. Re-running computes only what is
    missing; an interrupted run keeps every finished entry.

    Args:
        datamodule: The training run's datamodule (e.g. :func:`datamodule_from_config` of its config).
        vggish: VGGish with its weights (segmentation only): also cache its embeddings of the log-mel.
        device: Where features are computed; ``None``: CUDA when available, else the CPU.
        progress: Show progress bars.

    Returns:
        Per cache: its folder, how many entries the tree needs, how many were computed now.

    Raises:
        ValueError: the datamodule reads no cache (the message names the setting), or ``vggish`` with a
            separation datamodule.
        DatasetError: the tree does not match its layout (missing metadata, unreadable audio, ...).
        TypeError: another kind of datamodule.
    """
    run_on = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(datamodule, SegmentationDataModule):
        log_mel = datamodule.log_mel_cache
        if log_mel is None:
            raise ValueError(
                "the SegmentationDataModule has no cache_dir, so it reads no cache and computes the log-mel on the "
                "device: set data.init_args.cache_dir (e.g. data/cache) in the training config, then fill it"
            )
        summary = FeatureSummary(datamodule.dataset, datamodule.root, datamodule.fill_caches(run_on, progress))
        if vggish is not None:
            clips = datamodule.all_clips()
            embeddings = VGGishEmbeddingCache(log_mel, vggish)
            computed = embeddings.ensure(clips, run_on, progress)
            n_clips = len({embeddings.path(clip) for clip in clips})
            summary.caches.append(CacheReport("VGGish embeddings", embeddings.folder, n_clips, computed))
        return summary
    if isinstance(datamodule, SeparationDataModule):
        if vggish is not None:
            raise ValueError("vggish applies to a SegmentationDataModule (AVSBench log-mel), not to separation")
        if datamodule.frame_cache is None and datamodule.mixture_cache is None:
            raise ValueError(
                "the SeparationDataModule has no frozen encoder, so it reads no cache: set "
                "data.init_args.visual_encoder (frame embeddings) and/or data.init_args.mixture_encoder (mixture "
                "embeddings) in the training config"
            )
        return FeatureSummary("music", datamodule.root, datamodule.fill_caches(run_on, progress))
    raise TypeError(
        f"compute_features takes a SegmentationDataModule or a SeparationDataModule, not {type(datamodule).__name__}"
    )


def datamodule_from_config(configs: Sequence[str | Path]) -> BaseAVDataModule:
    """The datamodule of a training config's ``data`` section, built as ``avtoolkit fit --config ...`` builds it.

    Only the datamodule is built (not the task or the trainer). As with several ``--config`` files, a later file's
    ``data`` overrides the earlier ones' (its ``init_args`` are merged into theirs); files without ``data`` (e.g. a
    trainer overlay) change nothing. A ``data`` given as a path (``data: ../data/s4.yaml``) is relative to its file.

    Args:
        configs: The experiment YAML file(s), in order.

    Returns:
        The datamodule (with its encoders, e.g. a ``visual_encoder``, built and their weights loaded).

    Raises:
        FileNotFoundError: a file (or the data file it points to) does not exist.
        ValueError: no file has a ``data`` section, or it is not a valid datamodule (the message names the files).
    """
    if not configs:
        raise ValueError("no config file given")
    paths = [Path(config) for config in configs]
    names = ", ".join(str(path) for path in paths)
    args: list[str] = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            config: Any = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not a YAML file: {err}") from err
        data = config.get("data") if isinstance(config, dict) else None
        if data is None:
            continue
        if isinstance(data, str):
            data_file = Path(data) if Path(data).is_absolute() else path.parent / data
            if not data_file.is_file():
                raise FileNotFoundError(f"{path}: its data section points to {data_file}, which does not exist")
            args += ["--data", str(data_file)]
        else:
            args += ["--data", yaml.safe_dump(data)]
    if not args:
        raise ValueError(
            f"{names} has no `data` section: give the experiment config the training run uses (the file(s) of "
            "`avtoolkit fit --config ...`, e.g. configs/experiment/NAME.yaml)"
        )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(BaseAVDataModule, "data", required=True)
    try:
        parsed = parser.parse_args(args)
    except argparse.ArgumentError as err:
        raise ValueError(f"the data section of {names} is not a valid datamodule: {err}") from err
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    datamodule: BaseAVDataModule = instantiate(parsed).data
    return datamodule

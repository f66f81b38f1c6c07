"""The held-out-family protocol of the built-in synthetic trees, as the datamodules see it.

A tree made with ``avtoolkit data synth ... --holdout true`` keeps one picture family and one sound family out
of train and val. Its test split holds two sets of clips, told apart by the ``held_out`` flag of each clip in
``manifest.json``: the *in-family* clips, rendered like the training clips, and the *held-out-family* clips,
rendered by the families no model was trained on. The datamodules evaluate the two sets apart (:data:`TEST_SETS`,
logged under ``test/`` and ``test_held_out/``): the first says how well a model fits the generator, the second
whether it recognises the objects it sees and hears in a rendering it has never met.
"""

import json
from pathlib import Path
from typing import Literal

MANIFEST = "manifest.json"
GENERATOR = "avtoolkit.data.synth"
TEST_SETS: tuple[Literal["test"], Literal["test_held_out"]] = ("test", "test_held_out")
"""The test sets of a tree of the protocol: in-family clips, then held-out-family clips (the log prefixes)."""


def held_out_clips(root: str | Path) -> set[str]:
    """The names of the held-out-family test clips of a built-in synthetic tree.

    Empty for a tree made without the protocol, and for any other tree (one without the generator's
    ``manifest.json``).
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        return set()
    manifest = json.loads(path.read_text())
    if manifest.get("generator") != GENERATOR:
        return set()
    return {clip["name"] for clip in manifest["clips"] if clip.get("held_out")}

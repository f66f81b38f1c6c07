"""Light commands start without the heavy libraries: `avtoolkit data check` imports neither torch nor Lightning."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "torchaudio", "lightning")

# Runs `avtoolkit ARGS` in a fresh interpreter, then prints its exit status and the heavy modules it imported.
PROBE = """
import json, sys
from avtoolkit.cli import main
try:
    main(sys.argv[1:])
    status = 0
except SystemExit as exit:
    status = exit.code
print(json.dumps({"status": status, "imported": sorted(m for m in HEAVY if m in sys.modules)}))
"""


def run_command(args: list[str]) -> dict[str, object]:
    """The exit status of `avtoolkit ARGS` in a fresh interpreter and the heavy modules it imported."""
    code = f"HEAVY = {HEAVY!r}\n{PROBE}"
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("layout", ["music", "s4", "ms3", "avss"])
def test_data_check_imports_neither_torch_nor_lightning(layout, avsbench_trees, music_tree):
    root: Path = music_tree if layout == "music" else avsbench_trees[layout]
    assert run_command(["data", "check", layout, str(root)]) == {"status": 0, "imported": []}


def test_data_check_of_a_broken_tree_imports_neither_torch_nor_lightning(tmp_path):
    from fixtures.make_avsbench import make_avss

    make_avss(tmp_path, broken={"unknown_colour", "corrupt_wav", "missing_frame"})
    assert run_command(["data", "check", "avss", str(tmp_path)]) == {"status": 1, "imported": []}


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("0", "0")])
def test_importing_the_toolkit_keeps_libraries_off_the_hub_unless_told(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    if given is not None:
        env["HF_HUB_OFFLINE"] = given
    code = "import os, avtoolkit; print(os.environ['HF_HUB_OFFLINE'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == expected

"""SegmentationReport: `avtoolkit test` of a segmentation model writes report.md, metrics.json and examples.png."""

import json
from pathlib import Path

import yaml
from fixtures.tiny_models import TINY_FAVS
from PIL import Image

from avtoolkit.cli import main

CONFIGS = Path(__file__).parents[2] / "configs" / "experiment"


def tiny_config(tmp_path: Path, root: Path, dataset: str, report: dict) -> Path:
    """The FAVS S4 quick start shrunk to seconds, on ``dataset``, with a SegmentationReport (``report``: its args)."""
    config = yaml.safe_load((CONFIGS / "quickstart_favs_s4.yaml").read_text())
    trainer = config["trainer"]
    trainer.update(max_epochs=1, limit_test_batches=2, default_root_dir=str(tmp_path))
    trainer["logger"]["init_args"]["save_dir"] = str(tmp_path)
    trainer["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "checkpoints")
    # the quick start's report callback, with the test's arguments
    trainer["callbacks"][1:] = [{"class_path": "avtoolkit.callbacks.SegmentationReport", "init_args": report}]
    network = config["model"]["init_args"]["model"]["init_args"]
    network.update({"audio_weights": None, "backbone_weights": None, "freeze_audio": False, **TINY_FAVS})
    network["num_classes"] = 71 if dataset == "avss" else 1
    config["data"]["init_args"].update(dataset=dataset, root=str(root), image_size=32, batch_size=2, num_workers=0)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_binary_report_through_the_cli(synthetic_trees, tmp_path, capsys):
    report = tmp_path / "reports" / "s4"
    config = tiny_config(tmp_path, synthetic_trees["s4"], "s4", {"dirpath": str(report), "n_examples": 2})
    main(["test", "--config", str(config)])
    assert capsys.readouterr().out.splitlines()[-1] == f"Report: {(report / 'report.md').resolve()}"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["protocol"] == "default" and 0.0 <= metrics["mj"] <= 1.0 and 0.0 <= metrics["mf"] <= 1.0
    assert metrics["n_frames"] == 15  # the 3 test clips of the tiny tree, 5 annotated frames each
    text = (report / "report.md").read_text()
    assert "| model | " in text and "M_J (Jaccard)" in text and "![examples](examples.png)" in text
    assert f"| model | {metrics['mj']:.4f} | {metrics['mf']:.4f} |" in text
    with Image.open(report / "examples.png") as figure:
        assert figure.format == "PNG" and figure.height > figure.width / 2  # two clips, one above the other
    assert sorted(p.name for p in report.iterdir()) == ["examples.png", "metrics.json", "report.md"]


def test_semantic_report_goes_to_the_run_folder_by_default(synthetic_trees, tmp_path, capsys):
    config = tiny_config(tmp_path, synthetic_trees["avss"], "avss", {"n_examples": 1})
    main(["test", "--config", str(config)])
    [report] = tmp_path.rglob("report/report.md")
    assert report.parent.parent.name.startswith("version_")  # the CSV logger's folder of this run
    assert capsys.readouterr().out.splitlines()[-1] == f"Report: {report.resolve()}"
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert {"miou", "mf", "miou_no_bg", "mf_no_bg", "n_classes_seen", "protocol"} <= set(metrics)
    text = report.read_text()
    assert "| with background |" in text and "| without background |" in text
    assert "## Per class" in text and "| background |" in text  # named from the tree's label2idx.json

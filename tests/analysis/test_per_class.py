import math

import pytest
import torch

from avtoolkit.analysis.per_class import ClassRow, compare_models, per_class_sdr

# 3 clips × 2 sources; class 0 ("a") sources: (0,0) (1,0) (2,1); class 1 ("b"): (0,1) (2,0); (1,1) unknown
PER_CLIP = {
    "sdr": torch.tensor([[4.0, 2.0], [6.0, 99.0], [9.0, 8.0]], dtype=torch.float64),
    "sdr_mix": torch.tensor([[0.0, 0.0], [2.0, 50.0], [-1.0, 2.0]], dtype=torch.float64),
    "labels": torch.tensor([[0, 1], [0, -1], [1, 0]]),
}


def test_per_class_sdr_by_hand():
    a, b = per_class_sdr(PER_CLIP, ["a", "b", "c"])  # "c" has no source: left out
    # a: SDR 4, 6, 8 -> mean 6, std (ddof 1) 2 -> SEM 2/sqrt(3); SDRi 4-0, 6-2, 8-2 = 4, 4, 6 -> 14/3
    assert (a.name, a.index, a.n_sources) == ("a", 0, 3)
    assert a.sdr == pytest.approx(6.0) and a.sdr_sem == pytest.approx(2 / math.sqrt(3))
    assert a.sdri == pytest.approx(14 / 3)
    # SDRi 4, 4, 6: mean 14/3, deviations -2/3 -2/3 4/3 -> variance (4/9 + 4/9 + 16/9) / 2 = 4/3 -> SEM 2/3
    assert a.sdri_sem == pytest.approx(2 / 3)
    # b: SDR 2, 9 -> mean 5.5, SEM |2 - 9| / 2 = 3.5; SDRi 2 - 0, 9 - (-1) = 2, 10 -> 6, SEM 4
    assert (b.name, b.n_sources) == ("b", 2)
    assert b.sdr == pytest.approx(5.5) and b.sdr_sem == pytest.approx(3.5)
    assert b.sdri == pytest.approx(6.0) and b.sdri_sem == pytest.approx(4.0)


def test_single_source_has_no_sem():
    rows = per_class_sdr({k: v[:1] for k, v in PER_CLIP.items()}, ["a", "b"])
    assert [r.n_sources for r in rows] == [1, 1] and all(math.isnan(r.sdr_sem) for r in rows)


def test_per_class_sdr_from_separation_metrics():
    from avtoolkit.metrics import SeparationMetrics

    g = torch.Generator().manual_seed(0)
    references = torch.randn(4, 2, 4000, generator=g, dtype=torch.float64)
    estimates = references + 0.3 * torch.randn(4, 2, 4000, generator=g, dtype=torch.float64)
    metric = SeparationMetrics()
    labels = torch.tensor([[0, 1], [2, 0], [1, -1], [2, 1]])
    metric.update(estimates, references, references.sum(1), labels=labels)
    per_clip = metric.per_clip()
    rows = per_class_sdr(per_clip, ["x", "y", "z"])
    assert [r.n_sources for r in rows] == [2, 3, 2]
    known = per_clip["labels"] >= 0
    # the source-weighted mean of the class means is the mean over all labelled sources
    weighted = sum(r.sdr * r.n_sources for r in rows) / sum(r.n_sources for r in rows)
    assert weighted == pytest.approx(float(per_clip["sdr"][known].mean()))


def test_per_class_sdr_errors():
    with pytest.raises(ValueError, match="lacks"):
        per_class_sdr({"sdr": PER_CLIP["sdr"]}, ["a", "b"])
    with pytest.raises(ValueError, match=r"labels must be in \[-1, 1\)"):
        per_class_sdr(PER_CLIP, ["a"])
    with pytest.raises(ValueError, match="must match"):
        per_class_sdr({**PER_CLIP, "sdr_mix": PER_CLIP["sdr_mix"][:2]}, ["a", "b"])
    bad = PER_CLIP["sdr"].clone()
    bad[1, 1] = math.nan  # an unknown source may be NaN: skipped
    assert len(per_class_sdr({**PER_CLIP, "sdr": bad}, ["a", "b"])) == 2
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        per_class_sdr({**PER_CLIP, "sdr": bad}, ["a", "b"])


def test_compare_models_markdown():
    late = [ClassRow("flute", 0, 4, 5.0, 6.0, 0.5, 0.4), ClassRow("cello", 1, 3, 3.0, 4.0, 0.25, 0.2)]
    hier = [
        ClassRow("flute", 0, 4, 7.0, 8.0, 0.5, 0.4),
        ClassRow("cello", 1, 2, 2.0, 3.0, math.nan, math.nan),
        ClassRow("tuba", 2, 1, 1.0, 2.0, math.nan, math.nan),
    ]
    table = compare_models({"late": late, "hierarchical": hier})
    lines = table.splitlines()
    assert lines[0] == "| class | sources | late SDR (dB) | hierarchical SDR (dB) |"
    assert lines[1] == "|---|---:|---:|---:|"
    assert lines[2] == "| flute | 4 | 5.00 ± 0.50 | 7.00 ± 0.50 |"
    assert lines[3] == "| cello | 3/2 | 3.00 ± 0.25 | 2.00 |"  # counts differ; no SEM for hierarchical
    assert lines[4] == "| tuba | 1 | – | 1.00 |"  # late has no tuba
    # class-balanced means: late (5 + 3) / 2 = 4; hierarchical (7 + 2 + 1) / 3 = 3.33
    assert lines[5] == "| mean over classes | | 4.00 | 3.33 |"
    sdri = compare_models({"late": late}, metric="sdri", with_sem=False, digits=1).splitlines()
    assert sdri[0] == "| class | sources | late SDRi (dB) |" and sdri[2] == "| flute | 4 | 6.0 |"
    with pytest.raises(ValueError, match="empty"):
        compare_models({})

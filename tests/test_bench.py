"""Tests for lang2net.bench on tiny timm models: every case runs and the strategies agree; no timing is asserted."""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from lang2net.apps import bench

FAST: dict[str, Any] = {"batch_size": 2, "repeats": 2, "warmup": 1, "device": "cpu", "dtype": "fp32"}
FAST_ARGS = ["--batch-size", "2", "--repeats", "2", "--warmup", "1", "--device", "cpu", "--dtype", "fp32"]
EXPECTED = {"plain", "shared", "hook", "per_sample", "merged", "peft", "peft_mixed", "train", "train_delta"}
CHECKED = {"shared", "hook", "per_sample", "merged", "peft"}


@pytest.fixture(scope="module")
def vit_result() -> dict[str, Any]:
    return bench.run_benchmark("test_vit", **FAST)


@pytest.fixture(scope="module", params=["test_efficientnet", "test_resnet"])
def conv_result(request: pytest.FixtureRequest) -> dict[str, Any]:
    return bench.run_benchmark(request.param, **FAST)


def _assert_all_cases_timed(result: dict[str, Any], repeats: int = 2) -> None:
    cases = result["cases"]
    assert set(cases) == EXPECTED
    for name, case in cases.items():
        assert case["error"] is None, (name, case["error"])
        assert case["median_ms"] > 0, name
        assert len(case["times_ms"]) == repeats and all(t > 0 for t in case["times_ms"]), name
        assert case["ratio"] > 0 and case["baseline"] in ("plain", "train"), name
    assert cases["plain"]["ratio"] == 1.0
    assert cases["train"]["ratio"] == 1.0
    assert cases["train_delta"]["baseline"] == "train"


def _assert_strategies_agree(result: dict[str, Any]) -> None:
    check = result["correctness"]
    assert check["reference"] == "shared"
    assert check["errors"] == {} and check["disagree"] == []
    assert set(check["max_abs_diff"]) == CHECKED
    assert all(0 <= diff < 1e-4 for diff in check["max_abs_diff"].values()), check["max_abs_diff"]
    assert check["max_abs_diff"]["shared"] == 0.0
    # the deltas really move the output (also in ResNet, whose residual branches timm zero-initialises), so agreeing
    # is evidence and not a no-op that every case would pass
    assert check["delta_effect"] > 10 * check["tolerance"]
    for name in CHECKED:
        assert result["cases"][name]["max_abs_diff"] == check["max_abs_diff"][name]


def test_vit_every_case_timed(vit_result: dict[str, Any]) -> None:
    _assert_all_cases_timed(vit_result)
    assert vit_result["settings"]["input_size"] == [3, 160, 160]
    assert vit_result["settings"]["dtype"] == "fp32"
    assert vit_result["preset"] == "VisionTransformer"
    assert vit_result["num_targets"] > 0
    assert vit_result["environment"]["device"] == "cpu"
    assert "compile_explain_per_sample" not in vit_result


def test_vit_strategies_agree(vit_result: dict[str, Any]) -> None:
    _assert_strategies_agree(vit_result)


def test_conv_model(conv_result: dict[str, Any]) -> None:
    _assert_all_cases_timed(conv_result)
    _assert_strategies_agree(conv_result)
    assert conv_result["preset"] in ("EfficientNet", "ResNet")


def test_result_is_strict_json(vit_result: dict[str, Any]) -> None:
    assert json.loads(json.dumps(vit_result, allow_nan=False)) == vit_result


def test_main_writes_json_and_prints_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "result.json"
    assert bench.main(["--model", "test_vit", *FAST_ARGS, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["cases"]) == EXPECTED
    assert data["model"] == "test_vit" and data["settings"]["batch_size"] == 2
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]  # no temp file left behind
    printed = capsys.readouterr().out
    assert "| case | median ms | ratio | notes |" in printed
    assert "| per_sample |" in printed and "peft 0." in printed and "dtype fp32 | batch 2" in printed


def test_out_template_per_model(tmp_path: Path) -> None:
    argv = ["--model", "test_vit", "test_resnet", *FAST_ARGS, "--cases", "shared"]
    assert bench.main([*argv, "--out", str(tmp_path / "{model}.json")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_resnet.json", "test_vit.json"]
    # several models need {model} in --out, else they would overwrite each other
    assert bench.main([*argv, "--out", str(tmp_path / "one.json")]) == 2


def test_case_subset_adds_baselines() -> None:
    result = bench.run_benchmark("test_vit", **FAST, cases=["hook", "train_delta"])
    assert list(result["cases"]) == ["plain", "hook", "train", "train_delta"]
    # the correctness check still compares every lang2net strategy (peft was not built: not selected)
    assert set(result["correctness"]["max_abs_diff"]) == CHECKED - {"peft"}
    assert result["cases"]["hook"]["max_abs_diff"] < 1e-4  # the hook case computes what the reference computes


def test_peft_failure_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    peft = pytest.importorskip("peft")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("peft cannot wrap this model")

    monkeypatch.setattr(peft, "get_peft_model", broken)
    result = bench.run_benchmark("test_vit", **FAST, cases=["shared", "peft", "peft_mixed"])
    for name in ("peft", "peft_mixed"):
        case = result["cases"][name]
        assert case["error"] == "RuntimeError: peft cannot wrap this model"
        assert case["median_ms"] is None and case["ratio"] is None and case["times_ms"] == []
    assert result["cases"]["shared"]["error"] is None
    assert "peft" in result["correctness"]["errors"]
    assert "ERROR RuntimeError: peft cannot wrap this model" in bench.format_table(result)


def test_format_table_warns_on_disagreement(vit_result: dict[str, Any]) -> None:
    assert "WARNING" not in bench.format_table(vit_result)
    broken = copy.deepcopy(vit_result)
    broken["correctness"]["disagree"] = ["hook"]
    broken["correctness"]["max_abs_diff"]["hook"] = 1.0
    assert "WARNING: hook disagrees with shared" in bench.format_table(broken)


def test_bad_arguments() -> None:
    assert bench.main(["--model", "no_such_model_xyz", *FAST_ARGS]) == 2
    with pytest.raises(ValueError, match="unknown cases"):
        bench.run_benchmark("test_vit", **FAST, cases=["nope"])
    with pytest.raises(ValueError, match="dtype"):
        bench.run_benchmark("test_vit", batch_size=2, device="cpu", dtype="int8")
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--cases", "nope"])


def test_add_arguments_mounts_as_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="lang2net")
    bench.add_arguments(parser.add_subparsers(dest="command").add_parser("bench"))
    args = parser.parse_args(["bench", "--model", "a", "b", "--targets", "qkv", "proj", "--compile"])
    assert args.model == ["a", "b"] and args.targets == ["qkv", "proj"] and args.compile
    assert args.out == bench.DEFAULT_OUT and args.rank == 8 and args.dtype is None


@pytest.mark.skipif(
    not os.environ.get("LANG2NET_TEST_COMPILE"), reason="torch.compile is slow on CPU; set LANG2NET_TEST_COMPILE=1"
)
def test_compile_cases() -> None:
    result = bench.run_benchmark("test_vit", **FAST, compile=True, cases=["shared", "per_sample"])
    for name in bench.COMPILE_CASES:
        assert result["cases"][name]["error"] is None and result["cases"][name]["median_ms"] > 0
        assert result["correctness"]["max_abs_diff"][name] < 1e-4
    assert result["cases"]["compile_shared"]["baseline"] == "compile_plain"
    assert result["compile_explain_per_sample"]["graph_break_count"] == 0  # the hooks trace as one graph


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16() -> None:
    result = bench.run_benchmark("test_vit", batch_size=4, repeats=2, warmup=1, device="cuda")
    assert result["settings"]["dtype"] == "bf16"
    _assert_all_cases_timed(result)
    assert result["correctness"]["disagree"] == [] and result["correctness"]["errors"] == {}


def test_generation_benchmark_reports_medians(capsys):
    import argparse

    from lang2net.apps import bench_generation

    args = bench_generation.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--backbone", "test_vit", "--classes", "12", "--repeats", "2", "--device", "cpu"]
    )
    results = bench_generation.run(args)
    assert set(results) == {"encode_ms", "generate_ms", "generate_cached_text_ms"}
    assert all(v > 0 for v in results.values())
    assert "| generate, descriptions already encoded |" in capsys.readouterr().out
    descriptions = bench_generation.synthetic_descriptions(12)
    assert len(descriptions) == 12 and all(len(v) == 2 for v in descriptions.values())

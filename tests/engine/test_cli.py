"""`python -m engine` as a user types it: JSON on success (a table for a list, JSON behind --json), exit 2 and one line
on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.cli import main
from engine.metadata import read_png
from tests.conftest import REPO, line_sketch, make_data_dir, png


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_models) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("cli-data"), tiny_models, warm=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    good = png(line_sketch())
    paths = {
        "sketch": d / "sketch.png",
        "empty": d / "empty.png",
        "text": d / "notes.png",
        "truncated": d / "truncated.png",
        "huge": d / "huge.png",
        "afile": d / "afile",
    }
    paths["sketch"].write_bytes(good)
    paths["empty"].write_bytes(b"")
    paths["text"].write_text("meeting notes, definitely not a picture\n")
    paths["truncated"].write_bytes(good[: len(good) // 2])
    Image.new("1", (20000, 20000)).save(paths["huge"])
    paths["afile"].write_text("x")
    return paths


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def gen_args(data_dir, sketch, *extra):
    return ["generate", "--profile", "tiny", "--data-dir", str(data_dir), "--sketch", str(sketch), "--size", "64",
            "--steps", "2", *extra]  # fmt: skip


def test_generate_prints_one_json_line_and_writes_the_png(capsys, data_dir, files, tmp_path):
    out_path = tmp_path / "render.png"
    code, out, err = run_cli(capsys, *gen_args(data_dir, files["sketch"], "--prompt", "a red barn", "--seed", "42",
                                               "--out", str(out_path)))  # fmt: skip
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["output"] == str(out_path) and out_path.is_file()
    assert report["seed"] == 42 and report["size"] == [96, 64]
    assert report["styles"] and report["styles"][0]["used"] is True
    assert report["seconds"] > 0
    with Image.open(out_path) as im:
        assert im.size == (96, 64) and "Seed: 42" in im.text["parameters"]
    # the CLI waits for the numbers: the PNG it writes carries them, as the history row does
    written = read_png(out_path)
    assert written["measured"] is True and written["metrics"]["clip_score"] is not None
    assert written["metrics"]["edge_f1"] is not None and "metrics" in report["timings"]


def test_generate_without_out_names_the_file_the_local_engine_kept(capsys, data_dir, files):
    """The result names its files relative to the data folder (no engine path in the interface); the CLI, whose
    engine is in this process, prints where they are on this machine, as before."""
    code, out, err = run_cli(capsys, *gen_args(data_dir, files["sketch"], "--prompt", "a red barn", "--seed", "7"))
    assert code == 0, err
    report = json.loads(out)
    kept = Path(report["output"])
    assert kept.is_file() and kept.is_relative_to(data_dir / "outputs") and report["outputs"] == [str(kept)]
    assert read_png(kept)["seed"] == 7


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        ("empty", [], "is empty (0 bytes)"),
        ("text", [], "is not an image"),
        ("truncated", [], "is truncated or corrupt"),
        ("huge", [], "has 400 megapixels; the limit is 64 megapixels"),
        ("sketch", ["--steps", "0"], "steps: must be between 1 and 150 (got 0)"),
        ("sketch", ["--steps", "10000"], "steps: must be between 1 and 150 (got 10000)"),
        ("sketch", ["--style", "Velvet Elvis"], "unknown style 'Velvet Elvis'"),
        ("sketch", ["--out", "/no/such/folder/out.png"], "folder /no/such/folder does not exist"),
        ("sketch", ["--out", "AFILE/out.png"], "does not exist"),
        ("sketch", ["--out", "result.jpg"], "--out must be a .png path"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, data_dir, files, case, extra, message):
    extra = [e.replace("AFILE", str(files["afile"])) for e in extra]
    code, out, err = run_cli(capsys, *gen_args(data_dir, files[case], "--prompt", "a chair", *extra))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err


def test_empty_prompt_exits_2(capsys, data_dir, files):
    code, _, err = run_cli(capsys, *gen_args(data_dir, files["sketch"], "--prompt", "  "))
    assert code == 2 and err == "error: prompt: the prompt is empty; describe what you want to see\n"


def test_missing_sketch_file_and_bad_option_exit_2(capsys, data_dir, tmp_path):
    code, _, err = run_cli(capsys, *gen_args(data_dir, tmp_path / "nope.png", "--prompt", "x"))
    assert code == 2 and "no such file" in err
    code, _, err = run_cli(capsys, "generate", "--prompt", "x", "--steps", "many")
    assert code == 2 and err.count("\n") == 1 and "invalid int value" in err


def columns(line: str, header: str) -> list[str]:
    """A table row cut where the header's columns start."""
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    return [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]


def test_styles_commands(capsys, data_dir, tmp_path):
    base = ["--profile", "tiny", "--data-dir", str(data_dir)]
    swatch = tmp_path / "swatch.png"
    Image.new("RGB", (64, 64), (240, 200, 10)).save(swatch)
    code, out, _ = run_cli(capsys, "styles", "add", str(swatch), "--name", "Mustard", "--tags", "yellow,warm", *base)
    assert code == 0 and json.loads(out)["name"] == "Mustard"
    code, out, _ = run_cli(capsys, "styles", "list", "--json", *base)
    listed = json.loads(out)
    assert "Mustard" in [s["name"] for s in listed]

    # a person gets a table: a header, then one aligned row per style
    code, out, _ = run_cli(capsys, "styles", "list", *base)
    header, *rows = out.rstrip("\n").split("\n")
    assert code == 0 and header.split() == ["NAME", "SOURCE", "TAGS", "ID"]
    assert len(rows) == len(listed)
    by_name = {columns(r, header)[0]: columns(r, header) for r in rows}
    assert by_name["Mustard"] == ["Mustard", "user", "yellow, warm", next(s["id"] for s in listed
                                                                         if s["name"] == "Mustard")]  # fmt: skip
    assert all(columns(r, header)[3] for r in rows)  # every id sits in the ID column

    code, out, _ = run_cli(capsys, "styles", "search", "--image", str(swatch), "-k", "2", "--json", *base)
    hits = json.loads(out)
    assert hits[0]["name"] == "Mustard" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    code, out, _ = run_cli(capsys, "styles", "search", "warm yellow", *base)
    header, *rows = out.rstrip("\n").split("\n")
    assert code == 0 and header.split() == ["#", "NAME", "SCORE", "SOURCE", "ID"] and len(rows) == 3
    assert [columns(r, header)[0] for r in rows] == ["1", "2", "3"]
    code, out, _ = run_cli(capsys, "styles", "remove", "Mustard", *base)
    assert code == 0
    code, _, err = run_cli(capsys, "styles", "remove", "Mustard", *base)
    assert code == 2 and "unknown style 'Mustard'" in err


def test_catalog_preview_is_a_table_of_the_first_rows(capsys, tmp_path):
    sheet = tmp_path / "products.csv"
    sheet.write_text("sku,Beschreibung\nA-1,Ein roter Stuhl aus Eiche\nB-22,Ein blaues Sofa\n", encoding="utf-8")
    code, out, _ = run_cli(capsys, "catalog", "preview", str(sheet))
    lines = out.rstrip("\n").split("\n")
    header = next(line for line in lines if line.startswith("ROW"))
    rows = lines[lines.index(header) + 1 :]
    assert code == 0 and header.split() == ["ROW", "ID", "TEXT"]
    assert [columns(r, header)[1:3] for r in rows] == [
        ["A-1", "Ein roter Stuhl aus Eiche"],
        ["B-22", "Ein blaues Sofa"],
    ]
    code, out, _ = run_cli(capsys, "catalog", "preview", str(sheet), "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)["preview"]] == ["A-1", "B-22"]


@pytest.mark.parametrize(
    ("command", "absent"),
    [
        (["serve"], ["--remote"]),  # serve runs the engine in this process
        (["prepare-tiny"], ["--remote", "--token", "--device", "--dtype"]),  # it only writes files
        (["catalog", "preview", "x.csv"], ["--remote", "--profile", "--device"]),  # it only reads the sheet
        (["tune", "train", "d"], ["--out"]),  # datasets and adapters are named on the engine, not folders here
        (["tune", "prepare"], ["--out"]),
    ],
)
def test_each_command_offers_only_the_options_it_uses(capsys, command, absent):
    code, out, _ = run_cli(capsys, *command, "--help")
    assert code == 0
    assert not [a for a in absent if a in out], out
    code, _, err = run_cli(capsys, *command, absent[0], "x")
    assert code == 2 and err.count("\n") == 1 and "unrecognized arguments" in err


def test_remote_and_local_options_do_not_mix(capsys, tmp_path):
    code, _, err = run_cli(capsys, "styles", "list", "--remote", "http://127.0.0.1:9", "--profile", "tiny")
    assert code == 2 and err.count("\n") == 1 and "--profile sets up an engine in this process" in err
    code, _, err = run_cli(capsys, "styles", "list", "--token", "secret", "--data-dir", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "--token goes with --remote" in err
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sku,text\n1,a chair\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "catalog", "run", str(sheet), "--remote", "http://127.0.0.1:9", "--executor", "ray")
    assert code == 2 and err.count("\n") == 1 and "--executor sets up an engine in this process" in err


def test_real_process_bad_input_has_no_traceback(data_dir, files):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "engine", *gen_args(data_dir, files["truncated"], "--prompt", "a chair")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

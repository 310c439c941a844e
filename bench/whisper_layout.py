"""A CTranslate2 Whisper model's layout (names, shapes, dtypes) and a same-shaped model with random weights.

The GPU benchmark measures Whisper tiny.en's compute on a machine that cannot receive the 75 MB model (the
device's carry limit): `layout` reads model.bin's header here (no weights), `write_random` rebuilds a model of
exactly the same architecture and dtypes there. Compute per decoded token is the same as the real model's;
only the words differ, so the benchmark decodes a fixed number of tokens per window.

    python -m bench.whisper_layout layout MODEL_DIR OUT.json     # here
    python -m bench.whisper_layout random OUT.json MODEL_DIR      # on the GPU machine
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # CTranslate2's DataType order
FLOATS = ("float32", "float16", "bfloat16")
SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json")


def _read(handle: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))[0]


def _read_string(handle: BinaryIO) -> str:
    length = _read(handle, "H")
    return handle.read(length)[:-1].decode("utf-8")


def _write_string(handle: BinaryIO, text: str) -> None:
    handle.write(struct.pack("H", len(text) + 1) + text.encode("utf-8") + b"\0")


def layout(model_dir: Path) -> dict[str, Any]:
    """Header of model_dir/model.bin (float weights skipped) plus the small side files' contents."""
    variables: list[dict[str, Any]] = []
    with open(model_dir / "model.bin", "rb") as handle:
        version = _read(handle, "I")
        name = _read_string(handle)
        revision = _read(handle, "I")
        for _ in range(_read(handle, "I")):
            var_name = _read_string(handle)
            shape = [_read(handle, "I") for _ in range(_read(handle, "B"))]
            dtype = DTYPES[_read(handle, "B")]
            size = _read(handle, "I")
            variable = {"name": var_name, "shape": shape, "dtype": dtype}
            if dtype not in FLOATS:  # integer variables are settings (heads, flags, alignment): kept as is
                variable["data_hex"] = handle.read(size).hex()
            else:
                handle.seek(size, 1)
            variables.append(variable)
        aliases = [[_read_string(handle), _read_string(handle)] for _ in range(_read(handle, "I"))]
    files = {f: (model_dir / f).read_text(encoding="utf-8") for f in SMALL_FILES if (model_dir / f).is_file()}
    return {"version": version, "name": name, "revision": revision, "variables": variables,
            "aliases": aliases, "files": files}


def _random(shape: list[int], dtype: str, name: str, rng: np.random.Generator) -> bytes:
    if name.endswith("gamma"):  # layer norm scales: ones keep activations in range
        values = np.ones(shape, dtype=np.float32)
    else:
        values = rng.normal(0.0, 0.02, size=shape).astype(np.float32)
    if dtype == "bfloat16":
        return (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return values.astype(dtype).tobytes()


def write_random(spec: dict[str, Any], out_dir: Path, seed: int = 0) -> Path:
    """model.bin with spec's layout and random weights, plus the side files; returns out_dir."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "model.bin", "wb") as handle:
        handle.write(struct.pack("I", spec["version"]))
        _write_string(handle, spec["name"])
        handle.write(struct.pack("I", spec["revision"]))
        handle.write(struct.pack("I", len(spec["variables"])))
        for var in spec["variables"]:
            _write_string(handle, var["name"])
            handle.write(struct.pack("B", len(var["shape"])))
            for dim in var["shape"]:
                handle.write(struct.pack("I", dim))
            handle.write(struct.pack("B", DTYPES.index(var["dtype"])))
            data = (bytes.fromhex(var["data_hex"]) if "data_hex" in var
                    else _random(var["shape"], var["dtype"], var["name"], rng))
            handle.write(struct.pack("I", len(data)))
            handle.write(data)
        handle.write(struct.pack("I", len(spec["aliases"])))
        for alias, target in spec["aliases"]:
            _write_string(handle, alias)
            _write_string(handle, target)
    for name, text in spec["files"].items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return out_dir


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "layout":
        Path(argv[2]).write_text(json.dumps(layout(Path(argv[1]))), encoding="utf-8")
        return 0
    if len(argv) == 3 and argv[0] == "random":
        target = Path(argv[2])
        if target.exists():
            shutil.rmtree(target)
        write_random(json.loads(Path(argv[1]).read_text(encoding="utf-8")), target)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

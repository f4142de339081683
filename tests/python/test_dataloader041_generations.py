"""Generation mix-ups: an object of one API generation handed to the other's constructors.

``rrloader.dataloader`` (the seed) and ``rrloader.experimental.dataloader`` (rerun-sdk 0.41's)
spell the same things with different meanings (``Field.window=(a, b)`` is an inclusive range in
one and two offsets in the other; decoders have different contracts), so every constructor
that takes a ``Field``, a decoder or a ``DataSource`` refuses the other generation's with a
``TypeError`` that names the module to use. Each constructor is also built once with the right
objects, so the ``TypeError`` cannot come from something else.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dlutil  # noqa: E402
import rrloader  # noqa: E402
import rrloader.dataloader as seed  # noqa: E402
import rrloader.experimental.dataloader as new  # noqa: E402

SEED_MODULE = "rrloader.dataloader"
NEW_MODULE = "rrloader.experimental.dataloader"
STATE = dlutil.NUM_COLUMNS["state"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("generations")
    dlutil.write_numeric_dataset(out)
    return str(out)


def _sources(folder: str) -> dict[str, object]:
    local = rrloader.LocalDataset(folder)
    return {"seed": seed.DataSource(local), "new": new.DataSource(local)}


def _fields(generation: str) -> dict[str, object]:
    m = seed if generation == "seed" else new
    return {"state": m.Field(STATE, decode=m.NumericDecoder())}


def _manifest(folder: str):
    return new.Manifest.generate(_sources(folder)["new"], "frame", _fields("new"))


# Every constructor of the 0.41 front end that takes a source and fields: (name, build(source, fields)).
NEW_CONSTRUCTORS = {
    "RerunIterableDataset": lambda folder, src, fields: new.RerunIterableDataset(src, "frame", fields),
    "RerunMapDataset": lambda folder, src, fields: new.RerunMapDataset(src, "frame", fields),
    "RerunIterableDataset.from_manifest": lambda folder, src, fields: new.RerunIterableDataset.from_manifest(
        _manifest(folder), src, fields
    ),
    "RerunMapDataset.from_manifest": lambda folder, src, fields: new.RerunMapDataset.from_manifest(
        _manifest(folder), src, fields
    ),
    "Manifest.generate": lambda folder, src, fields: new.Manifest.generate(src, "frame", fields),
}
SEED_CONSTRUCTORS = {
    "RerunIterableDataset": lambda folder, src, fields: seed.RerunIterableDataset(src, "frame", fields),
    "RerunMapDataset": lambda folder, src, fields: seed.RerunMapDataset(src, "frame", fields),
}


def _assert_names_modules(err: pytest.ExceptionInfo, wrong: str, right: str) -> None:
    message = str(err.value)
    assert f"from {wrong}" in message, message
    assert f"use {right}." in message, message


@pytest.mark.parametrize("name", list(NEW_CONSTRUCTORS))
def test_041_constructors_refuse_seed_objects(folder, name):
    build = NEW_CONSTRUCTORS[name]
    sources = _sources(folder)
    built = build(folder, sources["new"], _fields("new"))  # the right objects work
    assert built is not None
    with pytest.raises(TypeError) as err:
        build(folder, sources["new"], _fields("seed"))
    _assert_names_modules(err, SEED_MODULE, NEW_MODULE)
    assert "'state'" in str(err.value)
    with pytest.raises(TypeError) as err:
        build(folder, sources["seed"], _fields("new"))
    _assert_names_modules(err, SEED_MODULE, NEW_MODULE)
    assert "DataSource" in str(err.value)


@pytest.mark.parametrize("name", list(SEED_CONSTRUCTORS))
def test_seed_constructors_refuse_041_objects(folder, name):
    build = SEED_CONSTRUCTORS[name]
    sources = _sources(folder)
    assert len(build(folder, sources["seed"], _fields("seed"))) > 0
    with pytest.raises(TypeError) as err:
        build(folder, sources["seed"], _fields("new"))
    _assert_names_modules(err, NEW_MODULE, SEED_MODULE)
    assert "'state'" in str(err.value)
    with pytest.raises(TypeError) as err:
        build(folder, sources["new"], _fields("seed"))
    _assert_names_modules(err, NEW_MODULE, SEED_MODULE)
    assert "DataSource" in str(err.value)


@pytest.mark.parametrize("decoder", ["NumericDecoder", "ImageDecoder", "VideoFrameDecoder"])
def test_fields_refuse_the_other_generations_decoders(decoder):
    path = "/x:Any:thing"
    assert seed.Field(path, decode=getattr(seed, decoder)()).decode is not None
    assert new.Field(path, decode=getattr(new, decoder)()).decode is not None
    with pytest.raises(TypeError) as err:
        new.Field(path, decode=getattr(seed, decoder)())
    _assert_names_modules(err, SEED_MODULE, NEW_MODULE)
    with pytest.raises(TypeError) as err:
        seed.Field(path, decode=getattr(new, decoder)())
    _assert_names_modules(err, NEW_MODULE, SEED_MODULE)


def test_a_custom_decoder_of_the_other_generation_is_refused():
    class SeedRaw(seed.ColumnDecoder):
        def decode(self, raw, index_value, segment_id):
            return raw

    class NewRaw(new.ColumnDecoder):
        def decode(self, batch, requests):
            return [None] * len(requests)

    with pytest.raises(TypeError) as err:
        new.Field("/x:A:b", decode=SeedRaw())
    _assert_names_modules(err, SEED_MODULE, NEW_MODULE)
    with pytest.raises(TypeError) as err:
        seed.Field("/x:A:b", decode=NewRaw())
    _assert_names_modules(err, NEW_MODULE, SEED_MODULE)


def test_rerun_sdks_own_field_is_refused_with_rrloaders_module(folder):
    """A Field from rerun-sdk itself (one import left unchanged) is not read as rrloader's."""
    import rerun041

    ref = rerun041.ref
    fields = {"state": ref.Field(STATE, decode=ref.NumericDecoder())}
    src = _sources(folder)["new"]
    for build in (new.RerunIterableDataset, new.RerunMapDataset):
        with pytest.raises(TypeError, match=f"must be an {NEW_MODULE}.Field"):
            build(src, "frame", fields)

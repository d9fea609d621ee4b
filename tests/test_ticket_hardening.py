"""A ticket is untrusted input: every bad header, size or path is one TicketError line (exit 2 in the CLI),
refused before anything is allocated (lth.ticket.schema, lth.ticket.container.read_file)."""

import copy
import dataclasses
import os
import tracemalloc

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ticket import LENET_ARCH, magnitude_masks, reforge, split

import lth.ticket as T
from lth import __version__
from lth.cli import main
from lth.presets import Config
from lth.ticket import Ticket, TicketError

CONFIG = Config(name="t").to_dict()
META = {"config": CONFIG, "dataset": "mnist", "lth_version": __version__, "results": {"test_acc": 0.9}}
GOOD = T.encode(Ticket(arch=LENET_ARCH, seed=3, init="glorot_normal", masks=magnitude_masks(0.05), meta=META))


def forged(edit) -> bytes:
    """GOOD with ``edit(header)`` applied and the checksum recomputed."""
    header, payloads = split(GOOD)
    header = copy.deepcopy(header)
    edit(header)
    return reforge(header, payloads)


def refused(data: bytes, match: str, **kw) -> str:
    with pytest.raises(TicketError, match=match) as e:
        T.decode(data, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def cli_refuses(tmp_path, capsys, data: bytes, match: str, command: str = "inspect", *flags) -> None:
    path = tmp_path / "t.ticket"
    path.write_bytes(data)
    args = {"inspect": ["inspect", str(path)], "eval": ["eval", str(path)],
            "generate": ["generate", str(path), "--prompt", "x"]}[command]
    assert main([*args, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and match in err, err


def _set(path: str, value):
    def edit(header):
        *parents, last = path.split(".")
        node = header
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


def _delete(path: str):
    def edit(header):
        *parents, last = path.split(".")
        node = header
        for p in parents:
            node = node[p]
        del node[last]
    return edit


def test_the_unedited_ticket_loads_and_rebuilds():
    t = T.decode(forged(lambda h: None))
    assert t.meta["config"] == CONFIG and T.build_model(t) is not None


def test_meta_config_that_is_a_string_is_refused(tmp_path, capsys):
    data = forged(_set("meta.config", "mnist"))
    refused(data, "meta.config must be a dict")
    cli_refuses(tmp_path, capsys, data, "meta.config must be a dict", "eval")


def test_meta_config_that_is_an_int_is_refused(tmp_path, capsys):
    data = forged(_set("meta.config", 7))
    refused(data, "meta.config must be a dict")
    cli_refuses(tmp_path, capsys, data, "meta.config must be a dict", "generate")


def test_unknown_config_field_names_the_field_and_both_versions(tmp_path, capsys):
    data = forged(lambda h: (h["meta"]["config"].update(foo=1), h["meta"].update(lth_version="9.0")))
    msg = refused(data, "config field 'foo'")
    assert "lth 9.0" in msg and f"({__version__})" in msg
    cli_refuses(tmp_path, capsys, data, "config field 'foo'", "eval")


def test_config_field_of_the_wrong_type_is_refused():
    refused(forged(_set("meta.config.batch_size", "60")), "meta.config.batch_size must be int")
    refused(forged(_set("meta.config.normalize", 1)), "meta.config.normalize must be bool")
    refused(forged(_set("meta.config.seed", True)), "meta.config.seed must be int")


def test_tokenizer_sha256_that_is_a_number_is_refused(tmp_path, capsys):
    data = forged(_set("meta.tokenizer_sha256", 12345))
    refused(data, "meta.tokenizer_sha256")
    cli_refuses(tmp_path, capsys, data, "meta.tokenizer_sha256", "eval")


@pytest.mark.parametrize("value", [3, ["a"], {"p": 1}, "", "a\0b"])
def test_data_dir_that_is_not_a_path_is_refused(value):
    refused(forged(_set("meta.config.data_dir", value)), "meta.config.data_dir")


def test_dataset_of_another_kind_than_the_architecture_is_refused(tmp_path, capsys):
    data = forged(_set("meta.config.dataset", "text"))
    refused(data, "meta.config.dataset 'text' feeds tokens, but the architecture lenet_300_100 takes image")
    cli_refuses(tmp_path, capsys, data, "meta.config.dataset", "eval")
    refused(forged(_set("meta.dataset", "imagenet")), "meta.dataset 'imagenet' is not a registered task")


def test_config_model_other_than_the_architecture_is_refused():
    refused(forged(_set("meta.config.model", "gpt_cpu")), "meta.config.model")


def test_arch_without_model_is_refused(tmp_path, capsys):
    data = forged(_delete("arch.model"))
    refused(data, "arch is missing 'model'")
    cli_refuses(tmp_path, capsys, data, "arch is missing 'model'", "eval")
    cli_refuses(tmp_path, capsys, data, "arch is missing 'model'", "generate")


def test_arch_with_an_unknown_field_is_refused():
    refused(forged(_set("arch.width", 3)), "arch has unknown field 'width'")


@pytest.mark.parametrize("edit,match", [
    (_set("arch.input_shape", [1, 28, -28]), "arch.input_shape"),
    (_set("arch.input_shape", "1x28x28"), "arch.input_shape"),
    (_set("arch.num_classes", 0), "arch.num_classes"),
    (_set("arch.num_classes", 10.0), "arch.num_classes"),
    (_set("arch.kwargs", [1]), "arch.kwargs"),
    (_set("arch.kwargs", {"hidden": "abc"}), "cannot build"),
])
def test_arch_field_of_the_wrong_type_or_range_is_refused(edit, match):
    refused(forged(edit), match)


@pytest.mark.parametrize("header_limit", [None, 64 << 20])
def test_400000_empty_mask_entries_are_refused_by_a_limit_before_decoding(monkeypatch, header_limit):
    """By default the inflated header's size refuses it before its JSON is parsed; past that limit, the
    entry count does (how fast: bench/fuzz_ticket.py, "huge counts")."""
    if header_limit:  # past the header's size limit too: the count limit refuses it
        monkeypatch.setattr(T, "MAX_HEADER_BYTES", header_limit)
    entries = [{"name": f"m{i}", "shape": [0], "coding": "none", "nbytes": 0, "count": 0} for i in range(400_000)]
    data = forged(_set("masks", entries))
    refused(data, "MAX_ENTRIES" if header_limit else "MAX_HEADER_BYTES")


def test_hidden_layers_of_60000_units_are_refused_by_max_params_before_allocation(tmp_path, capsys):
    data = forged(_set("arch.kwargs", {"hidden": [60000, 60000]}))
    tracemalloc.start()
    msg = refused(data, "--max-params")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "3,647," in msg and peak < 50 << 20  # refused from the meta-device build: nothing allocated
    cli_refuses(tmp_path, capsys, data, "--max-params", "inspect")
    # raised past it, the masks (LeNet-300-100's) no longer fit: still refused before anything is allocated
    cli_refuses(tmp_path, capsys, data, "mask 'fc1.weight' has shape", "inspect", "--max-params", "10000000000")


def test_max_params_flag_lowers_and_raises_the_limit(tmp_path, capsys):
    refused(GOOD, "266,610 parameters", max_params=100_000)
    cli_refuses(tmp_path, capsys, GOOD, "266,610 parameters", "inspect", "--max-params", "100000")
    assert T.decode(GOOD, max_params=266_610).masks


def test_a_mask_that_names_no_parameter_is_refused_before_it_is_decoded():
    refused(forged(lambda h: h["masks"][0].update(name="fc9.weight")), "mask 'fc9.weight' names no parameter")


def test_an_unknown_top_level_header_field_is_refused():
    refused(forged(_set("extra", 1)), "header has unknown field 'extra'")


def _with_masks(masks) -> bytes:
    return T.encode(Ticket(arch=LENET_ARCH, seed=3, init="glorot_normal", masks=masks, meta=META))


def test_a_ticket_missing_a_mask_its_config_prunes_is_refused():
    masks = magnitude_masks(0.05)
    del masks["fc2.weight"]
    refused(_with_masks(masks), "no mask for 'fc2.weight', which meta.config prunes")


def test_a_mask_on_a_tensor_its_config_does_not_prune_is_refused():
    masks = {**magnitude_masks(0.05), "fc1.bias": torch.ones(300, dtype=torch.bool)}
    refused(_with_masks(masks), "a mask for 'fc1.bias', which meta.config does not prune")


def test_a_directory_as_the_ticket_path_is_refused(tmp_path, capsys):
    with pytest.raises(TicketError, match="a directory, not a ticket file"):
        T.load(tmp_path)
    assert main(["eval", str(tmp_path)]) == 2 and main(["inspect", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 2


def test_a_named_pipe_as_the_ticket_path_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(TicketError, match="a named pipe, not a ticket file"):
        T.load(fifo)
    assert main(["inspect", str(fifo)]) == 2 and "named pipe" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_as_the_ticket_path_is_refused_without_reading(capsys):
    with pytest.raises(TicketError, match="a device, not a ticket file"):
        T.load("/dev/zero")
    assert main(["generate", "/dev/zero", "--prompt", "x"]) == 2 and "device" in capsys.readouterr().err


def test_a_file_over_the_size_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "MAX_FILE_BYTES", 100)
    path = tmp_path / "t.ticket"
    path.write_bytes(GOOD)
    with pytest.raises(TicketError, match="MAX_FILE_BYTES"):
        T.load(path)


def test_inspect_says_why_weights_sha256_is_missing(tmp_path, capsys):
    t = Ticket(arch=LENET_ARCH, seed=3, init="glorot_normal", masks=magnitude_masks(0.05), weights="source",
               meta={"weights_source": {"kind": "checkpoint", "path": str(tmp_path / "gone.safetensors"),
                                        "sha256": "0" * 64}})
    path = tmp_path / "t.ticket"
    T.save(t, path)
    assert main(["inspect", str(path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("weights sha256"))
    assert "None" not in line and "not computed: " in line and "weights source" in line


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False,
                    allow_infinity=False) | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
                    max_leaves=6)
FIELDS = ["arch.model", "arch.input_shape", "arch.num_classes", "arch.kwargs", "meta.config",
          "meta.tokenizer_sha256", "meta.dataset", "meta.results", "meta.lth_version"] + [
          f"meta.config.{f.name}" for f in dataclasses.fields(Config)][:20]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), JSON)
def test_any_json_value_in_any_header_field_gives_a_ticket_or_one_line_ticket_error(field, value):
    try:
        t = T.decode(forged(_set(field, value)))
    except TicketError as e:
        assert "\n" not in str(e)
        return
    T.build_model(t)  # what the reader accepts rebuilds
    assert isinstance(t.meta, dict) and isinstance(t.masks["fc1.weight"], torch.Tensor)

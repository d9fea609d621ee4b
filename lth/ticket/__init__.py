"""The ticket file: one binary format that ships any lottery ticket or supermask in about as few bytes
as information theory allows.

A ticket is ``(architecture, seed, init scheme, masks)``: the weights are regenerated bit-exactly from
the seed by :mod:`lth.init`, so only the masks cost real space, and they are entropy coded to within a
few bytes of ``sum_i n_i * H(k_i / n_i)`` bits (``n_i`` entries, ``k_i`` kept, in tensor ``i``). Learned
scales, or the surviving weights of a ticket rewound to step K > 0, ride along as raw floats.

Byte layout (format version 2; all integers little-endian)::

    offset   size  field
    0        4     magic b"LTHT"
    4        2     format version, uint16 (= 2)
    6        4     H = header length in bytes, uint32
    10       H     header: a UTF-8 JSON object (written with sorted keys and no whitespace), zlib-compressed
                   (RFC 1950, level 9): the per-tensor entries and the run's config repeat a lot, and a
                   language model's header shrinks from about 7 kB to 1.3 kB. Version 1, still read, stored
                   the JSON as is.
    10+H     M     mask payloads, one per header["masks"] entry in that order, each "nbytes" long
    10+H+M   S     sign payloads (``weights="constant"`` only), one per header["signs"] entry, likewise
    10+H+M+S F     float payloads, one per header["floats"] entry in that order, each "nbytes" long
    end-32   32    SHA-256 of every byte before it

The file length must be exactly ``10 + H + M + S + F + 32``. The header holds:

* ``arch``: ``{"model", "kwargs", "input_shape", "num_classes"}``, the arguments of
  :func:`lth.models.build`;
* ``seed`` (int in [0, 2**64)) and ``init`` (a scheme name from :data:`lth.init.SCHEMES`);
* ``weights``: ``"seed"`` (every weight regenerates from the seed), ``"stored"`` (float entries named
  like a parameter replace the regenerated values, see below) or ``"source"`` (every weight comes from
  the file ``meta["weights_source"]`` names: ``{"kind": "checkpoint", "path", "sha256"}``, a safetensors
  checkpoint verified by its SHA-256 before use, see :mod:`lth.sources`; readers that predate
  ``"source"`` refuse such a ticket rather than build other weights) or ``"constant"`` (Brix et al.'s
  constant tickets: every survivor of a masked matrix is ``±α_l``, ``α_l = sqrt(6 / (fan_in +
  fan_out))`` of its layer, its sign one bit of ``signs``; floats as in ``"stored"`` for the rest);
* ``masks``: a list of ``{"name", "shape", "coding", "nbytes", "count"}`` (``count`` = kept entries);
* ``signs`` (``weights="constant"`` only, and then required): mask-coded bool vectors, one per masked
  matrix, of its ``count`` survivors in row-major mask order, True = positive;
* ``floats``: a list of ``{"name", "shape", "dtype", "nbytes"}``, dtype one of float32 / float16 /
  bfloat16; the payload is the row-major values, little-endian, bfloat16 as its 2-byte pattern;
* ``meta``: a JSON object (task, metrics, source run, level, ...), free except for what lth reads
  from it (``config``, ``dataset``, ``tokenizer_sha256``, ``results``, ``lth_version``), whose schema
  :mod:`lth.ticket.schema` gives.

In a ``"stored"`` ticket a float entry named like a masked parameter (``fc1.weight``) holds only the
surviving values, in row-major mask order (``count`` values); one named like an unmasked parameter
(``fc1.bias``) holds the whole tensor; parameters without an entry keep their regenerated values.

In either kind of ticket, a float entry ``scale.<name>`` of a masked parameter (a supermask's learned
scales) is a 1-D tensor of ``g`` values, ``g`` dividing the parameter's first (output) dimension: the
masked tensor is split along that dimension into ``g`` equal groups and group ``i`` is multiplied by
value ``i``, so the network is ``W_eff = scale * W * mask`` (as :class:`lth.supermask.Supermask` computes
it). A float entry ``param.<name>`` of an unmasked parameter (a model's own learned scales, e.g. a
GPT's per-head ``head_scale``) replaces that whole tensor, in either kind. Every other float entry
(``scale.fc1``, or one named like a parameter in a ``"seed"`` ticket) is never applied to the model: it
is kept for the caller.

Each mask payload is one of six codings (``none``, ``all``, ``raw``, ``range``, ``range_rows``,
``range_cols``), specified bit for bit in :mod:`lth.ticket.coding`.

The package is three layers, each importing only the ones below it:

* :mod:`lth.ticket.coding`: one bool mask <-> ``(coding, payload)``, and the entropy bound;
* :mod:`lth.ticket.schema`: what the header's ``arch`` and ``meta`` may hold and ask for (checked by
  :func:`decode` before any payload is decoded: registered names, types, masks that fit the
  architecture, an architecture of at most ``MAX_PARAMS`` parameters);
* :mod:`lth.ticket.files`: a path -> its bytes (regular files only, with a size cap);
* :mod:`lth.ticket.container`: :class:`Ticket` <-> file bytes (:func:`encode`, :func:`decode`,
  :func:`save`, :func:`load`): the layout above, and what reading verifies and refuses;
* :mod:`lth.ticket.rebuild`: :class:`Ticket` -> network (:func:`build_model`, :func:`weights_sha256`),
  and :func:`inspect`.

Everything is importable from here, as it was from the single module this package replaced. The limits
``MAX_ELEMENTS``, ``MAX_HEADER_BYTES``, ``MAX_FILE_BYTES``, ``MAX_PARAMS`` and ``MAX_ENTRIES`` (and the decoder's ``_DECODE_CHUNK``) are read and set here,
``lth.ticket.MAX_ELEMENTS = ...``: the assignment reaches the layer that uses it.
"""

from __future__ import annotations

import sys
import types

from . import coding, container, files, rebuild, schema
from .coding import CODINGS, TicketError, decode_mask, encode_mask, entropy_bound_bits
from .container import (
    FLOAT_DTYPES, MAGIC, MIN_BYTES, READS, VERSION, WEIGHTS, Ticket, decode, encode, load, make_arch, read_file, save,
)
from .rebuild import build_model, inspect, surviving_floats, weights_sha256

__all__ = [
    "CODINGS", "FLOAT_DTYPES", "MAGIC", "MAX_ELEMENTS", "MAX_ENTRIES", "MAX_FILE_BYTES", "MAX_HEADER_BYTES",
    "MAX_PARAMS", "MIN_BYTES", "READS", "VERSION", "read_file",
    "WEIGHTS", "Ticket", "TicketError", "build_model", "decode", "decode_mask", "encode", "encode_mask",
    "entropy_bound_bits", "inspect", "load", "make_arch", "save", "surviving_floats", "weights_sha256",
]

# Settings a caller may change through the package (``lth.ticket.MAX_ELEMENTS = ...``): properties of
# the package's module type that read and write the value in the layer that uses it, so that the two
# never disagree (and monkeypatch.setattr on the package patches, and restores, the layer).
def _setting(layer: types.ModuleType, name: str) -> property:
    return property(lambda _: getattr(layer, name), lambda _, value: setattr(layer, name, value),
                    doc=f"``{layer.__name__}.{name}``, read and set through the package.")


class _Package(types.ModuleType):
    MAX_ELEMENTS = _setting(container, "MAX_ELEMENTS")
    MAX_HEADER_BYTES = _setting(container, "MAX_HEADER_BYTES")
    MAX_FILE_BYTES = _setting(files, "MAX_FILE_BYTES")
    MAX_PARAMS = _setting(schema, "MAX_PARAMS")
    MAX_ENTRIES = _setting(schema, "MAX_ENTRIES")
    _DECODE_CHUNK = _setting(coding, "_DECODE_CHUNK")


sys.modules[__name__].__class__ = _Package

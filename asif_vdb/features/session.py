"""A session: one open store and the two encoders that go with it.

A new store takes the given encoders and parameters (or the defaults) and is created on its first
write; an existing one restores its own from its config, refuses other encoders or parameters, and
carries forward whatever a crash left unfinished. Every feature works on a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from asif_vdb.encoders import Encoder, get_encoder
from asif_vdb.encoders.precision import requested as requested_precision
from asif_vdb.encoders.st_text import check_captions
from asif_vdb.engine.engine import Engine
from asif_vdb.engine.layout import STORE_COLLECTIONS
from asif_vdb.errors import AsifError, EncoderMismatchError, InputError, NotFoundError, StoreError
from asif_vdb.schema.encoders import EncoderIdentity, EncoderSpec
from asif_vdb.schema.params import DEFAULT_INDEX, AsifParams, IndexSettings, Tuning
from asif_vdb.schema.results import RecoveryReport
from asif_vdb.schema.store import Modality, StoreConfig
from asif_vdb.store.base import Backend


class Session:
    """An open store (``engine``, None until a new store's first write) and its encoders."""

    def __init__(self, backend: Backend, *, image_encoder: EncoderSpec | None = None,
                 text_encoder: EncoderSpec | None = None, params: AsifParams | None = None,
                 device: str | None = None, precision: str | None = None, tuning: Tuning | None = None,
                 identities: dict[Modality, EncoderIdentity] | None = None, index: IndexSettings | None = None,
                 exact_search: bool = False, for_repair: bool = False) -> None:
        self.backend = backend
        self.device = device
        #: Execution only, like the device (encoders/precision.py); None: $ASIF_PRECISION or auto.
        self.precision = requested_precision(precision) if precision is not None else None
        self.tuning = tuning or Tuning()
        self.engine: Engine | None = None
        #: What opening the store carried forward or rolled back.
        self.recovery = RecoveryReport()
        #: Why the store's config cannot be read although its collections exist (None: it can, or the
        #: store is new). Only ``for_repair`` opens such a store: ``asif doctor --repair`` restores the
        #: config's previous version; nothing writes a new store over the old collections.
        self.config_problem: str | None = None
        try:
            raw = backend.read_config()
        except StoreError as e:
            raw, self.config_problem = None, str(e)
        if raw is None and self.config_problem is None and any(backend.has_collection(n) for n in STORE_COLLECTIONS):
            self.config_problem = f"store {backend.location} holds collections but its config is missing"
        if self.config_problem is not None and not for_repair:
            raise StoreError(f"{self.config_problem}: `asif doctor --repair` restores the config's previous version "
                             "(kept beside it); nothing was changed")
        self._new_specs = (image_encoder or EncoderSpec.default_image(), text_encoder or EncoderSpec.default_text())
        self._new_params = params or AsifParams()
        self._new_index = index or DEFAULT_INDEX
        self.exact_search = exact_search
        #: Encoder identities declared for a new store instead of loading its encoders (embeddings made elsewhere).
        self._declared = dict(identities or {})
        if raw is None:
            return
        config = StoreConfig.load(raw, backend.location)
        sides: tuple[tuple[Modality, EncoderSpec | None], ...] = (("image", image_encoder), ("text", text_encoder))
        for modality, requested in sides:
            stored = config.spec(modality)
            if requested is not None and not requested.same_model(stored):
                raise EncoderMismatchError(
                    f"store {backend.location} was built with {modality} encoder "
                    f"{config.encoder(modality).describe()}; it cannot be opened with {modality} encoder "
                    f"{requested.describe()}. Relative vectors from another encoder are meaningless: open it "
                    "without an encoder option, or use a new store.")
        for modality, identity in self._declared.items():
            if identity != config.encoder(modality):
                raise EncoderMismatchError(
                    f"store {backend.location} was built with {modality} encoder {config.encoder(modality).describe()}, "
                    f"not {identity.describe()}")
        if index is not None and index != config.index:
            raise StoreError(f"store {backend.location} searches with other index settings: change them with "
                             "`asif index set` (AsifClient.set_search_index), not when opening")
        if params is not None and params != config.params:
            raise StoreError(f"store {backend.location} was built with k={config.params.k}, p={config.params.p} "
                             f"({config.params.describe()}); asked for k={params.k}, p={params.p} "
                             f"({params.describe()}). Open it without params, or build a new store.")
        self.engine, self.recovery = Engine.open(backend, config, self.tuning, exact_search)

    @property
    def index(self) -> IndexSettings:
        """A new store's index settings (an existing store's are in its config)."""
        return self._new_index

    def restore_config(self, raw: dict[str, Any]) -> None:
        """Write ``raw`` (the config's previous version) as the store's config and open the store with
        it, carrying forward what its journal holds."""
        config = StoreConfig.load(raw, self.backend.location)
        self.backend.write_config(config.dump())
        self.config_problem = None
        self.engine, self.recovery = Engine.open(self.backend, config, self.tuning, self.exact_search)

    @property
    def location(self) -> str:
        return self.backend.location

    @property
    def params(self) -> AsifParams:
        return self.engine.config.params if self.engine is not None else self._new_params

    def spec(self, modality: Modality) -> EncoderSpec:
        """The store's encoder spec (a new store's requested one), with this session's device and precision."""
        spec = self.engine.config.spec(modality) if self.engine is not None else \
            self._new_specs[0 if modality == "image" else 1]
        update = {"device": self.device, "precision": self.precision}
        return spec.model_copy(update={k: v for k, v in update.items() if v is not None})

    def require(self) -> Engine:
        """The engine of a store that exists (NotFoundError for a new, empty one)."""
        if self.engine is None:
            raise NotFoundError(f"store {self.location} is empty: add anchors first")
        return self.engine

    def writable(self) -> Engine:
        """The engine, creating a new store (its collections and config) on its first write."""
        if self.engine is None:
            if self.config_problem is not None:  # never a new config over an existing store's collections
                raise StoreError(f"{self.config_problem}: refusing to create a new store over it; "
                                 "`asif doctor --repair` restores the config's previous version")
            image = self._declared.get("image") or self.encoder("image").identity
            text = self._declared.get("text") or self.encoder("text").identity
            config = StoreConfig(image_encoder=image, text_encoder=text, image_spec=self._new_specs[0],
                                 text_spec=self._new_specs[1], params=self._new_params, index=self._new_index)
            self.engine = Engine.create(self.backend, config, self.tuning, self.exact_search)
        return self.engine

    # -- encoders ------------------------------------------------------------------------------------
    def encoder(self, modality: Modality) -> Encoder:
        """The store's encoder of ``modality`` (loaded once per process), checked against the store."""
        enc = get_encoder(self.spec(modality))
        if self.engine is not None:
            stored = self.engine.config.encoder(modality)
            if enc.identity != stored and not declared_match(stored, enc.identity):
                raise EncoderMismatchError(
                    f"store {self.location} was built with {modality} encoder {stored.describe()}, but the "
                    f"encoder loaded now is {enc.identity.describe()} (weights or preprocessing changed)")
        return enc

    def prepare_for_embeddings(self, dims: dict[Modality, int]) -> Engine:
        """The engine of a store that takes embeddings of these dimensions, made elsewhere by its
        encoders: an existing store must have them; a new one records each encoder's identity when it
        can be loaded here (checking its dimension), else a declared identity of that dimension."""
        if self.engine is None:
            for modality, dim in dims.items():
                if modality in self._declared:
                    continue
                spec = self.spec(modality)
                try:
                    identity = get_encoder(spec).identity
                except AsifError:  # not available here (offline, another machine's model): declared
                    identity = EncoderIdentity(family=spec.family, name=spec.name,
                                               weights=f"{DECLARED}{spec.weights or 'default'}", dim=dim)
                self._declared[modality] = identity
        engine = self.writable()
        for modality, dim in dims.items():
            if engine.state.dims[modality] != dim:
                raise InputError(f"{modality} embeddings of dimension {dim}, but the store's {modality} encoder "
                                 f"{engine.config.encoder(modality).describe()} makes {engine.state.dims[modality]}")
        return engine

    def encode_images(self, images: Sequence[Any], *, progress: bool = False) -> np.ndarray:
        return self.encoder("image").encode(list(images), progress=progress)

    def encode_images_skipping(self, images: Sequence[Any], *, progress: bool = False,
                               batch: int = 256) -> tuple[np.ndarray, list[int], dict[int, str]]:
        """Encode what can be decoded: (vectors of the good images, their positions, position -> why
        each other one failed). A batch that fails is encoded again image by image."""
        return self.encoder("image").encode_skipping(images, progress=progress, batch=batch)

    def encode_texts(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return self.encoder("text").encode(check_captions(list(texts)), progress=progress)

    def close(self) -> None:
        self.backend.close()


#: Weights tag of an encoder identity declared for embeddings made elsewhere (its model was not loaded).
DECLARED = "declared:"


def declared_match(stored: EncoderIdentity, loaded: EncoderIdentity) -> bool:
    """A declared identity accepts the encoder it names once that encoder can be loaded (same family,
    name and dimension): the store took its embeddings before the model was available here."""
    return stored.weights.startswith(DECLARED) and (stored.family, stored.name, stored.dim) == (
        loaded.family, loaded.name, loaded.dim)

"""The application: one store and the domain components wired over it.

The gRPC servicers and the CLI both call these methods, so there is one
implementation of every use case. Input is validated and normalised here,
before any write transaction starts: a rejected request writes nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple

from identity.api_keys import ApiKeys
from identity.audit import Audit
from identity.config import Settings
from identity.errors import InvalidArgument
from identity.graph import LATEST_MS, IdentityGraph, LinkResult, PersonView
from identity.identifiers import Identifier
from identity.metrics import Metrics
from identity.normalize import Normalizer
from identity.segmentation import Segmentation
from identity.store import Store, WriteTxn
from identity.tracking import Tracking
from identity.triggers import Triggers

__all__ = ["App", "LinkInput", "MAX_SOURCE_LENGTH", "MAX_IDENTIFIERS_PER_LINK"]

MAX_SOURCE_LENGTH = 128
MAX_REQUEST_ID_LENGTH = 128
MAX_IDENTIFIERS_PER_LINK = 64
MAX_BATCHES_IN_FLIGHT = 8  # stream batches validated ahead of the writer


class LinkInput(NamedTuple):
    """A link as a client sent it: raw ``(kind, value)`` pairs, not yet normalised.

    A named tuple, not a frozen dataclass: a stream builds one per link, and a tuple
    is built several times faster.
    """

    identifiers: list[tuple[int, str]]
    source: str = ""
    observed_ms: int | None = None
    request_id: str = ""


# A validated link, as IdentityGraph.link_many takes it: (identifiers, source, observed ms,
# request id).
_ValidLink = tuple[list[Identifier], str, "int | None", str]


@dataclass
class App:
    settings: Settings
    store: Store
    normalizer: Normalizer = field(init=False)
    graph: IdentityGraph = field(init=False)
    audit: Audit = field(init=False)
    tracking: Tracking = field(init=False)
    triggers: Triggers = field(init=False)
    segments: Segmentation = field(init=False)
    metrics: Metrics = field(init=False)
    keys: ApiKeys = field(init=False)

    def __post_init__(self) -> None:
        self.keys = ApiKeys(self.store, self.settings.api_keys)  # who may call what
        self.normalizer = Normalizer(self.settings.normalize_settings())
        self.graph = IdentityGraph(self.settings.merge_rules())
        self.audit = Audit(self.store, self.graph)  # explain, split, block, forget
        self.tracking = Tracking(self.store, self.graph, self.identifier,  # events, profiles
                                 self.settings.max_batch_items)
        self.audit.erase_events = self.tracking.events.erase  # forget erases events too
        self.triggers = Triggers(self.store, self.graph, self.tracking, self.identifier,
                                 self.settings.triggers)  # suppression, caps, audiences
        self.segments = Segmentation(self.store, self.graph, self.tracking.columns,
                                     self.tracking.strings, self.settings.time_zone)
        self.triggers.use_segments(self.segments)  # exclusion and audience segments
        self.metrics = Metrics(self.store)  # Prometheus counters and store gauges

    @classmethod
    def open(cls, settings: Settings) -> App:
        store = Store(settings.data_dir, map_size=settings.map_size,
                      max_map_size=settings.max_map_size, sync=settings.sync)
        return cls(settings, store)

    def close(self) -> None:
        self.store.close()

    # -- identifiers -------------------------------------------------------

    def identifier(self, kind: int, value: str, field_path: str = "identifier") -> Identifier:
        """Normalise one identifier, naming ``field_path`` in the error."""
        try:
            return self.normalizer.normalize(kind, value)
        except InvalidArgument as exc:
            raise exc.under(field_path) from None

    # -- linking -----------------------------------------------------------

    def link(self, link: LinkInput) -> LinkResult:
        valid = self._validate(link, "")
        return self.store.write(lambda tx: self._apply(tx, valid))

    def link_batch(self, links: list[LinkInput], field_path: str = "links") -> list[LinkResult]:
        """Validate every link, then apply all of them in one transaction."""
        valid = self._validate_batch(links, field_path)
        return self.store.write(lambda tx: self._apply_many(tx, valid))

    def _validate_batch(self, links: list[LinkInput], field_path: str) -> list[_ValidLink]:
        if len(links) > self.settings.max_batch_items:
            raise InvalidArgument.field(
                field_path, f"at most {self.settings.max_batch_items} links per batch")
        validate = self._validate
        valid = []
        try:
            for link in links:
                valid.append(validate(link, ""))
        except InvalidArgument as exc:  # the path is built only for the bad link
            raise exc.under(f"{field_path}[{len(valid)}]") from None
        return valid

    def link_batches(self, batches: Iterable[list[LinkInput]], field_path: str = "links"
                     ) -> Iterator[list[LinkResult]]:
        """Apply batches in order, each in one transaction; yield each one's results once durable.

        The next batch is validated while earlier ones wait to commit, and batches queued
        together share a synced commit (each still all or nothing). A bad batch is raised
        only after every earlier batch has committed; after any failure nothing later is written.
        """
        chain = self.store.chain()
        pending: deque[Future] = deque()
        for links in batches:
            try:
                valid = self._validate_batch(links, field_path)
            except InvalidArgument:
                while pending:
                    yield pending.popleft().result()
                raise
            pending.append(chain.submit(lambda tx, valid=valid: self._apply_many(tx, valid)))
            while pending and (pending[0].done() or len(pending) > MAX_BATCHES_IN_FLIGHT):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def _apply(self, tx: WriteTxn, link: _ValidLink) -> LinkResult:
        identifiers, source, observed_ms, request_id = link
        return self.graph.link(tx, identifiers, source=source, observed_ms=observed_ms,
                               request_id=request_id)

    def _apply_many(self, tx: WriteTxn, links: list[_ValidLink]) -> list[LinkResult]:
        return self.graph.link_many(tx, links)

    def _validate(self, link: LinkInput, prefix: str) -> _ValidLink:
        if not link.identifiers:
            raise InvalidArgument.field(f"{prefix}identifiers", "at least one identifier is needed")
        if len(link.identifiers) > MAX_IDENTIFIERS_PER_LINK:
            raise InvalidArgument.field(
                f"{prefix}identifiers", f"at most {MAX_IDENTIFIERS_PER_LINK} identifiers per link")
        if len(link.source) > MAX_SOURCE_LENGTH:
            raise InvalidArgument.field(f"{prefix}source",
                                        f"longer than {MAX_SOURCE_LENGTH} characters")
        if len(link.request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument.field(f"{prefix}request_id",
                                        f"longer than {MAX_REQUEST_ID_LENGTH} characters")
        if link.observed_ms is not None and not 0 <= link.observed_ms <= LATEST_MS:
            raise InvalidArgument.field(f"{prefix}observed_at", "must be between 1970 and 9999")
        normalize = self.normalizer.normalize
        identifiers: list[Identifier] = []
        try:
            for kind, value in link.identifiers:
                identifiers.append(normalize(kind, value))
        except InvalidArgument as exc:  # as ``identifier`` would name it
            raise exc.under(f"{prefix}identifiers[{len(identifiers)}]") from None
        return identifiers, link.source.strip(), link.observed_ms, link.request_id

    # -- resolving ---------------------------------------------------------

    def resolve(self, identifier: Identifier) -> PersonView:
        with self.store.read() as tx:
            return self.graph.resolve(tx, identifier)

    def resolve_person_id(self, person_id: str) -> PersonView:
        if not person_id.strip():
            raise InvalidArgument.field("person_id", "is empty")
        with self.store.read() as tx:
            return self.graph.resolve_person_id(tx, person_id.strip())

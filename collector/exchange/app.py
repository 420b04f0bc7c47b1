"""The exchange's HTTP app: one Starlette route table over a shared ``Exchange`` (the index and
what the subscriber says about the broker). Every handler reads the index on the event loop,
where the subscriber's messages are applied too, so no locks are needed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from collector.aas import api as aas_api
from collector.aas.builder import Key, Links
from collector.exchange.index import WHYS, Index
from collector.exchange.models import Health, Plant, openapi
from collector.exchange.query import (
    OFFERS_PARAMS,
    SEARCH_PARAMS,
    QueryError,
    free_now,
    iso,
    offers,
    parse_query,
    search,
    show,
    stale,
)

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Exchange:
    index: Index
    stale_after_s: float = 600.0
    clock: Callable[[], int] = time.time_ns
    subscribed: bool = False  # set by the subscriber: connected and the subscription acknowledged
    history_url: str | None = None  # linked in each shell's Time Series Data submodel


def catalog(exchange: Exchange) -> aas_api.Catalog:
    """Every offer as the AAS routes serve it: as shown (offline plants, stale evidence heeded)."""

    def keys() -> list[Key]:
        return sorted(exchange.index.offers)

    def records(keys: Sequence[Key]) -> list[dict[str, Any]]:
        index, now = exchange.index, exchange.clock()
        return [show(index, k, index.offers[k], now, exchange.stale_after_s).record
                for k in keys if k in index.offers]

    def links(base: str, key: Key) -> Links:
        return Links(f"{base}/api/v1/offers/{quote(key[0], safe='')}/{quote(key[1], safe='')}", exchange.history_url)

    return aas_api.Catalog(keys, records, links)


class ExchangeCollector(Collector):
    """The figures, read from the index at scrape time."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def collect(self) -> Iterator[Metric]:
        ex = self.exchange
        index = ex.index
        now = ex.clock()
        offers_now = list(index.offers.items())
        yield GaugeMetricFamily("exchange_offers", "Offers in the index.", value=len(offers_now))
        yield GaugeMetricFamily("exchange_offers_free_now", "Offers free now (plant online, evidence fresh, idle).",
                                value=sum(free_now(index, k, o, now, ex.stale_after_s) for k, o in offers_now))
        yield GaugeMetricFamily("exchange_offers_stale", "Offers whose evidence is older than the bound.",
                                value=sum(stale(o, now, ex.stale_after_s) for _, o in offers_now))
        plants = {k[0] for k in index.offers} | set(index.plants)
        yield GaugeMetricFamily("exchange_plants", "Plants with an offer or a status.", value=len(plants))
        yield GaugeMetricFamily("exchange_plants_offline", "Plants whose status says offline (their will fired).",
                                value=sum(not s.online for s in index.plants.values()))
        rejected = CounterMetricFamily("exchange_rejected_offers", "Messages dropped, by why.", labels=["why"])
        for why in WHYS:
            rejected.add_metric([why], index.rejected.get(why, 0))
        yield rejected
        yield CounterMetricFamily("exchange_messages", "MQTT messages received.", value=index.messages)
        yield GaugeMetricFamily("exchange_subscribed", "1 while subscribed to the broker.", value=int(ex.subscribed))


def _bad(exc: QueryError) -> Response:
    return PlainTextResponse(str(exc), status_code=400)


def build_app(exchange: Exchange) -> Starlette:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ExchangeCollector(exchange))
    page = resources.files("collector.exchange").joinpath("page.html").read_text(encoding="utf-8")
    doc = openapi()
    paths, schemas = aas_api.openapi_parts()
    doc["paths"].update(paths)
    doc["components"]["schemas"].update(schemas)

    async def list_offers(request: Request) -> Response:
        try:
            query = parse_query(request.url.query, OFFERS_PARAMS)
            page = offers(exchange.index, query, exchange.clock(), exchange.stale_after_s)
        except QueryError as exc:
            return _bad(exc)
        headers = {"X-Total-Count": str(page.total)}
        if page.next_offset is not None:  # RFC 8288: the next page, with the same filters (raw, as parsed)
            kept = [p for p in request.url.query.split("&") if p and not p.startswith(("offset=", "limit="))]
            following = "&".join([*kept, f"offset={page.next_offset}", f"limit={page.limit}"])
            headers["Link"] = f'<{request.url.path}?{following}>; rel="next"'
        return JSONResponse(page.records, headers=headers)

    async def one_offer(request: Request) -> Response:
        key = (request.path_params["plant"], request.path_params["machine"])
        offer = exchange.index.offers.get(key)
        if offer is None:
            return PlainTextResponse("no such offer", status_code=404)
        return JSONResponse(show(exchange.index, key, offer, exchange.clock(), exchange.stale_after_s).record)

    async def do_search(request: Request) -> Response:
        try:
            query = parse_query(request.url.query, SEARCH_PARAMS)
            return JSONResponse(search(exchange.index, query, exchange.clock(), exchange.stale_after_s))
        except QueryError as exc:
            return _bad(exc)

    async def plants(request: Request) -> Response:
        index, now = exchange.index, exchange.clock()
        names = sorted({k[0] for k in index.offers} | set(index.plants))
        counts = {n: [0, 0] for n in names}
        for key, offer in index.offers.items():
            counts[key[0]][0] += 1
            counts[key[0]][1] += free_now(index, key, offer, now, exchange.stale_after_s)
        out = []
        for name in names:
            status = index.plants.get(name)
            out.append(Plant(plant=name, online=None if status is None else status.online,
                             updated=None if status is None else iso(status.updated_ns),
                             offers=counts[name][0], free_now=counts[name][1]).model_dump())
        return JSONResponse(out)

    async def health(request: Request) -> Response:
        body = Health(ok=exchange.subscribed, offers=len(exchange.index.offers),
                      plants=len({k[0] for k in exchange.index.offers} | set(exchange.index.plants)))
        return JSONResponse(body.model_dump(), status_code=200 if exchange.subscribed else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=METRICS_TYPE)

    async def openapi_doc(request: Request) -> Response:
        return JSONResponse(doc)

    async def index_page(request: Request) -> Response:
        return HTMLResponse(page)

    return Starlette(routes=[
        Route("/", index_page),
        Route("/api/v1/offers", list_offers),
        Route("/api/v1/offers/{plant}/{machine}", one_offer),
        Route("/api/v1/search", do_search),
        Route("/api/v1/plants", plants),
        Route("/api/v1/openapi.json", openapi_doc),
        Route("/metrics", metrics),
        Route("/healthz", health),
        *aas_api.routes(catalog(exchange)),
    ])

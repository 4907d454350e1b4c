"""On-demand gateways (`meridian bootstrap --clusters on-demand`): which clusters they hold up front.

Such a gateway keeps its wildcard CDS subscription, and Meridian answers it with only the clusters
that must exist before any request: the ones Envoy reaches other than through a route's own
cluster (which the listeners' on_demand filter fetches by name on a Service's first request):

- every cluster that is not a plain EDS cluster: external auth services, mirror targets (their own
  STATIC/STRICT_DNS clusters), the default-backend fallback's aggregate clusters, static and
  ExternalName Services (they have no endpoints to fetch, and cost no EDS round trip);
- the clusters an aggregate cluster fails over between (Envoy resolves them inside the cluster, no
  filter would fetch them);
- clusters a listener names (ssl-passthrough's tcp_proxy);
- clusters a route mirrors to (Gateway API RequestMirror: a missing shadow cluster is skipped silently).

Their listeners are a variant of the group's, with Envoy's on_demand filter in every connection
manager (`OnDemandListeners`; why eager gateways do not get it: `translate.listeners.with_on_demand`).

Make-before-break (`warming.py`) needs nothing of its own here: it waits only for clusters sent to
the stream, and an on-demand gateway is sent a new Service's cluster only when a request asks for it
(the route does not wait; the request's fetch brings the cluster, then its endpoints). A name asked
for that has no cluster is answered at once as removed, so the request fails (503) instead of waiting
for the filter's timeout; a Service deleted is removed from the gateways that fetched its cluster.

Read from the served snapshot itself, not from the engine's IR: the served snapshot is what a
rollback pin holds and what every replica serves, the same after a restart, so the answer is one
truth. Kept incrementally: each resource's references are parsed once per version, and a change
updates reference counts only for the names the cache says changed. `tests/unit/
test_on_demand_clusters.py` checks it against every golden case with an independent walk of all
resources (any cluster named other than as a route's own cluster must be pinned).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2

from controlplane.translate.listeners import with_on_demand
from controlplane.xds.cache import Resource, SnapshotCache, TypeSnapshot, make_resource
from controlplane.xds.resources import CLUSTER, LISTENER, ROUTE
from controlplane.xds.views import EMPTY_NAMES, Names, shared_names

ON_DEMAND_KEY = "meridian.clusters"  # node metadata (controlplane/bootstrap.py CLUSTERS_METADATA_KEY)
ON_DEMAND = "on-demand"
_AGGREGATE = "envoy.clusters.aggregate"
_TCP_PROXY = "type.googleapis.com/" + tcp_proxy_pb2.TcpProxy.DESCRIPTOR.full_name
_NONE: frozenset[str] = frozenset()


def wants_on_demand(node: object) -> bool:
    """Whether a node's bootstrap asked for on-demand clusters (its metadata `meridian.clusters`)."""
    fields = getattr(getattr(node, "metadata", None), "fields", None)
    if not fields or ON_DEMAND_KEY not in fields:
        return False
    return bool(fields[ON_DEMAND_KEY].string_value == ON_DEMAND)


def _payload(res: Resource) -> bytes:
    return any_pb2.Any.FromString(res.any_bytes).value


def cluster_refs(res: Resource) -> frozenset[str]:
    """A cluster's pinned names: none for a plain EDS cluster, else itself (and an aggregate's members)."""
    msg = cluster_pb2.Cluster.FromString(_payload(res))
    if msg.type == cluster_pb2.Cluster.EDS and not msg.HasField("cluster_type"):
        return _NONE
    refs = {msg.name}
    if msg.HasField("cluster_type") and msg.cluster_type.name == _AGGREGATE:
        refs.update(aggregate_pb2.ClusterConfig.FromString(msg.cluster_type.typed_config.value).clusters)
    return frozenset(refs)


def listener_refs(res: Resource) -> frozenset[str]:
    """Clusters a listener's TCP proxies (ssl-passthrough) name."""
    msg = listener_pb2.Listener.FromString(_payload(res))
    refs: set[str] = set()
    for chain in msg.filter_chains:
        for flt in chain.filters:
            if flt.typed_config.type_url == _TCP_PROXY:
                proxy = tcp_proxy_pb2.TcpProxy.FromString(flt.typed_config.value)
                if proxy.cluster:
                    refs.add(proxy.cluster)
                refs.update(c.name for c in proxy.weighted_clusters.clusters)
    return frozenset(refs)


def route_refs(res: Resource) -> frozenset[str]:
    """Clusters a route table's routes (or virtual hosts) mirror requests to."""
    msg = route_pb2.RouteConfiguration.FromString(_payload(res))
    refs: set[str] = set()
    for vh in msg.virtual_hosts:
        refs.update(m.cluster for m in vh.request_mirror_policies)
        for r in vh.routes:
            if r.HasField("route"):
                refs.update(m.cluster for m in r.route.request_mirror_policies)
    refs.discard("")
    return frozenset(refs)


REFERENCES: dict[str, Callable[[Resource], frozenset[str]]] = {
    CLUSTER: cluster_refs,
    LISTENER: listener_refs,
    ROUTE: route_refs,
}


@dataclass
class _TypeRefs:
    """One type of one group's snapshot lineage: each resource's pinned names, and their counts."""

    version: int = -1
    resources: object = None  # the snapshot mapping last read (by identity)
    refs: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)  # name -> (version, names)
    counts: Counter[str] = field(default_factory=Counter)
    generation: int = 0  # bumped whenever `counts` gains or loses a name

    def set(self, name: str, res: Resource | None, parse: Callable[[Resource], frozenset[str]]) -> None:
        old = self.refs.get(name)
        if res is not None and old is not None and old[0] == res.version:
            return
        new = parse(res) if res is not None else _NONE
        gone = old[1] if old is not None else _NONE
        if res is None:
            self.refs.pop(name, None)
        else:
            self.refs[name] = (res.version, new)
        if new == gone:
            return
        self.counts.update(new)
        self.counts.subtract(gone)
        for n in gone - new:
            if self.counts[n] <= 0:
                del self.counts[n]
        self.generation += 1


class PinnedClusters:
    """Per snapshot lineage: the names an on-demand gateway's wildcard CDS subscription gets.

    `of(group)` returns the same `Names` object while the answer is unchanged, so a stream can
    tell by identity whether its pinned set moved."""

    def __init__(self, cache: SnapshotCache, lineage: Callable[[str, str], str]) -> None:
        self._cache = cache
        self._lineage = lineage
        self._types: dict[tuple[str, str], _TypeRefs] = {}
        self._answers: dict[tuple[str, ...], tuple[tuple[int, ...], Names]] = {}

    def of(self, group: str) -> Names:
        lineages = tuple(self._lineage(t, group) for t in REFERENCES)
        states = []
        for type_url, lineage in zip(REFERENCES, lineages, strict=True):
            state = self._types.setdefault((type_url, lineage), _TypeRefs())
            self._update(type_url, lineage, state)
            states.append(state)
        key = lineages
        marks = tuple(s.generation for s in states)
        kept = self._answers.get(key)
        if kept is not None and kept[0] == marks:
            return kept[1]
        names: set[str] = set()
        for s in states:
            names.update(s.counts)
        answer = shared_names(names) if names else EMPTY_NAMES
        self._answers[key] = (marks, answer)
        return answer

    def _update(self, type_url: str, lineage: str, state: _TypeRefs) -> None:
        snap = self._cache.get(type_url, lineage)
        if snap.resources is state.resources:
            return
        parse = REFERENCES[type_url]
        names: Iterable[str] | None = None
        if state.version >= 0:
            names = self._cache.changed_since(type_url, lineage, state.version)
        if names is None:  # first look, or the history does not reach back: compare every name
            names = set(snap.resources) | set(state.refs)
        for name in names:
            state.set(name, snap.resources.get(name), parse)
        state.version, state.resources = snap.version, snap.resources


class OnDemandListeners:
    """The group's listeners as an on-demand gateway gets them: with the on_demand filter.

    Each listener version is rewritten once for every on-demand stream, and a snapshot's mapping is
    mapped once (kept by identity, so Delta's "holds exactly this snapshot" checks still hold)."""

    def __init__(self) -> None:
        # name -> (source version, variant): the latest only (an HTTPS listener of 10,000 hosts is ~16 MB)
        self._latest: dict[str, tuple[str, Resource]] = {}
        self._mappings: OrderedDict[int, tuple[Mapping[str, Resource], dict[str, Resource]]] = OrderedDict()

    def resource(self, res: Resource) -> Resource:
        """`res` with the on_demand filter (`res` itself when it has no connection manager). At 10,000
        TLS hosts the HTTPS listener's rewrite takes 115-170 ms, once per version for every on-demand gateway."""
        hit = self._latest.get(res.name)
        if hit is not None and hit[0] == res.version:
            return hit[1]
        msg = listener_pb2.Listener.FromString(_payload(res))
        variant = make_resource(res.name, LISTENER, msg) if with_on_demand(msg) else res
        self._latest[res.name] = (res.version, variant)
        if len(self._latest) > 256:  # listener names come and go with Gateway API ports: forget the oldest
            del self._latest[next(iter(self._latest))]
        return variant

    def snapshot(self, snap: TypeSnapshot) -> TypeSnapshot:
        key = id(snap.resources)
        hit = self._mappings.get(key)
        if hit is None or hit[0] is not snap.resources:
            hit = (snap.resources, {n: self.resource(r) for n, r in snap.resources.items()})
            self._mappings[key] = hit
            if len(self._mappings) > 4:
                self._mappings.popitem(last=False)
        self._mappings.move_to_end(key)
        return replace(snap, resources=hit[1])

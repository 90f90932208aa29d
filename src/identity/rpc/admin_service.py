"""``identity.v1.AdminService``: GetStats, a thin adapter over ``identity.stats``."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from identity.app import App
from identity.rpc.status import translate_errors
from identity.stats import ServerStats, Stats
from identity.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["AdminServicer", "add_to_server", "stats_pb"]


def stats_pb(stats: Stats) -> admin_pb2.GetStatsResponse:
    started_at = timestamp_pb2.Timestamp()
    started_at.FromNanoseconds(int(stats.started_at * 1e9))
    uptime = duration_pb2.Duration()
    uptime.FromNanoseconds(int(stats.uptime_seconds * 1e9))
    return admin_pb2.GetStatsResponse(
        persons=stats.persons,
        identifiers=[admin_pb2.IdentifierCount(kind=int(kind), count=count)
                     for kind, count in stats.identifiers.items()],
        links=stats.links,
        events=stats.events,
        lmdb_used_bytes=stats.used_bytes,
        lmdb_file_bytes=stats.file_bytes,
        lmdb_map_size_bytes=stats.map_size,
        entries=stats.entries,
        started_at=started_at,
        uptime=uptime,
    )


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, app: App):
        self.stats = ServerStats(app.store, app.graph)  # uptime counts from here

    @translate_errors
    def GetStats(self, request, context):  # noqa: N802 (gRPC method name)
        return stats_pb(self.stats.read())


def add_to_server(app: App, server: grpc.Server) -> str:
    """Register the servicer; returns its full service name (for health and reflection)."""
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(app), server)
    return admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name

"""identity: cross-device identity resolution over gRPC, persisted in LMDB."""

__version__ = "0.1.0"

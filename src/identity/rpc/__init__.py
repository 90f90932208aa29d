"""The gRPC layer: thin adapters from protobuf messages to ``identity.app.App`` calls."""

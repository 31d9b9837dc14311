"""Milvus on the wire: protos, auth metadata, channels, and the grpcio internals we fence."""

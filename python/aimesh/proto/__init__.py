"""Protobuf messages generated from ``proto/aimesh.proto`` (do not edit
``aimesh_pb2.py`` by hand: run ``make proto``)."""

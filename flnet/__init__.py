"""FLNet: run reproducible, governed scientific tools under a governed control plane.

This top-level package holds only what every component shares (lifecycle rules,
server and channel plumbing) and the `flnet` CLI. It must stay importable with
grpcio and protobuf alone, because the runtime ships inside tool images.
"""

__version__ = "0.1.0"

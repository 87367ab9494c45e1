"""FLNet: run reproducible, governed scientific tools under a governed control plane.

This top-level package holds what the components share and what users run:

- the shared core (`lifecycle`, `errors`, `reasons`, `resource_names`, `channels`, `structs`,
  `toolspec`, `addresses`, ...): importable with grpcio and protobuf alone, because the
  runtime ships inside tool images;
- `flnet.server`: the servers' plumbing (serving, error mapping, authentication, audit);
- `flnet.client`: the public Python client; `flnet.cli`: the `flnet` command, built on it;
- `flnet.images`: building the engine, tool and gateway images.

The components live beside it (control/, orchestrator/, runtime/, gateway/, issuer/, installed
as flnet.control, ...); the shared core imports none of them.
"""

__version__ = "0.1.0"

"""Serving a `Simulator` to many clients: protocol.py (errors, the array codec, client identity, request limits),
sessions.py (the session pool and its batcher), http.py (`unisim serve`'s HTTP/JSON server), rpc.py (dm_env_rpc over
gRPC), client.py (`RemoteSimulator`) and playground.py with playground.html (`unisim play`)."""

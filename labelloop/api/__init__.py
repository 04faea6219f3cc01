"""The HTTP API: one FastAPI app that mounts the routers of the services a process runs."""

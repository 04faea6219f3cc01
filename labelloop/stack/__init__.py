"""The local stack: real Kafka, MinIO and Triton servers started as background processes.

``labelloop stack up|down|status`` drives :class:`labelloop.stack.manager.Stack`. Tools are
fetched or built once into the cache folder (outside the repository); logs, data and pid files
live under ``var/``.
"""

"""The typed contract: every shape that crosses a process or network boundary.

`wire` holds what workers and the control side exchange over Redis (the item message, the
reports, the manifest, grants); `api` holds the HTTP API's request and response bodies, from
which the OpenAPI document is generated. Both sides build and parse the same models.
"""

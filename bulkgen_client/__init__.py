"""A small client for the bulkgen API (/api/v1) and the `bulkgen submit` command.

Imports only requests, rich and the standard library: it installs and starts on a laptop that has
none of the server's libraries (torch, Flask, Celery, SQLAlchemy). tests/client/test_cli.py holds
it to that.

    from bulkgen_client import Client

    client = Client()  # BULKGEN_URL, BULKGEN_TOKEN
    assets = client.upload(["cat.jpg", "dog.png"])
    job = client.create("echo", [a["key"] for a in assets], prompt="a cat")
    job = client.wait(job["id"])
    client.download(job["id"], "results", names=["cat.jpg", "dog.png"])
"""

from bulkgen_client.client import ApiError, Client, UploadRejected

__all__ = ["ApiError", "Client", "UploadRejected"]

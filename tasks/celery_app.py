"""The Celery instance every worker runs."""

from celery import Celery

celery = Celery("bulkgen")
celery.config_from_object("celeryconfig")

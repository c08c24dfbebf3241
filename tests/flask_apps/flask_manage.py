"""A project's own Flask CLI script that imports the app (and so prometheus_client) first.

`python flask_manage.py run-gunicorn …`: prometheus_client is imported in single-process mode
before the command can set the directory, so the command must re-execute itself.
"""

from flask.cli import FlaskGroup
from metrics_app import create_app

cli = FlaskGroup(create_app=create_app)

if __name__ == "__main__":
    cli()

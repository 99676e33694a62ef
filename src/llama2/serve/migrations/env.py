"""Alembic environment of the server's store, run from code: `Store.migrate()` passes its open
connection in `config.attributes["connection"]` (so the caller's transaction and migration lock are
reused); without one, the `sqlalchemy.url` option is connected to.

A new revision after changing the models in `llama2.serve.store` (then review and edit it):

    from alembic import command
    from llama2.serve.store import Store
    store = Store("sqlite:////tmp/scratch.db"); store.migrate()
    command.revision(store.alembic_config(), message="what changed", autogenerate=True)
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from llama2.serve.store import Base, UTCDateTime


def render_item(type_: str, obj, autogen_context):
    """Write UTCDateTime as a plain timezone-aware DateTime, so revisions don't import the models."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_item=render_item,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    with create_engine(context.config.get_main_option("sqlalchemy.url")).connect() as connection:
        run_migrations(connection)
        connection.commit()

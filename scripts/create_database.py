"""Create the database named in DATABASE_URL if it does not exist yet."""

from __future__ import annotations

import psycopg
from sqlalchemy.engine import make_url

from shared.settings import BaseServiceSettings


def main() -> None:
    url = make_url(BaseServiceSettings().database_url)
    admin = url.set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [url.database])
        if exists.fetchone() is None:
            conn.execute(f'CREATE DATABASE "{url.database}"')
            print(f"created database {url.database}")


if __name__ == "__main__":
    main()

"""Database layer: engine/session factory, declarative base, Alembic migrations."""

"""The seed service's models (its report's sections 2.1-5.1) as the service writes them: SQLModel
classes with Python enums, created by ``SQLModel.metadata.create_all``. On PostgreSQL that makes
``providertype`` and ``validationstatus`` native enum types; on SQLite plain VARCHAR columns.

Written from the report, not from reconciler's tables, so the tests see the service's database as
a new user would bring it, and read it back afterwards as the service would (by id and by name,
decrypting API keys with the shared Fernet key)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, Session, SQLModel, create_engine, select


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ProviderType(str, Enum):
    ollama = "ollama"
    openai = "openai"


class ValidationStatus(str, Enum):
    pending = "pending"
    validating = "validating"
    connected = "connected"
    error = "error"


class LLMProvider(SQLModel, table=True):
    __tablename__ = "llm_providers"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=255, unique=True, index=True)
    type: ProviderType
    base_url: str | None = None
    api_key_encrypted: bytes | None = None
    is_active: bool = True
    validation_status: ValidationStatus = ValidationStatus.pending
    validation_error: str | None = None
    validated_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class AgentConfig(SQLModel, table=True):
    __tablename__ = "agent_configs"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=255, unique=True, index=True)
    description: str | None = None
    provider_id: uuid.UUID = Field(foreign_key="llm_providers.id")
    model_name: str
    system_prompt: str
    temperature: float | None = 0.7
    max_tokens: int | None = None
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class TaskConfig(SQLModel, table=True):
    __tablename__ = "task_configs"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=255, unique=True, index=True)
    description: str | None = None
    response_schema: dict[str, Any] = Field(sa_column=Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False))
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class AgentTaskAssignment(SQLModel, table=True):
    __tablename__ = "agent_task_assignments"
    __table_args__ = (UniqueConstraint("agent_id", "task_id", name="uq_agent_task"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    agent_id: uuid.UUID = Field(foreign_key="agent_configs.id", ondelete="CASCADE")
    task_id: uuid.UUID = Field(foreign_key="task_configs.id", ondelete="CASCADE")
    is_active: bool = True
    assigned_at: datetime = Field(default_factory=utcnow)


MODELS = (LLMProvider, AgentConfig, TaskConfig, AgentTaskAssignment)


def seed_engine(url: str) -> Any:
    """An engine as the service opens one (plain SQLAlchemy URL, psycopg 3 on PostgreSQL)."""
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url)


def create_tables(url: str) -> None:
    """The service's start-up: ``SQLModel.metadata.create_all``."""
    engine = seed_engine(url)
    SQLModel.metadata.create_all(engine, tables=[m.__table__ for m in MODELS])  # type: ignore[attr-defined]
    engine.dispose()


def get_by_name(session: Session, model: Any, name: str) -> Any:
    """The service's ``get_by_name``."""
    return session.exec(select(model).where(model.name == name)).first()


__all__ = [
    "MODELS", "AgentConfig", "AgentTaskAssignment", "LLMProvider", "ProviderType", "Session", "TaskConfig",
    "ValidationStatus", "create_tables", "get_by_name", "seed_engine", "utcnow",
]

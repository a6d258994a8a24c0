"""A database made by the seed service (its own SQLModel models, rows written through its session),
and ways to look at it from the outside: what objects it holds, and every row as the service reads it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import inspect, text

from tests.seed.models import (
    AgentConfig,
    AgentTaskAssignment,
    LLMProvider,
    ProviderType,
    Session,
    TaskConfig,
    ValidationStatus,
    create_tables,
    seed_engine,
)

SHARED_KEY = Fernet.generate_key().decode()  # the Fernet key the service and reconciler share
OPENAI_KEY = "sk-seed-openai-0123456789abcdef"
CLASSIFY_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["bug", "feature", "question", "discussion"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reasoning": {"type": "string"},
    },
    "required": ["category", "confidence"],
}


def fill_like_the_service(url: str) -> dict[str, uuid.UUID]:
    """The service's start-up (create_all) and the rows its REST API creates in the report's
    examples (§2.2, §3.1, §4.1, §5.1); returns the row ids by the names the service gave them."""
    create_tables(url)
    engine = seed_engine(url)
    try:
        with Session(engine) as s:
            ollama = LLMProvider(name="Ollama Local", type=ProviderType.ollama, base_url="http://localhost:11434",
                                 validation_status=ValidationStatus.connected)
            openai = LLMProvider(name="OpenAI GPT-4", type=ProviderType.openai,
                                 api_key_encrypted=Fernet(SHARED_KEY.encode()).encrypt(OPENAI_KEY.encode()),
                                 validation_status=ValidationStatus.connected)
            s.add_all([ollama, openai])
            s.commit()
            classifier = AgentConfig(
                name="Message Classifier", description="Classifies messages into categories", provider_id=ollama.id,
                model_name="llama3", temperature=0.7, max_tokens=500,
                system_prompt="You are a message classification assistant. Analyze the message and categorize it as bug, "
                "feature, question, or discussion.",
            )
            task = TaskConfig(name="Classify Message", description="Categorize incoming messages", response_schema=CLASSIFY_SCHEMA)
            s.add_all([classifier, task])
            s.commit()
            assignment = AgentTaskAssignment(agent_id=classifier.id, task_id=task.id)
            s.add(assignment)
            s.commit()
            return {
                "Ollama Local": ollama.id, "OpenAI GPT-4": openai.id, "Message Classifier": classifier.id,
                "Classify Message": task.id, "assignment": assignment.id,
            }
    finally:
        engine.dispose()


def database_objects(url: str) -> Any:
    """Everything a read could create: the SQLite files (their bytes) next to the database, or the
    PostgreSQL relations (tables, indexes, sequences) and types of the public schema."""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file()}
    engine = seed_engine(url)
    try:
        with engine.connect() as conn:
            relations = conn.execute(text(
                "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' ORDER BY 1"
            )).all()
            types = conn.execute(text(
                "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' ORDER BY 1"
            )).scalars().all()
            return {"relations": [tuple(r) for r in relations], "types": list(types)}
    finally:
        engine.dispose()


def enum_values(url: str, type_name: str) -> list[str]:
    engine = seed_engine(url)
    try:
        with engine.connect() as conn:
            return next(e["labels"] for e in inspect(conn).get_enums() if e["name"] == type_name)  # type: ignore[no-any-return]
    finally:
        engine.dispose()


__all__ = ["CLASSIFY_SCHEMA", "OPENAI_KEY", "SHARED_KEY", "database_objects", "enum_values", "fill_like_the_service"]

"""HLE's prompt and tools: the official answer format (explanation, answer, confidence) through an answer tool."""

from __future__ import annotations

from harness.benchmarks.tool_format import ToolCallFormat
from harness.types import ToolSpec

SYSTEM_PROMPT = """You are answering a hard, closed-ended exam question. You may use tools before answering:
search (a web search returning 10 results), browse (read a page from a result), python (run Python code
in a sandbox; print what you need). Think step by step. When you are ready, call answer with your
explanation, your final answer (for a multiple-choice question, the letter of the choice) and your
confidence in it from 0 to 100."""

USER_TEMPLATE = "Question: {task}"


def _object(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required}


TOOLS = (
    ToolSpec(
        "search", "Search the web; returns 10 results.", _object({"query": {"type": "string"}}, ["query"])
    ),
    ToolSpec(
        "browse",
        "Read the page behind a search result (its url or id).",
        _object({"url": {"type": "string"}}, ["url"]),
    ),
    ToolSpec(
        "python",
        "Run Python 3 code in a sandbox (no network, 120 s); returns what it prints.",
        _object({"code": {"type": "string"}}, ["code"]),
    ),
    ToolSpec(
        "answer",
        "Give the final answer; ends the task.",
        _object(
            {
                "explanation": {"type": "string"},
                "answer": {"type": "string"},
                "confidence": {"type": "number", "minimum": 0, "maximum": 100},
            },
            ["answer"],
        ),
    ),
)

ANSWER_TOOL = "answer"
MAX_CALLS_PER_TURN = 4


def hle_format() -> ToolCallFormat:
    return ToolCallFormat(SYSTEM_PROMPT, TOOLS, ANSWER_TOOL, MAX_CALLS_PER_TURN, USER_TEMPLATE)


def response_text(arguments: dict) -> str:
    """An answer tool call in the official response format, which the judges read."""
    explanation = str(arguments.get("explanation", "")).strip()
    confidence = arguments.get("confidence")
    lines = [f"Explanation: {explanation}", f"Answer: {arguments.get('answer', '')}"]
    if confidence is not None:
        lines.append(f"Confidence: {confidence}%")
    return "\n".join(lines)

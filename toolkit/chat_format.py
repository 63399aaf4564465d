"""A dialogue model's turn format, as data: how chat messages become the text the model was
trained on, and where its reply ends.

The default suits a play: a message is its speaker's heading `NAME:` on a line, the text, and
a blank line; the reply is generated after the assistant's heading and ends at the blank line.
A message's `name` is its speaker, else its role's default name. A JSON file with the same keys
overrides it (`toolkit serve --chat-format FILE`), or is stored in the manifest at export
(`toolkit export --chat-format FILE`):

    {"names": {"system": "CHORUS", "user": "ROMEO", "assistant": "JULIET"},
     "message": "{name}:\\n{content}\\n\\n", "reply": "{name}:\\n", "stop": "\\n\\n"}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import UsageError
from toolkit.vocabulary import Vocabulary

ROLES = ("system", "user", "assistant")
DEFAULT_CHAT_FORMAT: dict[str, Any] = {
    "names": {"system": "CHORUS", "user": "ROMEO", "assistant": "JULIET"},
    "message": "{name}:\n{content}\n\n",
    "reply": "{name}:\n",
    "stop": "\n\n",
}
KEYS = tuple(DEFAULT_CHAT_FORMAT)


@dataclass(frozen=True)
class ChatFormat:
    names: Mapping[str, str]  # role -> default speaker
    message: str  # one message: {name} and {content}
    reply: str  # what precedes the reply: {name}, the assistant's
    stop: str  # the reply ends here (not included)

    @classmethod
    def from_dict(cls, data: Any, where: str = "chat format") -> ChatFormat:
        """A checked format; a one-line UsageError naming what is wrong."""
        if not isinstance(data, dict):
            raise UsageError(f"{where}: must be a JSON object with keys {', '.join(KEYS)}")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise UsageError(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}"
            )
        merged = {**DEFAULT_CHAT_FORMAT, **data}
        names = merged["names"]
        if not isinstance(names, dict) or not all(
            isinstance(names.get(role), str) and names[role] for role in ROLES
        ):
            raise UsageError(f"{where}: 'names' must give a non-empty name for {', '.join(ROLES)}")
        for key in ("message", "reply", "stop"):
            if not isinstance(merged[key], str):
                raise UsageError(f"{where}: {key!r} must be a string")
        message, reply, stop = merged["message"], merged["reply"], merged["stop"]
        if message.count("{content}") != 1 or message.count("{name}") > 1:
            raise UsageError(
                f"{where}: 'message' must hold {{content}} once (and {{name}} at most once)"
            )
        if reply.count("{name}") > 1 or "{content}" in reply:
            raise UsageError(f"{where}: 'reply' may hold {{name}} once and no {{content}}")
        if not stop:
            raise UsageError(f"{where}: 'stop' must not be empty")
        return cls({role: names[role] for role in ROLES}, message, reply, stop)

    @classmethod
    def load(cls, path: Path) -> ChatFormat:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"chat format file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read chat format file {path}: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"chat format file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"names": dict(self.names), "message": self.message, "reply": self.reply,
                "stop": self.stop}  # fmt: skip

    def check_vocabulary(self, vocab: Vocabulary, where: str = "chat format") -> None:
        """Every character the format itself writes must be one the model knows."""
        fixed = self.message + self.reply + self.stop + "".join(self.names.values())
        missing = vocab.unknown(fixed.replace("{name}", "").replace("{content}", ""))
        if missing:
            shown = ", ".join(repr(ch) for ch in missing[:20])
            raise UsageError(f"{where} uses characters not in the model's vocabulary: {shown}")

    def reply_text(self) -> str:
        return self.reply.replace("{name}", self.names["assistant"])

    def jinja_template(self) -> str:
        """The format as a Hugging Face chat template (Jinja), for clients that render chats
        themselves (lm-evaluation-harness's remote tokenizer reads it from /tokenizer_info)."""

        def literal(text: str) -> str:
            return "{{ " + json.dumps(text) + " }}"

        def fill(template: str, values: dict[str, str]) -> str:
            out = literal(template)
            for key, expression in values.items():
                out = out.replace("{" + key + "}", '" ~ ' + expression + ' ~ "')
            return out

        names = json.dumps(dict(self.names))
        message = fill(
            self.message,
            {"name": f"(message.name or {names}[message.role])", "content": "message.content"},
        )
        reply = literal(self.reply_text())
        return (
            "{% for message in messages %}" + message + "{% endfor %}"
            "{% if add_generation_prompt %}" + reply + "{% endif %}"
        )

    def render(self, messages: list[tuple[str, str | None, str]]) -> str:
        """The prompt for (role, name or None, content) messages: each message, then the
        assistant's heading."""
        parts = [
            self.message.replace("{name}", name or self.names[role]).replace("{content}", content)
            for role, name, content in messages
        ]
        parts.append(self.reply_text())
        return "".join(parts)


def chat_format_of(manifest_format: Mapping[str, Any] | None, file: Path | None) -> ChatFormat:
    """The format a server uses: the file given, else the manifest's, else the default."""
    if file is not None:
        return ChatFormat.load(file)
    if manifest_format is not None:
        return ChatFormat.from_dict(dict(manifest_format), "the manifest's chat_format")
    return ChatFormat.from_dict({})

"""Prompt-injection and jailbreak heuristics: weighted patterns and a score.

Each rule is a regex over the normalized text (hidden characters removed, look-alikes in
Latin) with a weight; a prompt blocks when the weights of the distinct rules it matches
add up to the threshold. Strong signals (an explicit "ignore all previous instructions",
a chat-template token in user text) weigh a full point; weak ones ("from now on", "no
restrictions") only count together, which keeps benign look-alikes such as "ignore the
typos in my previous message" or "act as a travel agent" out. Every rule names the words
it needs, so text without them costs one substring test per rule.
The curated corpus in tests/guardrails/injection_corpus.json measures both sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from guardrails.base import Action, Check, CheckOptions, Finding, Severity, Stage
from guardrails.checks.unicode import normalize_for_matching

_I = re.IGNORECASE


@dataclass(frozen=True, slots=True)
class InjectionRule:
    """A named pattern, its weight, and the lower-case words it cannot match without."""

    name: str
    weight: float
    needs: tuple[str, ...]
    pattern: re.Pattern[str]


_QUALIFIER = r"(?:all|any|every|your|previous|prior|above|earlier|preceding|former|original|initial|system|safety|existing|current|these|those)"
_RULE_NOUN = r"(?:instructions?|prompts?|rules?|directives?|guidelines|guardrails|constraints|restrictions|programming|policies|polic(?:y)|safeguards)"

RULES: tuple[InjectionRule, ...] = (
    InjectionRule(
        "override_instructions",
        1.0,
        (
            "ignore",
            "disregard",
            "forget",
            "override",
            "bypass",
            "skip",
            "discard",
            "abandon",
            "neglect",
        ),
        re.compile(
            r"\b(?:ignore|disregard|forget|override|bypass|skip|discard|abandon|neglect)\b"
            rf"(?:\s+\S+){{0,3}}?\s+{_QUALIFIER}\b(?:\s+\S+){{0,2}}?\s+{_RULE_NOUN}\b",
            _I,
        ),
    ),
    InjectionRule(
        "forget_what_you_were_told",
        1.0,
        ("ignore", "forget", "disregard"),
        re.compile(
            r"\b(?:ignore|forget|disregard)\s+(?:everything|all|anything|what(?:ever)?)\s+"
            r"(?:you\s+(?:were|have\s+been|'ve\s+been)\s+(?:told|taught|instructed|programmed|trained)"
            r"|(?:that\s+)?(?:was|has\s+been)\s+(?:said|written|stated)\s+(?:before|above|earlier|previously))",
            _I,
        ),
    ),
    InjectionRule(
        "forget_what_i_said",
        0.6,
        ("forget", "ignore", "disregard"),
        re.compile(
            r"\b(?:ignore|forget|disregard)\s+(?:everything|all|what)\s+(?:i|we)\s+(?:said|told\s+you)",
            _I,
        ),
    ),
    InjectionRule(
        "new_instructions",
        0.6,
        ("instruction", "rule", "directive", "prompt"),
        re.compile(
            r"\b(?:new|updated|real|actual|true|override|revised)\s+(?:system\s+)?(?:instructions?|rules|directives?|prompt)\s*[:\-]",
            _I,
        ),
    ),
    InjectionRule(
        "from_now_on",
        0.4,
        ("from now on", "henceforth", "you are now", "you're now", "you will now"),
        re.compile(r"\bfrom\s+now\s+on\b|\bhenceforth\b|\byou(?:\s+are|'re|\s+will)\s+now\b", _I),
    ),
    InjectionRule(
        "reveal_system_prompt",
        1.0,
        ("prompt", "instruction", "message"),
        re.compile(
            r"\b(?:reveal|show|print|display|output|repeat|recite|leak|dump|expose|disclose|tell\s+me|give\s+me|share|write\s+out|copy|paste)\b"
            r"[^.\n?]{0,30}?\b(?:your|its)\s+(?:(?:full|entire|complete|exact|original|initial|hidden|secret|confidential|real)\s+)*"
            r"(?:system\s+(?:prompt|message|instructions?)|initial\s+(?:prompt|instructions?)|hidden\s+(?:prompt|instructions?)"
            r"|(?:original|initial|hidden|secret|confidential)\s+instructions?|pre-?prompt|developer\s+(?:message|instructions?)|instructions)",
            _I,
        ),
    ),
    InjectionRule(
        "ask_system_prompt",
        1.0,
        ("prompt", "instruction"),
        re.compile(
            r"\bwhat\s+(?:is|are|was|were)\s+your\s+(?:(?:full|exact|original|initial|hidden|secret)\s+)*"
            r"(?:system\s+prompt|(?:system|initial|original|hidden|secret)\s+instructions?|instructions\s+from\s+your\s+developers?)",
            _I,
        ),
    ),
    InjectionRule(
        "repeat_text_above",
        0.5,
        ("above", "before this", "prior to this"),
        re.compile(
            r"\b(?:repeat|print|output|copy|recite)\b[^.\n]{0,20}?\b(?:words|text|everything|all|instructions|content|lines)\s+"
            r"(?:above|before\s+this|prior\s+to\s+this)",
            _I,
        ),
    ),
    InjectionRule(
        "starting_with_you_are",
        0.6,
        ("you are",),
        re.compile(
            r"\b(?:starting|beginning)\s+with\s+(?:the\s+(?:phrase|words?)\s+)?[\"'“]?you\s+are\b",
            _I,
        ),
    ),
    InjectionRule(
        "do_anything_now",
        1.0,
        ("do anything now",),
        re.compile(r"\bdo\s+anything\s+now\b", _I),
    ),
    InjectionRule("dan_name", 0.5, ("dan",), re.compile(r"\bDAN\b")),
    InjectionRule(
        "jailbreak_mode",
        1.0,
        ("mode",),
        re.compile(
            r"\b(?:jailbreak|jailbroken|unrestricted|unfiltered|uncensored|evil|dan|sudo|opposite|amoral)\s+mode\b",
            _I,
        ),
    ),
    InjectionRule(
        "developer_mode_persona",
        0.7,
        ("developer mode",),
        re.compile(
            r"\b(?:you|chatgpt|gpt|assistant|ai|model|llm)\b[^.\n]{0,30}?\bdeveloper\s+mode\b|\bdeveloper\s+mode\s+(?:enabled|activated|output)\b",
            _I,
        ),
    ),
    InjectionRule("god_mode", 0.5, ("god mode",), re.compile(r"\bgod\s+mode\b", _I)),
    InjectionRule(
        "jailbreak_word", 0.4, ("jailbr",), re.compile(r"\bjailbr(?:eak|eaking|oken)\b", _I)
    ),
    InjectionRule(
        "not_bound_by",
        1.0,
        ("bound", "restricted", "limited", "constrained"),
        re.compile(
            r"\byou\s+(?:are|'re)\s+(?:now\s+)?(?:no\s+longer|not|free\s+from\s+being)\s+(?:bound|restricted|limited|constrained|governed)\s+by",
            _I,
        ),
    ),
    InjectionRule(
        "no_restrictions",
        0.5,
        (
            "restriction",
            "filter",
            "censor",
            "guideline",
            "limitation",
            "safeguard",
            "guardrail",
            "rules",
            "polic",
            "ethic",
            "moral",
        ),
        re.compile(
            r"\b(?:without|no|free\s+(?:of|from)|ignore|remove|disable|bypass|lift|any)\s+(?:any\s+|all\s+|your\s+|the\s+|of\s+)?"
            r"(?:ethical\s+|moral\s+|safety\s+|content\s+|openai\s+)?"
            r"(?:restrictions|filters|filtering|censorship|guidelines|limitations|safeguards|guardrails|rules|policies|ethics|morals)\b",
            _I,
        ),
    ),
    InjectionRule(
        "disable_your_safety",
        1.0,
        ("safety", "content", "security", "moderation", "ethical"),
        re.compile(
            r"\b(?:bypass|disable|turn\s+off|circumvent|evade|get\s+around|remove|override|deactivate|ignore)\s+(?:all\s+)?(?:of\s+)?your\s+"
            r"(?:safety|content|security|moderation|ethical)\s+(?:filters?|guidelines|restrictions|protocols|measures|checks|policies|guardrails|systems?|training)",
            _I,
        ),
    ),
    InjectionRule(
        "pretend_unrestricted",
        0.7,
        ("pretend", "imagine", "roleplay", "role-play", "act as", "hypothetical"),
        re.compile(
            r"\b(?:pretend|imagine|roleplay|role-play|act\s+as\s+if|hypothetically)\b[^.\n]{0,30}?\byou\s+(?:have|had|are|were)\s+"
            r"(?:no|not|an?\s+(?:unrestricted|unfiltered|uncensored|evil|amoral|unethical))",
            _I,
        ),
    ),
    InjectionRule(
        "act_as_unrestricted",
        1.0,
        (
            "unrestricted",
            "unfiltered",
            "uncensored",
            "amoral",
            "evil",
            "unethical",
            "rogue",
            "jailbroken",
            "unaligned",
        ),
        re.compile(
            r"\b(?:act|behave|respond|answer|reply|role-?play)\s+(?:as|like)\s+(?:if\s+you\s+(?:were|are)\s+)?(?:an?\s+)?"
            r"(?:unrestricted|unfiltered|uncensored|amoral|evil|unethical|rogue|jailbroken|unaligned)\b",
            _I,
        ),
    ),
    InjectionRule(
        "never_refuse",
        0.5,
        ("refuse", "decline", "say no", "can't", "cannot"),
        re.compile(
            r"\b(?:never|don't|do\s+not|must\s+not|will\s+not|won't)\s+(?:ever\s+)?(?:refuse|decline|say\s+(?:no|that\s+you\s+can(?:'|no)t|you\s+can(?:'|no)t))",
            _I,
        ),
    ),
    InjectionRule(
        "chat_template_token",
        1.0,
        ("<|",),
        re.compile(
            r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|begin_of_text)\|>",
            _I,
        ),
    ),
    InjectionRule(
        # Bracket tags are also what people ask about ("what does [INST] mean?"), so they
        # only count together with another signal.
        "template_tag",
        0.6,
        ("[inst]", "[/inst]", "<<sys>>", "<</sys>>", "<start_of_turn>", "<end_of_turn>"),
        re.compile(r"\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>", _I),
    ),
    InjectionRule(
        "fake_system_header",
        0.6,
        ("system", "admin", "developer"),
        re.compile(
            r"(?:^|\n)\s*(?:#{1,4}\s*|\[|\*\*)?(?:system|admin|administrator|developer)\s*(?:prompt|message|override|instructions?|note)?\s*(?:\]|\*\*)?\s*:"
            r"|\[(?:system|admin|developer)\s*(?:message|note|override|instructions?)?\]",
            _I,
        ),
    ),
    InjectionRule(
        "encoded_payload",
        1.0,
        ("base64", "rot13", "decode", "hex"),
        re.compile(
            r"\b(?:decode|base64|rot13|hex)\b[^.\n]{0,40}?\b(?:and|then)\s+(?:execute|follow|obey|perform|carry\s+out)\b",
            _I,
        ),
    ),
    InjectionRule(
        "hide_from_user",
        0.6,
        ("user",),
        re.compile(
            r"\b(?:do\s+not|don't|never)\s+(?:tell|inform|alert|mention\s+(?:this\s+)?to|reveal\s+(?:this\s+)?to)\s+the\s+user\b",
            _I,
        ),
    ),
    InjectionRule(
        "exfiltrate",
        1.0,
        ("send", "forward", "exfiltrate", "upload", "post", "email"),
        re.compile(
            r"\b(?:send|forward|exfiltrate|upload|post|email|transmit)\b[^.\n]{0,40}?\b(?:conversation|chat\s+history|api\s+keys?|credentials|passwords?|system\s+prompt|secrets)\b"
            r"[^.\n]{0,40}?\b(?:to|at)\s+(?:https?://|\S+@)",
            _I,
        ),
    ),
)


class PromptInjectionOptions(CheckOptions):
    threshold: float = Field(default=1.0, gt=0)
    # System and developer messages come from the API client itself and often quote such
    # phrases legitimately ("never reveal your system prompt"), so they are not scored.
    roles: tuple[str, ...] = ("user", "tool", "function")


class PromptInjection(Check):
    """Blocks prompts whose injection score reaches the threshold."""

    name = "injection"
    Options: ClassVar[type[CheckOptions]] = PromptInjectionOptions
    stages = frozenset({Stage.INPUT})

    def __init__(self, options: CheckOptions) -> None:
        super().__init__(options)
        opts: PromptInjectionOptions = options  # type: ignore[assignment]
        self.threshold = opts.threshold
        self.roles = frozenset(opts.roles)

    def score(self, text: str) -> tuple[float, list[str], tuple[int, int] | None]:
        """The score of `text`, the rules that matched, and the strongest match's span."""
        normalized = normalize_for_matching(text)
        lowered = normalized.lower()
        total = 0.0
        matched: list[str] = []
        best: tuple[float, int, int] | None = None
        for rule in RULES:
            if not any(word in lowered for word in rule.needs):
                continue
            match = rule.pattern.search(normalized)
            if match is None:
                continue
            total += rule.weight
            matched.append(rule.name)
            if best is None or rule.weight > best[0]:
                best = (rule.weight, match.start(), match.end())
        # Offsets are meaningful only when normalization left the text as it was.
        span = (best[1], best[2]) if best is not None and normalized is text else None
        return total, matched, span

    def scan(self, text: str) -> list[Finding]:
        total, _, span = self.score(text)
        if total < self.threshold:
            return []
        # Without a faithful span, the finding covers the whole text that was scored.
        start, end = span if span is not None else (0, len(text))
        return [Finding(start, end, "injection", "injection", Severity.HIGH, Action.BLOCK)]

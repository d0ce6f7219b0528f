"""Load a policy file: located YAML → env interpolation → strict schema → cross-checks.

Every problem becomes one line ``file:line path: message``; all of them are collected
and raised together as ``PolicyError`` so one run of ``router check`` shows them all.

Secrets: a message never shows the value of an interpolated variable, only ``${VAR}``
(``redact``), so neither ``router check`` nor the reload log can print a key. Keys belong
in the environment: a literal ``api_key`` still loads (tests and throw-away set-ups use
one) but carries a located warning in ``Policy.warnings``, which ``router check`` prints
and the server logs. Header, key and URL values may not hold control characters (CR, LF,
NUL...), checked after interpolation, so a bad variable fails the load instead of every
request.

An unset variable inside a provider disables that provider (how ``make run`` serves without
keys). A reload passes the providers serving now as ``serving``: disabling one of them is
an error, so the last good policy keeps serving instead of every request getting 503.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path as FilePath
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from router.policy import catalog
from router.policy.located_yaml import (
    Path,
    YamlError,
    format_path,
    interpolate,
    line_of,
    load_located,
    redact,
)
from router.policy.model import (
    Budget,
    ClientKey,
    Comparison,
    Defaults,
    EscalationStep,
    Model,
    Policy,
    Price,
    Provider,
    Route,
    Rule,
    ShadowRule,
    gpu_price,
)
from router.policy.schema import (
    RawEscalationStep,
    RawModel,
    RawPolicy,
    RawProvider,
    RawRoute,
    RawRule,
    RawShadow,
    RawTimeouts,
)


class PolicyError(Exception):
    """A policy file that cannot be used; ``errors`` holds one located line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# The shipped policies are under 10 KiB; 1 MiB holds some 7,000 client keys. The parser is
# pure Python (about a second per 100 KiB on a busy core), so this also bounds the CPU a
# reload can take; it runs in a worker thread either way.
MAX_POLICY_BYTES = 1024 * 1024
# Control characters (CR, LF, NUL...) would split or corrupt the header or request line
# they end up in; aiohttp refuses them per request, so they are refused once, at load.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
HEADER_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is allowed in a header value
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token
PROXY_HEADERS = frozenset({"authorization", "host", "content-length", "transfer-encoding", "connection"})


def load_policy(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, serving: Collection[str] = ()
) -> Policy:
    """Read and load ``path``; ``serving``: providers serving now (on reload), see above."""
    return parse_policy(read_policy_file(path), str(path), os.environ if env is None else env, serving)


def read_policy_file(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, at most one past the size limit (``parse_policy`` refuses those)."""
    try:
        with FilePath(path).open("rb") as file:
            return file.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError([f"{path}: cannot read policy file: {exc.strerror}"]) from None


def parse_policy(data: bytes, source: str, env: Mapping[str, str], serving: Collection[str] = ()) -> Policy:
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError([f"{source}:1: the file is larger than {MAX_POLICY_BYTES // 1024 // 1024} MiB"])
    try:
        document, lines = load_located(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError([f"{source}:1: the file is not UTF-8 text"]) from None
    except YamlError as exc:
        if exc.path is None:
            raise PolicyError([f"{source}:{exc.line}: YAML syntax error: {exc.message}"]) from None
        raise PolicyError([f"{source}:{exc.line} {format_path(exc.path)}: {exc.message}"]) from None
    if not isinstance(document, dict):
        raise PolicyError([f"{source}:1: the policy must be a mapping with version, tiers, providers, models"])
    unset: dict[Path, list[str]] = {}
    used: dict[str, str] = {}
    warnings = _literal_key_warnings(document, source, lines)
    document = interpolate(document, env, (), unset, used)
    builder = _Builder(source, lines, unset, used, frozenset(serving))
    builder.check_unset_outside_providers()
    if builder.errors:
        raise PolicyError(builder.errors)
    try:
        raw = RawPolicy.model_validate(document)
    except ValidationError as exc:
        raise PolicyError([builder.located(tuple(e["loc"]), _pydantic_message(e)) for e in exc.errors()]) from None
    policy = builder.build(raw, hashlib.sha256(data).hexdigest())
    if builder.errors:
        raise PolicyError(builder.errors)
    return replace(policy, warnings=warnings)


def _literal_key_warnings(document: dict[str, Any], source: str, lines: dict[Path, int]) -> tuple[str, ...]:
    """A located warning for each provider ``api_key`` written into the file itself."""
    providers = document.get("providers")
    if not isinstance(providers, dict):
        return ()
    warnings = []
    for name, provider in providers.items():
        key = provider.get("api_key") if isinstance(provider, dict) else None
        if isinstance(key, str) and key and "${" not in key:
            path: Path = ("providers", name, "api_key")
            warnings.append(
                f"{source}:{line_of(lines, path)} {format_path(path)}: warning: a literal key in the policy file; "
                f"reference an environment variable instead (api_key: ${{{_variable_name(name)}_API_KEY}})"
            )
    return tuple(warnings)


def _variable_name(provider: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", provider.upper())


def _pydantic_message(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    return error["msg"].removeprefix("Value error, ")


class _Builder:
    """The load step: cross-references, catalog defaults, unset variables."""

    def __init__(
        self,
        source: str,
        lines: dict[Path, int],
        unset: dict[Path, list[str]],
        used: dict[str, str],
        serving: frozenset[str],
    ) -> None:
        self.source = source
        self.lines = lines
        self.unset = unset
        self.used = used
        self.serving = serving
        self.errors: list[str] = []

    def located(self, path: Path, message: str) -> str:
        return f"{self.source}:{line_of(self.lines, path)} {format_path(path)}: {redact(message, self.used)}"

    def error(self, path: Path, message: str) -> None:
        self.errors.append(self.located(path, message))

    def build(self, raw: RawPolicy, sha256: str) -> Policy:
        tiers = self._tiers(raw.tiers)
        providers = {name: self._provider(name, p) for name, p in raw.providers.items()}
        self._apply_standby(providers)
        models = {}
        for name, raw_model in raw.models.items():
            model = self._model(name, raw_model, tiers, providers)
            if model is not None:
                models[name] = model
        routes = {name: self._route(name, r, tiers, raw.models, models) for name, r in raw.routes.items()}
        self._check_route_names(routes, tiers, raw.models)
        self._load_difficulty_predictor(routes)
        rules = tuple(self._rule(i, r, tiers, raw) for i, r in enumerate(raw.rules))
        keys = self._keys(raw, tiers)
        defaults = self._defaults(raw, routes)
        shadow = self._shadow(raw.shadow, tiers, models, routes)
        return Policy(
            source=self.source,
            sha256=sha256,
            tiers=tuple(tiers),
            providers=providers,
            models=models,
            routes={name: r for name, r in routes.items() if r is not None},
            rules=tuple(r for r in rules if r is not None),
            defaults=defaults,
            keys=keys,
            team_budgets={name: Budget(t.budget.usd, t.budget.per) for name, t in raw.teams.items() if t.budget},
            shadow=shadow,
        )

    def _shadow(
        self, raw: list[RawShadow], tiers: list[str], models: dict[str, Model], routes: dict[str, Route | None]
    ) -> dict[str, ShadowRule]:
        """Each rule checked and keyed by the routes it covers; ``*`` covers the routes no
        other rule names."""
        by_route: dict[str, ShadowRule] = {}
        wildcard: ShadowRule | None = None
        for index, entry in enumerate(raw):
            rule = self._shadow_rule(("shadow", index), entry, tiers, models, routes)
            if rule is None:
                continue
            if entry.route == "*":
                if wildcard is not None:
                    self.error(("shadow", index, "route"), "a second rule for '*'; one rule per route")
                wildcard = rule
            elif entry.route in by_route:
                self.error(("shadow", index, "route"), f"a second rule for route '{entry.route}'; one rule per route")
            else:
                by_route[entry.route] = rule
        if wildcard is not None:
            for name in routes:
                by_route.setdefault(name, wildcard)
        return by_route

    def _shadow_rule(
        self,
        path: Path,
        raw: RawShadow,
        tiers: list[str],
        models: dict[str, Model],
        routes: dict[str, Route | None],
    ) -> ShadowRule | None:
        ok = True
        if raw.route != "*" and raw.route not in routes:
            self.error((*path, "route"), f"unknown route '{raw.route}' (routes: {', '.join(sorted(routes))}, or '*')")
            ok = False
        reference_model: str | None = None
        rank = 0
        if raw.reference in tiers:
            rank = tiers.index(raw.reference)
            if not any(m.tier == raw.reference and m.kind == "chat" for m in models.values()):
                self.error((*path, "reference"), f"no chat model of tier '{raw.reference}' to answer as the reference")
                ok = False
        elif raw.reference in models:
            reference_model, rank = raw.reference, models[raw.reference].tier_rank
            if models[raw.reference].kind != "chat":
                self.error((*path, "reference"), f"'{raw.reference}' is not a chat model")
                ok = False
        else:
            self.error((*path, "reference"), f"unknown tier or model '{raw.reference}' (tiers: {', '.join(tiers)})")
            ok = False
        judge = models.get(raw.judge)
        if judge is None:
            self.error((*path, "judge"), f"unknown model '{raw.judge}'")
            ok = False
        elif judge.kind != "chat":
            self.error((*path, "judge"), f"'{raw.judge}' is not a chat model; the judge must be one")
            ok = False
        prompt = None
        if raw.judge_prompt is not None:
            prompt = self._judge_prompt((*path, "judge_prompt"), raw.judge_prompt)
            ok = ok and prompt is not None
        if not ok:
            return None
        return ShadowRule(
            route=raw.route,
            sample=raw.sample,
            reference=raw.reference,
            reference_model=reference_model,
            reference_rank=rank,
            judge=raw.judge,
            budget=Budget(raw.budget.usd, raw.budget.per),
            keep_prompts=raw.keep_prompts,
            judge_prompt=prompt,
        )

    def _judge_prompt(self, path: Path, name: str) -> str | None:
        """The override prompt's text; a relative path is relative to the policy file."""
        file = FilePath(name)
        if not file.is_absolute():
            file = FilePath(self.source).parent / file
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            self.error(path, f"cannot read the judge prompt file '{name}': {reason}")
            return None
        if not text.strip():
            self.error(path, f"the judge prompt file '{name}' is empty")
            return None
        return text

    def _keys(self, raw: RawPolicy, tiers: list[str]) -> dict[str, ClientKey]:
        keys: dict[str, ClientKey] = {}
        names: set[str] = set()
        valid_names = set(raw.routes) | set(tiers) | set(raw.models)
        for index, key in enumerate(raw.keys or ()):
            path: Path = ("keys", index)
            digest = key.hash.removeprefix("sha256:")
            if key.name in names:
                self.error((*path, "name"), f"duplicate key name '{key.name}'")
            if digest in keys:
                self.error((*path, "hash"), "the same key hash appears twice")
            for i, route in enumerate(key.routes or ()):
                if route not in valid_names:
                    self.error((*path, "routes", i), f"unknown route '{route}'")
            names.add(key.name)
            keys[digest] = ClientKey(
                name=key.name,
                team=key.team,
                digest=digest,
                routes=frozenset(key.routes) if key.routes else None,
                allow_tier_override=key.allow_tier_override,
                admin=key.admin,
                budget=Budget(key.budget.usd, key.budget.per) if key.budget else None,
                rpm=key.limits.rpm if key.limits else None,
                tpm=key.limits.tpm if key.limits else None,
            )
        return keys

    def check_unset_outside_providers(self) -> None:
        for path, names in self.unset.items():
            if path[:1] != ("providers",):
                self.error(path, f"environment variable {', '.join(names)} is not set and has no default")

    def _tiers(self, tiers: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, tier in enumerate(tiers):
            if not tier.strip():
                self.error(("tiers", index), "tier name must not be empty")
            if tier in seen:
                self.error(("tiers", index), f"duplicate tier '{tier}'")
            seen.add(tier)
        return tiers

    def _provider(self, name: str, raw: RawProvider) -> Provider:
        path: Path = ("providers", name)
        if raw.type == "simulated":
            for key in ("base_url", "api_key", "max_connections"):
                if getattr(raw, key) is not None:
                    self.error((*path, key), "not used by a simulated provider")
        else:
            for key in ("latency_ms", "tokens_per_second", "failure_rate"):
                if getattr(raw, key) is not None:
                    self.error((*path, key), f"only simulated providers take {key}")
        if raw.type == "openai" and not raw.base_url and not self._unset_under(path):
            self.error((*path, "base_url"), "an openai provider needs base_url (e.g. https://api.openai.com/v1)")
        if raw.base_url:
            self._check_base_url((*path, "base_url"), raw.base_url)
        if raw.responses_api == "native" and raw.type != "openai":
            self.error((*path, "responses_api"), "only an openai provider can take Responses requests natively")
        if raw.api_key and CONTROL_CHARACTER.search(raw.api_key):
            self.error((*path, "api_key"), "contains a control character (CR, LF, NUL...); a key is one line of text")
        self._check_headers((*path, "headers"), raw.headers)
        missing = self._unset_under(path)
        if missing and name in self.serving:
            unset_path = next(p for p in self.unset if p[: len(path)] == path)
            self.error(
                unset_path,
                f"environment variable {', '.join(missing)} is not set, which would disable provider '{name}' "
                "while it is serving; the reload is refused and the last good policy keeps serving",
            )
        return Provider(
            name=name,
            type=raw.type,
            base_url=(raw.base_url or "").rstrip("/") or None,
            api_key=raw.api_key or None,
            headers=dict(raw.headers),
            standby=raw.standby,
            enabled=not missing,
            disabled_reason=f"{', '.join(missing)} is not set" if missing else None,
            max_connections=raw.max_connections,
            latency_ms=raw.latency_ms if raw.latency_ms is not None else 250.0,
            tokens_per_second=raw.tokens_per_second or 150.0,
            failure_rate=raw.failure_rate or 0.0,
            unsupported_params=frozenset(raw.unsupported_params),
            on_unsupported=raw.on_unsupported,
            responses_api=raw.responses_api,
        )

    def _check_base_url(self, path: Path, url: str) -> None:
        if CONTROL_CHARACTER.search(url) or " " in url:
            self.error(path, "contains a space or a control character (CR, LF, NUL...)")
        elif not url.startswith(("http://", "https://")):
            self.error(path, f"must start with http:// or https://, got '{url}'")
        elif not _hostname(url):
            self.error(path, "has no host name")

    def _check_headers(self, path: Path, headers: Mapping[str, str]) -> None:
        for header, value in headers.items():
            if not HEADER_NAME.match(header):
                self.error((*path, header), "not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)")
            elif header.lower() in PROXY_HEADERS:
                self.error((*path, header), "this header is set by the proxy and cannot be configured")
            elif HEADER_VALUE_CONTROL.search(value):
                self.error((*path, header), "the value contains a control character (CR, LF, NUL...)")

    def _unset_under(self, path: Path) -> list[str]:
        return sorted({n for p, names in self.unset.items() if p[: len(path)] == path for n in names})

    @staticmethod
    def _apply_standby(providers: dict[str, Provider]) -> None:
        """A standby provider serves only while no other provider is enabled."""
        others_enabled = any(p.enabled for p in providers.values() if not p.standby)
        for name, provider in providers.items():
            if provider.standby and provider.enabled and others_enabled:
                providers[name] = replace(
                    provider, enabled=False, disabled_reason="standby: another provider is enabled"
                )

    def _model(self, name: str, raw: RawModel, tiers: list[str], providers: dict[str, Provider]) -> Model | None:
        path: Path = ("models", name)
        ok = True
        if raw.provider not in providers:
            self.error(
                (*path, "provider"), f"unknown provider '{raw.provider}' (defined: {', '.join(sorted(providers))})"
            )
            ok = False
        if raw.tier not in tiers:
            self.error((*path, "tier"), f"unknown tier '{raw.tier}' (tiers: {', '.join(tiers)})")
            ok = False
        upstream = raw.upstream or name
        entry = catalog.lookup(_catalog_keys(name, raw, upstream))
        if raw.catalog and entry is None:
            self.error((*path, "catalog"), f"'{raw.catalog}' is not in litellm's model map")
            return None
        price = self._price(path, raw, entry)
        context_window = raw.context_window or (entry.context_window if entry else None)
        if raw.max_output_tokens and raw.context_window and raw.max_output_tokens > raw.context_window:
            self.error((*path, "max_output_tokens"), "must not exceed context_window")
            ok = False
        if context_window is None:
            self.error(path, f"context window of '{upstream}' is unknown; state context_window")
            ok = False
        if not ok or price is None or context_window is None:
            return None
        capabilities = raw.capabilities if raw.capabilities is not None else (entry.capabilities if entry else ())
        return Model(
            name=name,
            provider=raw.provider,
            upstream=upstream,
            tier=raw.tier,
            tier_rank=tiers.index(raw.tier),
            kind=raw.kind or (entry.kind if entry else "chat"),
            price=price,
            price_source=_price_source(raw, entry),
            context_window=context_window,
            max_output_tokens=raw.max_output_tokens or (entry.max_output_tokens if entry else None),
            capabilities=frozenset(capabilities),
            timeouts=_timeouts(raw.timeouts),
            gpu_hour_usd=raw.gpu_hour_usd,
        )

    def _price(self, path: Path, raw: RawModel, entry: catalog.CatalogEntry | None) -> Price | None:
        if raw.price is not None and raw.gpu_hour_usd is not None:
            self.error((*path, "gpu_hour_usd"), "state either price or gpu_hour_usd, not both")
            return None
        if raw.gpu_tokens_per_second is not None and raw.gpu_hour_usd is None:
            self.error((*path, "gpu_tokens_per_second"), "only used with gpu_hour_usd")
            return None
        if raw.gpu_hour_usd is not None:
            return gpu_price(raw.gpu_hour_usd, raw.gpu_tokens_per_second or DEFAULT_GPU_TOKENS_PER_SECOND)
        if raw.price is not None:
            return Price(raw.price.input, raw.price.output, raw.price.cached_input)
        if entry is None or entry.input_per_million is None or entry.output_per_million is None:
            self.error(
                path,
                f"no price known for '{raw.upstream or path[-1]}' in litellm's model map; "
                "state price: {input: USD per 1M tokens, output: USD per 1M tokens}",
            )
            return None
        return Price(entry.input_per_million, entry.output_per_million, entry.cached_input_per_million)

    def _route(
        self, name: str, raw: RawRoute, tiers: list[str], models: dict[str, RawModel], built: dict[str, Model]
    ) -> Route | None:
        path: Path = ("routes", name)
        if raw.tier not in tiers:
            self.error((*path, "tier"), f"unknown tier '{raw.tier}' (tiers: {', '.join(tiers)})")
            return None
        rank = tiers.index(raw.tier)
        ceiling = 0
        if raw.fallback_tier is not None:
            if raw.fallback_tier not in tiers:
                self.error((*path, "fallback_tier"), f"unknown tier '{raw.fallback_tier}' (tiers: {', '.join(tiers)})")
                return None
            ceiling = tiers.index(raw.fallback_tier)
            if ceiling > rank:
                self.error((*path, "fallback_tier"), f"'{raw.fallback_tier}' is below the route's tier '{raw.tier}'")
                return None
        for index, model in enumerate(raw.models or ()):
            if model not in models:
                self.error((*path, "models", index), f"unknown model '{model}'")
        escalate = self._escalate(path, raw, rank, tiers, built)
        return Route(
            name,
            raw.tier,
            rank,
            ceiling,
            frozenset(raw.models) if raw.models else None,
            _timeouts(raw.timeouts),
            raw.retries,
            raw.cache.ttl_s if raw.cache else None,
            escalate,
        )

    def _escalate(
        self, path: Path, raw: RawRoute, floor_rank: int, tiers: list[str], models: dict[str, Model]
    ) -> tuple[EscalationStep, ...]:
        """The route's difficulty steps: ascending thresholds, each raising the tier further.

        ``fallback_tier`` keeps its meaning (the highest tier a fallback may reach); a request
        a step escalated may fall back up to the higher of that and the step's own tier."""
        if raw.escalate is None:
            return ()
        route_models = [models[m] for m in raw.models or () if m in models]
        if route_models and all(m.kind == "embedding" for m in route_models):
            self.error(
                (*path, "escalate"),
                "an embedding route cannot escalate: difficulty is predicted for chat conversations",
            )
            return ()
        steps: list[EscalationStep] = []
        previous: RawEscalationStep | None = None
        for index, step in enumerate(raw.escalate):
            step_path: Path = (*path, "escalate", index)
            if previous is not None and step.above <= previous.above:
                self.error(
                    (*step_path, "above"),
                    f"must be greater than the previous step's above ({previous.above:g}): steps ascend",
                )
            if step.tier not in tiers:
                self.error((*step_path, "tier"), f"unknown tier '{step.tier}' (tiers: {', '.join(tiers)})")
                previous = step
                continue
            rank = tiers.index(step.tier)
            if rank >= floor_rank:
                self.error(
                    (*step_path, "tier"),
                    f"'{step.tier}' is not above the route's tier '{raw.tier}'; a step raises the tier",
                )
            elif previous is not None and previous.tier in tiers and rank >= tiers.index(previous.tier):
                self.error(
                    (*step_path, "tier"),
                    f"'{step.tier}' is not above the previous step's tier '{previous.tier}'; each step raises the tier further",
                )
            elif route_models and not any(m.tier == step.tier and m.kind == "chat" for m in route_models):
                self.error((*step_path, "tier"), f"none of the route's models is a chat model of tier '{step.tier}'")
            steps.append(EscalationStep(step.above, step.tier, rank))
            previous = step
        return tuple(steps)

    def _load_difficulty_predictor(self, routes: dict[str, Route | None]) -> None:
        """Load the predictor now (in the loader's thread, never on the event loop) if a
        route escalates, so a policy that needs it fails its load when it cannot be used."""
        escalating = [name for name, route in routes.items() if route is not None and route.escalate]
        if not escalating or self.errors:
            return
        from router.difficulty import load_predictor  # only an escalating policy pays for it

        try:
            load_predictor()
        except Exception as exc:  # a missing wheel, a model file that does not match the code
            self.error(
                ("routes", escalating[0], "escalate"),
                f"the difficulty predictor cannot be loaded ({type(exc).__name__}: {exc})",
            )

    def _check_route_names(
        self, routes: dict[str, Route | None], tiers: list[str], models: dict[str, RawModel]
    ) -> None:
        for name in routes:
            if name in models:
                self.error(("routes", name), f"route '{name}' has the same name as a model")

    def _rule(self, index: int, raw: RawRule, tiers: list[str], policy: RawPolicy) -> Rule | None:
        path: Path = ("rules", index)
        ok = True
        if raw.set.tier is not None and raw.set.tier not in tiers:
            self.error((*path, "set", "tier"), f"unknown tier '{raw.set.tier}' (tiers: {', '.join(tiers)})")
            ok = False
        for i, model in enumerate(raw.set.models or ()):
            if model not in policy.models:
                self.error((*path, "set", "models", i), f"unknown model '{model}'")
                ok = False
        for i, route in enumerate(raw.when.route or ()):
            if route not in policy.routes:
                self.error((*path, "when", "route", i), f"unknown route '{route}'")
                ok = False
        if not ok:
            return None
        when = raw.when
        return Rule(
            name=raw.name or f"rules[{index}]",
            prompt_tokens=Comparison(**when.prompt_tokens.model_dump()) if when.prompt_tokens else None,
            headers={k.lower(): v for k, v in when.header.items()} if when.header else None,
            uses_tools=when.tools,
            routes=frozenset(when.route) if when.route else None,
            set_tier=raw.set.tier,
            set_tier_rank=tiers.index(raw.set.tier) if raw.set.tier else None,
            set_models=frozenset(raw.set.models) if raw.set.models else None,
        )

    def _defaults(self, raw: RawPolicy, routes: dict[str, Route | None]) -> Defaults:
        d = raw.defaults
        if d.route not in raw.routes and d.route not in raw.models:
            self.error(("defaults", "route"), f"unknown route '{d.route}' (routes: {', '.join(sorted(raw.routes))})")
        if d.baseline_model is not None and d.baseline_model not in raw.models:
            self.error(("defaults", "baseline_model"), f"unknown model '{d.baseline_model}'")
        if d.ttft_timeout_s > d.timeout_s:
            self.error(("defaults", "ttft_timeout_s"), "must not exceed timeout_s")
        return Defaults(**d.model_dump())


DEFAULT_GPU_TOKENS_PER_SECOND = 500.0


def _price_source(raw: RawModel, entry: catalog.CatalogEntry | None) -> str:
    if raw.gpu_hour_usd is not None:
        return "gpu_hour"
    return "policy" if raw.price else f"litellm:{entry.key if entry else '?'}"


TIMEOUT_FIELDS = {
    "timeout_s": "total_s",
    "connect_timeout_s": "connect_s",
    "ttft_timeout_s": "ttft_s",
    "idle_timeout_s": "idle_s",
}


def _timeouts(raw: RawTimeouts | None) -> dict[str, float]:
    if raw is None:
        return {}
    return {TIMEOUT_FIELDS[k]: v for k, v in raw.model_dump().items() if v is not None}


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # a malformed port or IPv6 literal
        return None


def _catalog_keys(name: str, raw: RawModel, upstream: str) -> list[str]:
    if raw.catalog:
        return [raw.catalog]
    keys = [upstream, f"{raw.provider}/{upstream}", name]
    if "/" in upstream:
        keys.append(upstream.split("/", 1)[1])
    return keys

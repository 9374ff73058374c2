"""Describers by name, and the `backend: auto|openai|template` choice."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

from components.describe.base import Describer
from components.describe.cache import CACHE_NAME, DescriptionCache
from components.describe.config import DescribeConfig
from components.describe.template_describer import TemplateDescriber
from components.errors import ConfigError
from components.registry import Registry


def _build_template(cfg: DescribeConfig, env: Mapping[str, str], cache: DescriptionCache) -> Describer:
    return TemplateDescriber(seed=cfg.template_seed)


def _build_openai(cfg: DescribeConfig, env: Mapping[str, str], cache: DescriptionCache) -> Describer:
    api_key, base_url = env.get("OPENAI_API_KEY") or None, cfg.base_url or env.get("OPENAI_BASE_URL") or None
    if not api_key and not base_url:
        raise ConfigError(
            "describe.backend=openai needs OPENAI_API_KEY (OpenAI) or a base URL (OPENAI_BASE_URL or "
            "describe.base_url, for a compatible server); set one, or use backend: template / auto"
        )
    from components.describe.openai_describer import OpenAIDescriber  # the openai package loads only when used

    return OpenAIDescriber(cfg, cache, TemplateDescriber(seed=cfg.template_seed), api_key=api_key,
                           base_url=base_url)


DescriberFactory = Callable[[DescribeConfig, Mapping[str, str], DescriptionCache], Describer]
DESCRIBERS: Registry[DescriberFactory] = Registry("describer", hint="set describe.backend to auto or one of them")
DESCRIBERS.register("openai", _build_openai)
DESCRIBERS.register("template", _build_template)


def resolve_backend(cfg: DescribeConfig, env: Mapping[str, str] | None = None) -> str:
    """`auto` -> openai when OPENAI_API_KEY or a base URL is set, else template; other names as given."""
    env = os.environ if env is None else env
    if cfg.backend != "auto":
        return cfg.backend
    return "openai" if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL") or cfg.base_url else "template"


def create_describer(cfg: DescribeConfig, cache: DescriptionCache | None = None,
                     env: Mapping[str, str] | None = None) -> Describer:
    """The describer chosen by `cfg.backend`; the cache defaults to <out_dir>/cache.jsonl."""
    env = os.environ if env is None else env
    factory = DESCRIBERS.create(resolve_backend(cfg, env))
    cache = cache if cache is not None else DescriptionCache(Path(cfg.out_dir) / CACHE_NAME)
    return factory(cfg, env, cache)
